"""The core contract (v1, and v2's durable sessions) for a kernel behind a Jupyter Kernel
Gateway: the same URLs, frames, close codes, limits and REST answers as for a local kernel.

Each test starts one gateway, one test server on it and one kernel, and checks several points
of the contract on them (the tests of ``test_websocket``, ``test_rest`` and friends, mirrored).
Sockets are plain v1 sockets unless a test asks for a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import pytest
import websockets
from jupyter_server.auth import Authorizer
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from websockets.asyncio.client import ClientConnection

from jupyter_transports.channels import GatewayChannels
from jupyter_transports.client import CommClient, Refused, comm_url
from jupyter_transports.errors import CloseCode
from jupyter_transports.framing import pack_binary, unpack_binary

from .conftest import KERNEL_TARGETS, TIMEOUT, Connect, closed, connecting, recv
from .gateway import GatewayKernel
from .test_lifecycle import sync_a_model_with_the_stock_client
from .test_rest import API, Answer, EventStream, check_against_spec

pytest_plugins = ["tests.gateway"]

Api = Callable[..., Awaitable[Answer]]
Events = Callable[..., Awaitable[tuple[Answer, EventStream]]]
RawConnect = Callable[..., Awaitable[ClientConnection]]

# A comm the kernel opens itself (a widget's), and a 3 MiB buffer of random bytes to send on it
WIDGET = """
import hashlib, os
from comm import create_comm, get_comm_manager
widget = create_comm(target_name="test.widget", data={})
blob = os.urandom(3 * 1024 * 1024)

def digest(comm, open_msg):
    # the sha256 of each buffer the kernel received
    comm.on_msg(lambda msg: comm.send([hashlib.sha256(b).hexdigest() for b in msg["buffers"]]))

get_comm_manager().register_target("digest", digest)
"""

# A target whose comm answers each message to its sender only (``transports.to``)
UNICAST = """
from comm import get_comm_manager
opened = {}

def unicast(comm, open_msg):
    opened["comm"] = comm
    def reply_to_sender(msg):
        sender = msg["metadata"]["transports"]["client"]
        comm.send({"to_you": sender}, metadata={"transports": {"to": [sender]}})
    comm.on_msg(reply_to_sender)

get_comm_manager().register_target("unicast", unicast)
"""


def close_comm_in_kernel(comm_id: str) -> str:
    """Kernel code that closes one of its comms."""
    return f"from comm import get_comm_manager\nget_comm_manager().get_comm({comm_id!r}).close()"


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def extra_server_config() -> dict[str, Any]:
    """Config sections on top of the gateway's, for one test (e.g. an authorizer)."""
    return {}


@pytest.fixture
def server_config(
    gateway_server_config: dict[str, Any], extra_server_config: dict[str, Any]
) -> dict[str, Any]:
    """The test server on the test's gateway."""
    return {**gateway_server_config, **extra_server_config}


@pytest.fixture
def gw_open(
    server_url: str, token: str, gateway_kernel: GatewayKernel, jp_asyncio_loop: Any
) -> Iterator[Connect]:
    """Open a new comm to a target of the gateway kernel: ``await gw_open("echo")``."""
    yield from connecting(
        server_url, token, gateway_kernel.id, CommClient.open, jp_asyncio_loop, session=False
    )


@pytest.fixture
def gw_attach(
    server_url: str, token: str, gateway_kernel: GatewayKernel, jp_asyncio_loop: Any
) -> Iterator[Connect]:
    """Attach to an existing comm of the gateway kernel: ``await gw_attach(comm_id)``."""
    yield from connecting(
        server_url, token, gateway_kernel.id, CommClient.attach, jp_asyncio_loop, session=False
    )


