"""Presence, late joiners, observers and echo on a shared comm, with a real server, a real
kernel and two users with different rights (contract v2, "Presence and echo")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from jupyter_core.utils import ensure_async
from jupyter_server.auth import Authorizer, IdentityProvider, User
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_transports.client import CommClient, Refused
from jupyter_transports.errors import CloseCode

from .conftest import TIMEOUT, closed

SHARED = """
from jupyter_transports.shared import SharedComm

board = SharedComm("board", echo=True)
state = {"text": "hello"}
seen, received = [], []

@board.on_join
def _welcome(member):
    seen.append(["join", member["user"], member["role"]])
    board.send(state, to=[member["client"]])

board.on_leave(lambda member: seen.append(["leave", member["user"], member["role"]]))
board.on_msg(lambda data, buffers, sender: received.append([data, sender]))
"""


class NamedUsers(IdentityProvider):
    """The token's holder, named by ``?as=`` (for tests: two users on one server)."""

    async def get_user(self, handler: Any) -> User | None:
        user = await ensure_async(super().get_user(handler))
        name = handler.get_argument("as", None)
        if user is None or name is None:
            return user
        return User(name, name=name.title(), display_name=name.title(), initials=name[:2].upper())


class EditorsOnly(Authorizer):
    """Bob may only read."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        return action == "read" or user.username != "bob"


TWO_USERS = {"ServerApp": {"identity_provider_class": NamedUsers, "authorizer_class": EditorsOnly}}


async def until(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("server_config", [TWO_USERS])
async def test_a_shared_comm_sees_who_comes_and_goes_and_edits_reach_everyone_once(
    server_url, token, kernel
):
    await kernel.execute(SHARED)
    comm_id = await kernel.evaluate("board.comm_id")

    async def attach(user: str) -> CommClient:
        return await CommClient.attach(
            server_url, kernel.id, comm_id, token=token, presence="1", **{"as": user}
        )

    alice, alice2, bob = [await attach(user) for user in ("alice", "alice", "bob")]
    await until(lambda: _count(kernel, "seen", 3), "the kernel heard of three joins")
    assert await kernel.evaluate("seen") == [
        ["join", "alice", "editor"],
        ["join", "alice", "editor"],
        ["join", "bob", "observer"],
    ]
    for client in (alice, alice2, bob):  # each got the state alone, as it joined
        assert (await asyncio.wait_for(client.recv(), TIMEOUT)).data == {"text": "hello"}
    await until(lambda: _ready(len(alice.roster) == 3), "alice's roster lists everyone")
    assert {m["user"]: m["role"] for m in alice.roster.values()} == {
        "alice": "editor",
        "bob": "observer",
    }
    assert alice.roster[bob.client_id]["name"] == "Bob"

    await alice.send({"text": "hi"})  # echo: the others see it once, with its sender
    for other in (alice2, bob):
        message = await asyncio.wait_for(other.recv(), TIMEOUT)
        assert (message.data, message.sender) == ({"text": "hi"}, alice.client_id)
    await until(lambda: _count(kernel, "received", 1), "the kernel got the edit")
    assert await kernel.evaluate("received") == [[{"text": "hi"}, alice.client_id]]

    await bob.send({"text": "mine"})  # an observer may not send: 1008, and it leaves
    assert (await closed(bob))[0] == CloseCode.READ_ONLY
    await until(lambda: _count(kernel, "seen", 4), "the kernel heard bob leave")
    assert (await kernel.evaluate("seen"))[-1] == ["leave", "bob", "observer"]
    await until(lambda: _ready(bob.client_id not in alice.roster), "alice saw bob leave")
    assert await kernel.evaluate("received") == [[{"text": "hi"}, alice.client_id]]
    with pytest.raises(asyncio.TimeoutError):  # alice never gets her own edit back
        await asyncio.wait_for(alice.recv(), 0.3)
    for client in (alice, alice2, bob):
        await client.close()


async def test_a_comm_that_did_not_opt_in_carries_exactly_what_it_did(open_comm):
    comm = await open_comm("echo", presence="1")
    for n in range(3):
        await comm.send({"n": n})
    replies = [(await asyncio.wait_for(comm.recv(), TIMEOUT)).data for _ in range(3)]
    assert replies == [{"n": 0}, {"n": 1}, {"n": 2}]  # no presence message reached the kernel
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(comm.recv(), 0.3)
    assert comm.roster == {}


async def _count(kernel, name: str, at_least: int) -> bool:
    return len(await kernel.evaluate(name)) >= at_least


async def _ready(value: bool) -> bool:
    return value


@pytest.mark.parametrize("server_config", [TWO_USERS])
@pytest.mark.parametrize(
    "transports_config", [{"max_sockets_per_user": 2, "max_sockets_per_kernel": 3}]
)
async def test_sockets_are_capped_per_user_and_per_kernel(server_url, token, kernel):
    async def connect(user: str) -> CommClient:
        return await CommClient.open(
            server_url, kernel.id, "echo", token=token, session=False, **{"as": user}
        )

    alice = [await connect("alice"), await connect("alice")]
    with pytest.raises(Refused) as refused:
        await connect("alice")
    assert refused.value.status == 429 and "max_sockets_per_user" in refused.value.detail
    carol = await connect("carol")
    with pytest.raises(Refused) as refused:
        await connect("carol")
    assert refused.value.status == 429 and "max_sockets_per_kernel" in refused.value.detail
    await alice.pop().close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:  # the server counts the close once its closing handshake is done
        try:
            alice.append(await connect("alice"))
            break
        except Refused:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
    for client in (*alice, carol):
        await client.close()


async def rest(server_url: str, token: str, method: str, path: str, user: str, body=None):
    request = HTTPRequest(
        f"{server_url}api/transports/kernels/{path}?as={user}",
        method,
        headers={"Authorization": f"token {token}"},
        body=None if body is None else json.dumps(body),
        allow_nonstandard_methods=True,
    )
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, json.loads(response.body) if response.body else None


@pytest.mark.parametrize("server_config", [TWO_USERS])
@pytest.mark.parametrize("transports_config", [{"private_comms": True}, {}], ids=["on", "off"])
async def test_private_comms_belong_to_whoever_opened_them(
    server_url, token, kernel, transports_config
):
    """With private_comms, carol neither sees nor uses the comm alice opened, until the kernel
    shares it; comms the kernel opened stay everyone's. Off (v1), she may do everything."""
    private = transports_config.get("private_comms", False)
    status, opened = await rest(server_url, token, "POST", f"{kernel.id}/targets/echo", "alice", {})
    assert status == 201
    comm_id = opened["comm_id"]
    await kernel.execute("from comm import create_comm; public = create_comm('echo', data={})")
    public_id = await kernel.evaluate("public.comm_id")

    status, listing = await rest(server_url, token, "GET", f"{kernel.id}/comms", "carol")
    assert status == 200 and public_id in listing["comms"]
    assert (comm_id in listing["comms"]) is not private
    status, _ = await rest(
        server_url, token, "POST", f"{kernel.id}/comms/{comm_id}", "carol", {"data": 1, "wait": 0}
    )
    assert status == (404 if private else 200)
    attach = CommClient.attach(
        server_url, kernel.id, comm_id, token=token, session=False, **{"as": "carol"}
    )
    if private:
        with pytest.raises(Refused) as refused:
            await attach
        assert refused.value.status == 404
    else:
        await (await attach).close()
    status, _ = await rest(
        server_url, token, "POST", f"{kernel.id}/comms/{comm_id}", "alice", {"data": 1, "wait": 0}
    )
    assert status == 200  # hers

    await kernel.execute(  # the kernel shares it
        f"from comm import get_comm_manager\n"
        f"get_comm_manager().get_comm({comm_id!r}).send("
        "{}, metadata={'transports': {'shared': True, 'to': []}})"
    )
    await until(
        lambda: _listed(server_url, token, kernel.id, comm_id, "carol"), "shared with carol"
    )
    carol = await CommClient.attach(
        server_url, kernel.id, comm_id, token=token, session=False, **{"as": "carol"}
    )
    await carol.close()


