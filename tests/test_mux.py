"""One socket for many comms (contract v2), against a real server and real ipykernel kernels,
spoken to with a third-party WebSocket client (``websockets``), frame by frame."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_transports.client import CommClient
from jupyter_transports.client_socket import comm_url
from jupyter_transports.errors import CloseCode
from jupyter_transports.framing import pack_binary

from .conftest import TIMEOUT, closed, recv
from .test_presence import TWO_USERS

WIDGETS = """
from comm import create_comm
made, heard = {}, []
def listen(comm):
    comm.on_msg(lambda msg: heard.append([comm.comm_id, msg["content"]["data"],
                                          msg["metadata"]["transports"]["client"]]))
    made[comm.comm_id] = comm
    return comm
def make(n, target="t.widget"):
    for i in range(n):
        listen(create_comm(target_name=target, data={"i": i}))
    return list(made)
"""


async def test_a_socket_is_on_every_comm_of_its_targets_before_and_after_it_connects(kernel, mux):
    await kernel.execute(WIDGETS)
    before = await kernel.evaluate("make(2)")
    await kernel.evaluate("make(1, target='t.other') and 0")
    page = await mux("t.widget")
    hello = await page.frame()
    assert hello["type"] == "hello" and hello["can_send"] is True
    assert sorted(c["comm_id"] for c in hello["comms"]) == sorted(before)
    assert {c["target_name"] for c in hello["comms"]} == {"t.widget"}

    await kernel.execute(
        f"made[{before[1]!r}].send({{'n': 1}})\nmake(1, target='t.other')\n"
        "late = listen(create_comm(target_name='t.widget', data={'state': 1}, "
        "metadata={'version': '2.1.0'}, buffers=[b'\\x00\\x01']))\nlate.send({'n': 2})"
    )
    assert await page.frame() == {"type": "msg", "comm_id": before[1], "data": {"n": 1}}
    late = await kernel.evaluate("late.comm_id")
    opened, buffers = await page.recv()
    assert opened == {
        "type": "open",
        "comm_id": late,
        "target_name": "t.widget",
        "data": {"state": 1},
        "metadata": {"version": "2.1.0"},
    }
    assert buffers == [b"\x00\x01"]
    assert await page.frame() == {"type": "msg", "comm_id": late, "data": {"n": 2}}  # t.other: none

    # the page speaks on any of them; the kernel sees one client per comm, named after the page
    await page.send({"type": "msg", "comm_id": late, "data": {"v": 7}})
    await page.send({"type": "msg", "comm_id": before[0], "data": {"v": 8}})
    await until(kernel, "len(heard) == 2")
    assert await kernel.evaluate("heard") == [
        [late, {"v": 7}, f"{hello['client']}/{late}"],
        [before[0], {"v": 8}, f"{hello['client']}/{before[0]}"],
    ]


async def test_kernel_messages_fan_out_to_pages_and_reach_one_page_when_addressed(kernel, mux):
    await kernel.execute(WIDGETS)
    [comm_id] = await kernel.evaluate("make(1)")
    pages = [await mux("t.widget") for _ in range(3)]
    ids = [(await page.frame())["client"] for page in pages]
    await kernel.execute(f"made[{comm_id!r}].send({{'all': 1}}, buffers=[b'x' * 100000])")
    for page in pages:
        head, buffers = await page.recv()
        assert head == {"type": "msg", "comm_id": comm_id, "data": {"all": 1}}
        assert buffers == [b"x" * 100000]
    to = f"{ids[1]}/{comm_id}"
    await kernel.execute(
        f"made[{comm_id!r}].send({{'one': 1}}, metadata={{'transports': {{'to': [{to!r}]}}}})\n"
        f"made[{comm_id!r}].send({{'all': 2}})"
    )
    assert (await pages[1].frame())["data"] == {"one": 1}
    for page in pages:
        assert (await page.frame())["data"] == {"all": 2}


async def test_open_attach_detach_and_close_comms_on_one_socket(kernel, mux, open_comm):
    page = await mux()
    assert (await page.frame())["comms"] == []
    # open: the socket owns it, and the kernel's echo comes back on it
    await page.send(
        {
            "type": "open",
            "comm_id": "mine-1",
            "target_name": "echo",
            "data": {},
            "metadata": {"m": 1},
        }
    )
    await page.send({"type": "msg", "comm_id": "mine-1", "data": {"hi": 1}}, [b"buf"])
    assert await page.recv() == ({"type": "msg", "comm_id": "mine-1", "data": {"hi": 1}}, [b"buf"])
    # attach to a comm another client opened; both receive its messages
    other = await open_comm("echo")
    await page.send({"type": "attach", "comm_id": other.comm_id})
    assert await page.frame() == {
        "type": "attached",
        "comm_id": other.comm_id,
        "target_name": "echo",
    }
    await other.send({"from": "other"})
    assert await recv(other) == {"from": "other"}
    assert await page.frame() == {
        "type": "msg",
        "comm_id": other.comm_id,
        "data": {"from": "other"},
    }
    # close: in the kernel, for everyone on it, this socket too
    await page.send({"type": "close", "comm_id": other.comm_id})
    assert await page.frame() == {
        "type": "close",
        "comm_id": other.comm_id,
        "code": 1000,
        "reason": "comm closed by request",
    }
    assert (await closed(other))[0] == CloseCode.COMM_CLOSED
    # detach from a comm it opened: the comm closes, as when its socket closes; nothing answers
    await page.send({"type": "detach", "comm_id": "mine-1"})
    await until(kernel, "not get_ipython().kernel.comm_manager.comms")
    await page.send({"type": "attach", "comm_id": "mine-1"})
    assert (await page.frame())["code"] == CloseCode.NO_SUCH_COMM


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        ({"type": "open", "comm_id": "x1", "target_name": "nobody", "data": {}}, 4404),
        ({"type": "attach", "comm_id": "no-such-comm"}, 4404),
        ({"type": "msg", "comm_id": "not-on-it", "data": {}}, 4404),
        ({"type": "close", "comm_id": "not-on-it"}, 4404),
    ],
)
async def test_a_refused_comm_is_one_close_frame_and_the_socket_goes_on(mux, frame, answer):
    page = await mux()
    await page.frame()
    await page.send(frame)
    refusal = await page.frame()
    assert (refusal["type"], refusal["comm_id"], refusal["code"]) == (
        "close",
        frame["comm_id"],
        answer,
    )
    await page.send({"type": "open", "comm_id": "after", "target_name": "echo", "data": {}})
    await page.send({"type": "msg", "comm_id": "after", "data": 1})
    assert await page.frame() == {"type": "msg", "comm_id": "after", "data": 1}


async def test_opening_a_comm_id_that_exists_answers_4409(mux):
    page = await mux()
    await page.frame()
    open_frame = {"type": "open", "comm_id": "twice", "target_name": "echo", "data": {}}
    await page.send(open_frame)
    await page.send(open_frame)
    assert (await page.frame())["code"] == CloseCode.COMM_EXISTS


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"type": "nope", "comm_id": "a"}',
        '{"comm_id": "a", "data": {}}',
        '{"type": "msg", "comm_id": "a"}',
        '{"type": "msg", "comm_id": "a", "data": 1, "extra": 1}',
        '{"type": "msg", "comm_id": 5, "data": 1}',
        '{"type": "open", "comm_id": "a b", "target_name": "echo", "data": {}}',
        '{"type": "open", "comm_id": "a", "target_name": "echo", "data": []}',
        '{"type": "open", "comm_id": "a", "target_name": "", "data": {}}',
        pack_binary(b'{"type": "attach", "comm_id": "a"}', [b"x"]),
    ],
)
async def test_a_frame_that_is_not_the_contracts_closes_with_1007(mux, frame):
    page = await mux()
    await page.frame()
    await page.socket.send(frame)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await page.recv()
    assert info.value.rcvd.code == CloseCode.BAD_FRAME


@pytest.mark.parametrize("server_config", [TWO_USERS])
async def test_a_reader_follows_and_attaches_but_sending_closes_with_1008(kernel, mux):
    await kernel.execute(WIDGETS)
    [comm_id] = await kernel.evaluate("make(1)")
    page = await mux("t.widget", **{"as": "bob"})
    hello = await page.frame()
    assert hello["can_send"] is False and hello["comms"][0]["comm_id"] == comm_id
    await kernel.execute(f"made[{comm_id!r}].send('seen')")
    assert (await page.frame())["data"] == "seen"
    await page.send({"type": "msg", "comm_id": comm_id, "data": {}})
    with pytest.raises(websockets.ConnectionClosed) as info:
        await page.recv()
    assert info.value.rcvd.code == CloseCode.READ_ONLY
    assert await kernel.evaluate("heard") == []


@pytest.mark.parametrize("transports_config", [{"allowed_targets": ["echo"]}])
async def test_a_target_that_is_not_allowed_answers_4403(mux):
    page = await mux()
    await page.frame()
    await page.send({"type": "open", "comm_id": "w", "target_name": "whoami", "data": {}})
    assert (await page.frame())["code"] == CloseCode.NOT_ALLOWED


async def test_a_kernel_restart_closes_the_socket_with_1012_even_on_no_comm(
    jp_serverapp, kernel, mux
):
    page = await mux("t.widget")
    await page.frame()
    await jp_serverapp.kernel_manager.restart_kernel(kernel.id)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await page.recv()
    assert info.value.rcvd.code == CloseCode.RESTARTING


async def test_a_hundred_comms_on_one_socket(kernel, mux):
    await kernel.execute(WIDGETS)
    ids = await kernel.evaluate("make(100)")
    page = await mux("t.widget")
    assert len((await page.frame())["comms"]) == 100
    await kernel.execute("for c in made.values(): c.send({'id': c.comm_id})")
    got = [await page.frame() for _ in ids]
    assert [f["comm_id"] for f in got] == ids and all(
        f["data"] == {"id": f["comm_id"]} for f in got
    )


@pytest.mark.parametrize(
    "query",
    [
        "frames=text",
        "frames=json",
        "follow=",
        "session_key=short",
        f"session_key={'k' * 22}&last=x",
    ],
)
async def test_handshake_refusals(server_url, token, kernel, query):
    url = f"{comm_url(server_url, kernel.id, 'comms')}?token={token}&{query}"
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, open_timeout=TIMEOUT)
    assert info.value.response.status_code == 400


async def test_without_an_upgrade_the_path_is_still_v1s_list_of_comms(server_url, token, kernel):
    url = server_url + f"api/transports/kernels/{kernel.id}/comms"
    reply = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"})
    assert json.loads(reply.body) == {"comms": {}}
    with pytest.raises(HTTPClientError) as info:
        await AsyncHTTPClient().fetch(url.replace(kernel.id, "no-such-kernel"))
    assert info.value.code in (403, 404)


async def test_a_plain_comm_client_and_a_page_share_a_comm(kernel, mux, open_comm):
    comm: CommClient = await open_comm("echo")
    page = await mux()
    await page.frame()
    await page.send({"type": "attach", "comm_id": comm.comm_id})
    await page.frame()
    await page.send({"type": "msg", "comm_id": comm.comm_id, "data": "from the page"})
    assert await recv(comm) == "from the page"  # the kernel's echo reaches both
    assert (await page.frame())["data"] == "from the page"


async def until(kernel, expression: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await kernel.evaluate(expression):
        assert loop.time() < deadline, expression
        await asyncio.sleep(0.02)