@pytest.fixture
def gw_api(server_url: str, token: str, gateway_kernel: GatewayKernel) -> Api:
    """``await gw_api("POST", "targets", "echo", body={...})``: one REST call under
    ``/api/transports/kernels/{the gateway kernel}``, checked against the OpenAPI document."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server_url))
    seen: set[tuple[str, str, int]] = set()

    async def call(
        method: str,
        *path: str,
        body: Any = None,
        raw: bytes | None = None,
        kernel_id: str | None = None,
    ) -> Answer:
        parts = ["kernels", kernel_id or gateway_kernel.id, *path]
        api_path = "/".join([API, *(quote(p, safe="") for p in parts)])
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if method == "POST" and data is None:
            data = b""
        request = HTTPRequest(
            server_url.rstrip("/") + api_path,
            method,
            headers={"Authorization": f"token {token}"},
            body=data,
            request_timeout=TIMEOUT,
            allow_nonstandard_methods=True,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        answer = Answer(response.code, response.headers, response.body or b"")
        check_against_spec(origin, method, api_path, data, answer, seen)
        return answer

    return call


@pytest.fixture
def gw_events(server_url: str, token: str, gateway_kernel: GatewayKernel) -> Iterator[Events]:
    """``answer, stream = await gw_events(comm_id)``: subscribe to a comm's Server-Sent Events."""
    streams: list[EventStream] = []
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server_url))

    async def subscribe(comm_id: str, kernel_id: str | None = None) -> tuple[Answer, EventStream]:
        path = f"/kernels/{kernel_id or gateway_kernel.id}/comms/{comm_id}/events"
        answer, stream = await EventStream.connect(server_url, path, token)
        check_against_spec(origin, "GET", API + path, None, answer, set())
        streams.append(stream)
        return answer, stream

    yield subscribe
    for stream in streams:
        stream.close()


@pytest.fixture
def raw_ws(server_url: str, token: str, gateway_kernel: GatewayKernel) -> Iterator[RawConnect]:
    """``ws = await raw_ws("targets", "echo", frames="text")``: a raw WebSocket of the test's
    own to an endpoint of the gateway kernel, to see frames exactly as they come."""
    sockets: list[ClientConnection] = []

    async def connect(*path: str, **query: Any) -> ClientConnection:
        url = comm_url(server_url, gateway_kernel.id, *path, token=token, **query)
        ws = await websockets.connect(url, max_size=None, open_timeout=TIMEOUT)
        sockets.append(ws)
        return ws

    yield connect
    for ws in sockets:
        ws.transport.abort()