async def _listed(server_url, token, kernel_id, comm_id, user) -> bool:
    status, listing = await rest(server_url, token, "GET", f"{kernel_id}/comms", user)
    return status == 200 and comm_id in listing["comms"]


async def test_an_ipywidget_that_did_not_opt_in_sees_nothing_new(kernel, attach):
    """A real ipywidgets model: sessions that ask for presence get no roster, and the widget's
    comm in the kernel receives nothing when they attach and leave (ipywidgets would log any
    message it does not know)."""
    await kernel.execute(
        "import ipywidgets\n"
        "slider = ipywidgets.IntSlider()\n"
        "received = []\n"
        "slider.comm.on_msg(lambda msg: received.append(msg['content']['data']))"
    )
    comm_id = await kernel.evaluate("slider.comm.comm_id")
    first, second = await attach(comm_id, presence="1"), await attach(comm_id, presence="1")
    await kernel.execute("slider.value = 7")
    for client in (first, second):
        update = (await asyncio.wait_for(client.recv(), TIMEOUT)).data
        assert update["method"] == "update" and update["state"] == {"value": 7}
        assert client.roster == {}
    await second.close()
    await kernel.execute("slider.value = 8")
    assert (await asyncio.wait_for(first.recv(), TIMEOUT)).data["state"] == {"value": 8}
    assert await kernel.evaluate("received") == []


async def test_a_shared_comm_stays_open_when_a_frontend_declines_it(server_url, token, kernel):
    """JupyterLab closes a comm the kernel opens to a target it does not know; the server's own
    close (here a REST DELETE) still closes it."""
    await kernel.execute(SHARED)
    comm_id = await kernel.evaluate("board.comm_id")
    declined = kernel.client.session.msg("comm_close", {"comm_id": comm_id, "data": {}})
    kernel.client.shell_channel.send(declined)  # as a frontend on /channels sends it
    is_open = f"__import__('comm').get_comm_manager().get_comm({comm_id!r}) is not None"
    assert await kernel.evaluate(is_open) is True
    request = HTTPRequest(
        f"{server_url}api/transports/kernels/{kernel.id}/comms/{comm_id}",
        method="DELETE",
        headers={"Authorization": f"token {token}"},
    )
    await AsyncHTTPClient().fetch(request)
    await until(lambda: _negated(kernel, is_open), "the server's close closed it")


async def _negated(kernel, expression: str) -> bool:
    return not await kernel.evaluate(expression)