async def next_frame(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


# -- frames ----------------------------------------------------------------------------------


async def test_echo_keeps_order_and_buffers_cross_both_ways_intact(
    jp_serverapp: Any, gateway_kernel: GatewayKernel, gw_open: Connect, gw_attach: Connect
) -> None:
    """Through the gateway adapter: 200 JSON messages come back in order, and nothing else
    (another comm's traffic, the kernel's output); a 1 MiB random buffer (among others) goes to
    the kernel intact (its own digest says so) and comes back intact; a 3 MiB buffer the kernel
    sends on its own comm arrives intact."""
    comm, other = await gw_open("echo"), await gw_open("echo")
    app = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_transports"]))
    assert isinstance(app.bridges.bridges[gateway_kernel.id].channels, GatewayChannels)
    await gateway_kernel.execute("print('not for sockets')")
    for i in range(200):
        await comm.send({"i": i})
    assert [await recv(comm) for _ in range(200)] == [{"i": i} for i in range(200)]
    await other.send("other")
    assert await recv(other) == "other"  # its first message: none of the other comm's

    buffers = [b"odd", os.urandom(1024 * 1024), os.urandom(70_001), b""]
    await comm.send({"kind": "blob"}, buffers=buffers)
    echoed = await asyncio.wait_for(comm.recv(), TIMEOUT)
    assert echoed.data == {"kind": "blob"}
    assert [bytes(b) for b in echoed.buffers] == buffers

    await gateway_kernel.execute(WIDGET)
    digest = await gw_open("digest")
    await digest.send({"kind": "blob"}, buffers=buffers)
    assert await recv(digest) == [sha256(b) for b in buffers]  # as the kernel received them

    widget = await gw_attach(await gateway_kernel.evaluate("widget.comm_id"))
    await gateway_kernel.execute("widget.send({'from': 'kernel'}, buffers=[blob, b'tail'])")
    sent = await asyncio.wait_for(widget.recv(), TIMEOUT)
    assert sent.data == {"from": "kernel"}
    assert [len(b) for b in sent.buffers] == [3 * 1024 * 1024, 4]
    assert sha256(sent.buffers[0]) == await gateway_kernel.evaluate(
        "hashlib.sha256(blob).hexdigest()"
    )
    assert bytes(sent.buffers[1]) == b"tail"


async def test_text_frames_pass_through(raw_ws: RawConnect) -> None:
    """With ``frames=text`` a client's text frame reaches the kernel as a string, unparsed, and
    a string the kernel sends goes out as that text verbatim; other data goes out as its JSON
    text; buffers travel as binary frames."""
    echo = await raw_ws("targets", "echo", frames="text")
    await echo.send("plain text, {not JSON")
    assert await next_frame(echo) == "plain text, {not JSON"
    await echo.send('{"a":  1}')  # a string to the kernel: echoed as it was, spaces and all
    assert await next_frame(echo) == '{"a":  1}'
    await echo.send(pack_binary(b'"head"', [b"\x00\x01\x02", b"buf"]))
    frame = await next_frame(echo)
    assert isinstance(frame, bytes)
    head, buffers = unpack_binary(frame)
    assert json.loads(bytes(head)) == "head"
    assert [bytes(b) for b in buffers] == [b"\x00\x01\x02", b"buf"]

    whoami = await raw_ws("targets", "whoami", frames="text")
    opened = await next_frame(whoami)
    assert isinstance(opened, str)  # an object: its JSON text
    assert json.loads(opened)["metadata"]["transports"]["query"]["frames"] == "text"
    await whoami.send('{"x": 1}')
    said = await next_frame(whoami)
    assert isinstance(said, str)
    assert json.loads(said)["data"] == '{"x": 1}'  # the kernel got the text, not an object


# -- routing ---------------------------------------------------------------------------------


async def test_fan_out_unicast_and_owner_close(
    gateway_kernel: GatewayKernel, gw_open: Connect, gw_attach: Connect
) -> None:
    """The kernel learns the new comm's data and query, and who speaks; a kernel message
    reaches the owner and 3 attached sockets once each, in order; one with
    ``transports.to`` reaches only the client it names; when the owner closes, the attached
    sockets close with 1000 and the comm is closed in the kernel."""
    whoami = await gw_open("whoami", data={"x": [1, 2]}, color="blue")
    opened = await recv(whoami)
    assert opened["data"] == {"x": [1, 2]}
    who = opened["metadata"]["transports"]
    assert who["query"] == {"data": json.dumps({"x": [1, 2]}), "color": "blue", "frames": "json"}
    assert who["client"] and who["user"]
    await whoami.send("hello")
    said = await recv(whoami)
    assert said == {
        "data": "hello",
        "metadata": {"transports": {"client": who["client"], "user": who["user"]}},
    }

    await gateway_kernel.execute(UNICAST)
    owner = await gw_open("unicast")
    comm_id = await gateway_kernel.opened_comm("unicast")
    attached = [await gw_attach(comm_id) for _ in range(3)]
    everyone = [owner, *attached]

    await gateway_kernel.execute("for i in range(50): opened['comm'].send({'i': i})")
    for socket in everyone:
        assert [await recv(socket) for _ in range(50)] == [{"i": i} for i in range(50)]

    for asker in (attached[1], owner):
        await asker.send({"ping": True})
        assert set(await recv(asker)) == {"to_you"}
        await gateway_kernel.execute("opened['comm'].send('after')")
        for socket in everyone:  # the unicast reached nobody else
            assert await recv(socket) == "after"

    await owner.close()
    for socket in attached:
        code, reason = await closed(socket)
        assert code == CloseCode.COMM_CLOSED
        assert reason is not None and "opened it" in reason
    await gateway_kernel.execute("pass")  # the comm_close was handled before this
    assert await gateway_kernel.comm_ids("unicast") == []


# -- refusals, close codes, limits -----------------------------------------------------------


@pytest.mark.parametrize("transports_config", [{"max_message_bytes": 4096}])
async def test_refusals_close_codes_and_size_limit(
    jp_fetch: Any,
    server_url: str,
    token: str,
    gateway_kernel: GatewayKernel,
    gw_open: Connect,
    gw_attach: Connect,
    gw_api: Api,
    gw_events: Events,
) -> None:
    """Unknown comm: 404 at the handshake; unknown target: 4404; comm closed by the kernel:
    1000; undecodable frame: 1007; a frame over ``max_message_bytes``: 1009 (a REST body: 413),
    while what the kernel sends is not limited; an unknown kernel: 404 on every endpoint."""
    with pytest.raises(Refused) as info:
        await gw_attach("no-such-comm")
    assert info.value.status == 404

    refused = await gw_open("no.such.target")
    code, _ = await closed(refused)
    assert code == CloseCode.NO_SUCH_COMM

    echo = await gw_open("echo")
    await echo.send("x" * 4000)
    assert await recv(echo) == "x" * 4000
    await echo.send("x" * 5000)
    code, _ = await closed(echo)
    assert code == CloseCode.TOO_BIG
    answer = await gw_api(
        "POST", "targets", "echo", raw=json.dumps({"data": {"x": "x" * 5000}}).encode()
    )
    assert answer.status == 413

    bad = await gw_open("echo")
    await bad.send_frame("{not json")
    code, _ = await closed(bad)
    assert code == CloseCode.BAD_FRAME

    flood = await gw_open("flood")
    await flood.send({"count": 2, "size": 64 * 1024})  # the kernel's are not limited
    assert [len((await recv(flood))["pad"]) for _ in range(2)] == [64 * 1024] * 2
    flood_id = await gateway_kernel.opened_comm("flood")
    await gateway_kernel.execute(close_comm_in_kernel(flood_id))
    code, reason = await closed(flood)
    assert code == CloseCode.COMM_CLOSED
    assert reason is not None and "kernel" in reason

    unknown = str(uuid.uuid4())
    for connect, name in ((CommClient.open, "echo"), (CommClient.attach, "some-comm")):
        with pytest.raises(Refused) as info:
            await connect(server_url, unknown, name, token=token, session=False)
        assert info.value.status == 404
    assert (await gw_api("GET", "comms", kernel_id=unknown)).status == 404
    assert (await gw_api("POST", "targets", "echo", kernel_id=unknown)).status == 404
    answer = await gw_api("POST", "comms", "some-comm", body={"data": 1}, kernel_id=unknown)
    assert answer.status == 404
    assert (await gw_api("DELETE", "comms", "some-comm", kernel_id=unknown)).status == 404
    answer, _ = await gw_events("some-comm", kernel_id=unknown)
    assert answer.status == 404
    on_gateway = await gateway_kernel.gateway.api("GET", "api/kernels")
    assert [k["id"] for k in on_gateway] == [gateway_kernel.id]
    listed = await jp_fetch("api", "kernels")  # nothing adopted, nothing left behind
    assert [k["id"] for k in json.loads(listed.body)] == [gateway_kernel.id]

    other = await gw_open("echo")  # the server and the kernel's bridge keep serving
    await other.send("still here")
    assert await recv(other) == "still here"


class ReadOnlyAuthorizer(Authorizer):
    """Allows reading kernels, nothing else."""

    asked: ClassVar[list[tuple[str, str]]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        self.asked.append((action, resource))
        return action == "read"


@pytest.mark.parametrize(
    "extra_server_config", [{"ServerApp": {"authorizer_class": ReadOnlyAuthorizer}}]
)
async def test_read_only_user_may_receive_but_not_send(
    gateway_kernel: GatewayKernel,
    gw_open: Connect,
    gw_attach: Connect,
    gw_api: Api,
    gw_events: Events,
) -> None:
    """A ``read``-only user is refused (403) a ``targets/…`` handshake and every REST
    POST/DELETE, may list comms, attach and receive (socket and event stream), and is closed
    with 1008 when it sends."""
    ReadOnlyAuthorizer.asked.clear()
    with pytest.raises(Refused) as info:
        await gw_open("echo")
    assert info.value.status == 403
    assert ReadOnlyAuthorizer.asked == [("execute", "kernels")]

    await gateway_kernel.execute(WIDGET)
    comm_id = await gateway_kernel.evaluate("widget.comm_id")
    observer = await gw_attach(comm_id)
    answer, stream = await gw_events(comm_id)
    assert answer.status == 200
    assert await stream.next() == ("open", {"comm_id": comm_id})
    listed = await gw_api("GET", "comms")
    assert listed.status == 200
    assert listed.json["comms"][comm_id] == {"target_name": "test.widget", "clients": 2}

    assert (await gw_api("POST", "targets", "echo", body={})).status == 403
    assert (await gw_api("POST", "comms", comm_id, body={"data": 1})).status == 403
    assert (await gw_api("DELETE", "comms", comm_id)).status == 403

    await gateway_kernel.execute("widget.send({'news': 1})")
    assert await recv(observer) == {"news": 1}
    assert await stream.next() == ("message", {"news": 1})

    await observer.send({"may": "not"})
    code, _ = await closed(observer)
    assert code == CloseCode.READ_ONLY
    assert await gateway_kernel.comm_ids("test.widget") == [comm_id]  # nothing reached it


TEN_MIB = 10 * 1024 * 1024  # tornado's default limit on a WebSocket message, which KG keeps


async def test_a_message_over_the_gateways_limit_is_refused_not_lost(
    gateway_kernel: GatewayKernel, gw_open: Connect, gw_api: Api
) -> None:
    """The gateway takes kernel messages of at most ``gateway_max_message_bytes`` (10 MiB):
    a larger frame closes its socket with 1009 and a larger REST body is 413, before anything
    reaches the gateway; the kernel's connection, and the other sockets, carry on. (Sent on,
    it would make the gateway drop the connection and the message with it.)"""
    bystander = await gw_open("echo")
    comm = await gw_open("echo")
    await comm.send({"big": True}, buffers=[os.urandom(TEN_MIB + 1024)])
    code, reason = await closed(comm)
    assert code == CloseCode.TOO_BIG
    assert "gateway_max_message_bytes" in (reason or "")

    comm_id = (await gw_api("POST", "targets", "echo", body={"data": {}})).json["comm_id"]
    big = {"data": "x" * (TEN_MIB + 1024)}
    assert (await gw_api("POST", "comms", comm_id, body=big)).status == 413

    blob = os.urandom(TEN_MIB - 64 * 1024)  # just under the limit: through, intact
    await bystander.send({"big": True}, buffers=[blob])
    echo = await asyncio.wait_for(bystander.recv(), TIMEOUT)
    assert echo.data == {"big": True}
    assert [sha256(b) for b in echo.buffers] == [sha256(blob)]


# -- REST and events -------------------------------------------------------------------------


async def test_rest_open_send_list_delete_and_events(
    gateway_kernel: GatewayKernel, gw_api: Api, gw_attach: Connect, gw_events: Events
) -> None:
    """A comm opened by REST gets its first replies and outlives the call; a POST gets its
    replies; GET lists the kernel's comms with their sockets; an event stream sees each
    message; DELETE closes the comm (attached sockets with 1000, the stream with a close
    event); a refused target is 404."""
    answer = await gw_api("POST", "targets", "whoami", body={"data": {"x": [1, 2]}, "wait": 0.2})
    assert answer.status == 201, answer.body
    comm_id = answer.json["comm_id"]
    [opened] = answer.json["replies"]
    assert opened["comm_id"] == comm_id
    assert opened["data"] == {"x": [1, 2]}
    assert set(opened["metadata"]["transports"]) == {"client", "user", "query"}
    assert comm_id in await gateway_kernel.comm_ids("whoami")

    sent = await gw_api("POST", "comms", comm_id, body={"data": "hello"})
    assert sent.status == 200
    [said] = sent.json["replies"]
    assert said["data"] == "hello"

    echo = await gw_api("POST", "targets", "echo")
    assert echo.status == 201 and echo.json["replies"] == []
    echo_id = echo.json["comm_id"]
    sockets = [await gw_attach(echo_id) for _ in range(2)]
    answer, stream = await gw_events(echo_id)
    assert answer.status == 200
    assert await stream.next() == ("open", {"comm_id": echo_id})
    comms = (await gw_api("GET", "comms")).json["comms"]
    assert comms == {
        comm_id: {"target_name": "whoami", "clients": 0},
        echo_id: {"target_name": "echo", "clients": 3},  # two sockets and the stream
    }

    sent = await gw_api("POST", "comms", echo_id, body={"data": {"n": 1}})
    assert sent.json["replies"] == [{"n": 1}]
    for socket in sockets:
        assert await recv(socket) == {"n": 1}
    assert await stream.next() == ("message", {"n": 1})

    assert (await gw_api("DELETE", "comms", echo_id)).status == 204
    for socket in sockets:
        code, reason = await closed(socket)
        assert code == CloseCode.COMM_CLOSED
        assert reason is not None and "request" in reason
    name, data = await stream.next()
    assert name == "close" and data["code"] == CloseCode.COMM_CLOSED
    assert await stream.next() is None
    assert await gateway_kernel.comm_ids("echo") == []
    assert (await gw_api("DELETE", "comms", echo_id)).status == 404

    refused = await gw_api("POST", "targets", "no.such.target", body={"wait": 0})
    assert refused.status == 404
    assert "refused" in refused.json["message"]
    assert set((await gw_api("GET", "comms")).json["comms"]) == {comm_id}


# -- the kernel's lifecycle ------------------------------------------------------------------


async def test_restart_closes_1012_and_shutdown_1001(
    server_url: str,
    token: str,
    jp_fetch: Any,
    gateway_kernel: GatewayKernel,
    gw_open: Connect,
    gw_attach: Connect,
    gw_api: Api,
    gw_events: Events,
) -> None:
    """A restart through the server's REST API closes every socket with 1012 (and ends event
    streams); so does the gateway's automatic restart of a kernel that died; the restarted
    kernel is served again (without the old one's targets: 4404); a shutdown through the
    server's REST API closes every socket with 1001; then the kernel is unknown: 404."""
    owner = await gw_open("echo")
    await owner.send("hi")
    assert await recv(owner) == "hi"
    comm_id = await gateway_kernel.opened_comm("echo")
    follower = await gw_attach(comm_id)
    _, stream = await gw_events(comm_id)
    assert (await stream.next())[0] == "open"

    await jp_fetch("api", "kernels", gateway_kernel.id, "restart", method="POST", body="")
    for socket in (owner, follower):
        code, _ = await closed(socket)
        assert code == CloseCode.RESTARTING
    name, data = await stream.next()
    assert name == "close" and data["code"] == CloseCode.RESTARTING

    await gateway_kernel.wait_ready()
    await gateway_kernel.execute(KERNEL_TARGETS)  # the new kernel process has none yet
    doomed = await gw_open("echo")
    await doomed.send("before dying")
    assert await recv(doomed) == "before dying"
    gateway_kernel.gateway.kernel_process(gateway_kernel.id).kill()  # the gateway restarts it
    code, _ = await closed(doomed)
    assert code == CloseCode.RESTARTING
    await gateway_kernel.wait_ready()  # the gateway's restart is done
    refused = await gw_open("echo")  # a new bridge, to the new kernel, which lost its targets
    code, _ = await closed(refused)
    assert code == CloseCode.NO_SUCH_COMM

    await gateway_kernel.execute(KERNEL_TARGETS)
    sockets = [await gw_open("echo") for _ in range(2)]
    for socket in sockets:
        await socket.send("again")
        assert await recv(socket) == "again"
    sockets.append(
        await gw_attach(await gateway_kernel.evaluate("list(get_comm_manager().comms)[0]"))
    )

    await jp_fetch("api", "kernels", gateway_kernel.id, method="DELETE")
    for socket in sockets:
        code, _ = await closed(socket)
        assert code == CloseCode.GOING_AWAY

    with pytest.raises(Refused) as info:
        await CommClient.open(server_url, gateway_kernel.id, "echo", token=token, session=False)
    assert info.value.status == 404
    assert (await gw_api("GET", "comms")).status == 404


# -- clients ---------------------------------------------------------------------------------


async def test_stock_transports_client_over_text_frames(
    server_url: str, token: str, gateway_kernel: GatewayKernel
) -> None:
    """The stock ``transports`` Client syncs a model with the kernel both ways over
    ``frames=text``."""
    await sync_a_model_with_the_stock_client(server_url, token, gateway_kernel)


async def test_durable_session_resumes_after_a_drop(
    raw_ws: RawConnect, gateway_kernel: GatewayKernel
) -> None:
    """A session whose connection drops (no close frame) resumes: what the kernel sent while it
    was away arrives in order after ``resumed``, a resent message reaches the kernel once, and
    the comm stayed open."""

    async def message(ws: ClientConnection) -> dict[str, Any]:
        """The next comm message, past acknowledgements."""
        while "seq" not in (frame := json.loads(await next_frame(ws))):
            pass
        return frame  # type: ignore[no-any-return]

    key = secrets.token_urlsafe(16)
    ws = await raw_ws("targets", "echo", session_key=key)
    hello = json.loads(await next_frame(ws))
    assert hello["session"] == "new" and hello["ack"] == 0
    await ws.send(json.dumps({"seq": 1, "data": "one"}))
    first = await message(ws)
    assert first["data"] == "one"
    ws.transport.abort()

    comm_id = hello["comm_id"]
    await gateway_kernel.execute(
        "from comm import get_comm_manager\n"
        f"for i in range(3): get_comm_manager().get_comm({comm_id!r}).send({{'away': i}})"
    )
    again = await raw_ws("targets", "echo", session_key=key, last=first["seq"])
    resumed = json.loads(await next_frame(again))
    assert resumed == {**hello, "session": "resumed", "ack": 1}
    missed = [await message(again) for _ in range(3)]
    assert [m["data"] for m in missed] == [{"away": i} for i in range(3)]
    seqs = [first["seq"], *(m["seq"] for m in missed)]
    assert seqs == sorted(set(seqs))

    await again.send(json.dumps({"seq": 1, "data": "one"}))  # a resend: dropped
    await again.send(json.dumps({"seq": 2, "data": "two"}))
    echoed = await message(again)
    assert echoed["data"] == "two" and echoed["seq"] > seqs[-1]
    assert await gateway_kernel.comm_ids("echo") == [comm_id]
    with contextlib.suppress(websockets.ConnectionClosed):
        await again.close()
