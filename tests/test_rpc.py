"""RPC channels: the pure protocol, then kernel <-> Python client through a real server and kernel."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jupyter_transports.client import CommClient
from jupyter_transports.rpc import codec
from jupyter_transports.rpc.codec import (
    MAX_BATCH_MESSAGES,
    ConnectionLost,
    NoClient,
    ProtocolError,
    RemoteError,
    decode,
    pack_batch,
    put_buffers,
    remove_buffers,
    request,
    returned,
    unpack_batch,
)
from jupyter_transports.rpc.endpoint import Endpoint, Outbox
from jupyter_transports.rpc_client import Channel

from .conftest import TIMEOUT

KERNEL_CHANNEL = """
import asyncio
import subprocess
import sys
from jupyter_transports.kernel import Channel

class Handler:
    def add(self, a, b):
        return a + b

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return "done"

    def fail(self, message):
        raise ValueError(message)

    def add_or_fail(self, a, b):
        if a % 7 == 0:
            raise ValueError(f"{a} is a multiple of 7")
        return a + b

    def measure(self, data, label):
        return {"label": label, "size": len(data), "reversed": data[::-1]}

    async def ask(self, name, args, timeout, to):
        # kernel -> client, from inside a handler: call back the caller unless told otherwise
        try:
            result = await channel.call(name, *args, timeout=timeout, to=to or channel.caller)
        except Exception as e:
            return {"raised": type(e).__name__, "message": str(e)}
        return {"result": result}

channel = Channel("calc", Handler())
"""


# -- the pure protocol -------------------------------------------------------------------------


def test_buffers_are_lifted_out_and_put_back():
    value = {"a": [1, b"xy", {"b": bytearray(b"z")}], "c": memoryview(b"w")}
    stripped, paths, buffers = remove_buffers(value)
    assert stripped == {"a": [1, None, {"b": None}], "c": None}
    assert paths == [["a", 1], ["a", 2, "b"], ["c"]]
    assert buffers == [b"xy", b"z", b"w"]
    put_buffers(stripped, paths, buffers)
    assert stripped == {"a": [1, b"xy", {"b": b"z"}], "c": b"w"}


def test_request_and_reply_round_trip():
    data, buffers = request("call", 3, "f", [b"\x00\x01", 2])
    assert data == {
        "rpc": "call",
        "id": 3,
        "name": "f",
        "args": [None, 2],
        "buffer_paths": [["args", 0]],
    }
    message = decode(data, buffers)
    assert (message.kind, message.id, message.name, message.args) == (
        "call",
        3,
        "f",
        [b"\x00\x01", 2],
    )
    assert decode(*returned(3, {"r": b"!"})).result == {"r": b"!"}


@pytest.mark.parametrize(
    "data, buffers",
    [
        ({"hello": 1}, []),
        ({"rpc": "call", "id": 1, "args": []}, []),  # no name
        ({"rpc": "call", "id": True, "name": "f"}, []),
        ({"rpc": "echo", "id": 1, "args": "x"}, []),
        (
            {"rpc": "pipe", "id": 1, "args": [None], "buffer_paths": [["args", 0]]},
            [],
        ),  # buffer missing
        ({"rpc": "pipe", "id": 1, "args": [], "buffer_paths": [["args", 5, "x"]]}, [b"1"]),
    ],
)
def test_malformed_messages_are_protocol_errors(data, buffers):
    with pytest.raises(ProtocolError):
        decode(data, buffers)


def test_batch_packs_and_unpacks_with_each_messages_buffers():
    messages = [
        request("call", 1, "f", [b"one", 2, b"two"]),
        request("call", 2, "g", []),
        returned(9, {"blob": b"three"}),
    ]
    data, buffers = pack_batch(messages)
    assert data["rpc"] == "batch" and len(data["messages"]) == 3
    assert buffers == [b"one", b"two", b"three"]
    unpacked = unpack_batch(data, buffers)
    assert unpacked == [(d, b) for d, b in messages]
    decoded = [decode(d, b) for d, b in unpacked]
    assert decoded[0].args == [b"one", 2, b"two"] and decoded[2].result == {"blob": b"three"}


def test_a_lone_message_is_not_wrapped():
    message = request("call", 1, "f", [b"x"])
    assert pack_batch([message]) == message
    assert unpack_batch(*message) == [message]
    with pytest.raises(ValueError):
        pack_batch([])


@pytest.mark.parametrize(
    "data, buffers",
    [
        ({"rpc": "batch", "messages": "nope"}, []),
        ({"rpc": "batch", "messages": [{"rpc": "call", "id": 1, "name": "f", "args": []}]}, [b"x"]),
        (
            {"rpc": "batch", "messages": [{"rpc": "pipe", "id": 1, "buffer_paths": [["args", 0]]}]},
            [],
        ),
    ],
)
def test_malformed_batches_are_protocol_errors(data, buffers):
    with pytest.raises(ProtocolError):
        unpack_batch(data, buffers)


class Wire:
    """Comm messages sent by an :class:`Outbox` or :class:`Endpoint`, recorded."""

    def __init__(self, fail_on=None):
        self.sent = []
        self.fail_on = fail_on

    def __call__(self, data, buffers):
        if self.fail_on is not None and self.fail_on in repr(data):
            raise TypeError("not JSON serializable")
        self.sent.append((data, buffers))


async def test_outbox_sends_one_message_per_turn():
    wire, errors = Wire(), []
    outbox = Outbox(wire)
    for i in range(5):
        outbox.post(*request("call", i, "f", [i]), errors.append)
    assert wire.sent == []  # nothing leaves before the end of the turn
    await asyncio.sleep(0)
    assert len(wire.sent) == 1 and len(wire.sent[0][0]["messages"]) == 5
    outbox.post(*request("call", 9, "f", []), errors.append)
    await asyncio.sleep(0)
    assert wire.sent[1][0] == {"rpc": "call", "id": 9, "name": "f", "args": []}  # alone: plain
    assert errors == []


async def test_outbox_caps_a_batch():
    wire = Wire()
    outbox = Outbox(wire, max_messages=10, max_bytes=100)
    for i in range(25):
        outbox.post(*request("call", i, "f", []), print)
    assert [len(d["messages"]) for d, _ in wire.sent] == [10, 10]  # full batches leave at once
    await asyncio.sleep(0)
    assert len(wire.sent[2][0]["messages"]) == 5
    wire.sent.clear()
    outbox.post(*request("pipe", 1, None, [b"x" * 60]), print)
    outbox.post(*request("pipe", 2, None, [b"y" * 60]), print)  # would pass 100 bytes
    await asyncio.sleep(0)
    assert [d["id"] for d, _ in wire.sent] == [1, 2]


async def test_outbox_unbatched_sends_each_message_at_once():
    wire = Wire()
    outbox = Outbox(wire, batch=False)
    for i in range(3):
        outbox.post(*request("call", i, "f", []), print)
    assert [d["id"] for d, _ in wire.sent] == [0, 1, 2]


def test_outbox_outside_a_loop_sends_at_once():
    wire = Wire()
    Outbox(wire).post(*request("call", 1, "f", []), print)
    assert [d["id"] for d, _ in wire.sent] == [1]


async def test_a_loop_in_another_thread_flushes_its_own_turn():
    """A subshell's handler (another thread, another loop) is not held by a busy main loop."""
    wire = Wire()
    outbox = Outbox(wire)
    outbox.post(*request("call", 1, "f", []), print)  # due at the end of this loop's turn

    async def in_the_subshell():
        outbox.post(*request("call", 2, "f", []), print)
        await asyncio.sleep(0)

    thread = threading.Thread(target=asyncio.run, args=(in_the_subshell(),))
    thread.start()
    thread.join()  # this loop is blocked meanwhile, as a main shell running a cell is
    assert [[d["id"] for d in data["messages"]] for data, _ in wire.sent] == [[1, 2]]
    await asyncio.sleep(0)
    assert len(wire.sent) == 1  # nothing left for this loop's flush


async def test_an_unsendable_message_fails_alone():
    wire, errors = Wire(fail_on="bad"), []
    outbox = Outbox(wire)
    outbox.post(*request("call", 1, "f", ["good"]), errors.append)
    outbox.post(*request("call", 2, "f", ["bad"]), errors.append)
    outbox.post(*request("call", 3, "f", ["good"]), errors.append)
    await asyncio.sleep(0)
    assert [d["id"] for d, _ in wire.sent] == [1, 3]
    assert [type(e) for e in errors] == [TypeError]


def linked_endpoints(handler, *, batch=True, unsendable=None):
    """Two endpoints whose comm messages reach each other one loop turn later, counted.

    ``b`` fails to encode (TypeError, as json.dumps does) a message whose repr has ``unsendable``.
    """
    loop = asyncio.get_running_loop()
    frames = {"a": 0, "b": 0}
    a = b = None

    def to(name, get_peer):
        def send(data, buffers):
            if name == "b" and unsendable is not None and unsendable in repr(data):
                raise TypeError("Object of type object is not JSON serializable")
            frames[name] += 1
            loop.call_soon(lambda: get_peer().receive(data, buffers))

        return send

    a = Endpoint(to("a", lambda: b), lambda: None, batch=batch)
    b = Endpoint(to("b", lambda: a), lambda: handler, batch=batch)
    return a, b, frames


class LocalHandler:
    def add(self, x, y):
        return x + y

    async def later(self, x):
        await asyncio.sleep(0)
        return x

    def fail(self, x):
        raise KeyError(x)

    def unsendable(self):
        return object()


async def test_many_calls_in_flight_travel_in_one_message_each_way():
    a, _, frames = linked_endpoints(LocalHandler())
    results = await asyncio.gather(*(a.request("call", "add", [i, 1], None) for i in range(500)))
    assert results == [i + 1 for i in range(500)]
    assert frames == {"a": 1, "b": 1}


async def test_batched_calls_keep_their_own_errors_and_async_answers():
    a, _, frames = linked_endpoints(LocalHandler())
    calls = [a.request("call", "fail" if i % 3 == 0 else "later", [i], None) for i in range(30)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, RemoteError) and result.message == repr(i)
        else:
            assert result == i
    assert frames["a"] == 1 and frames["b"] <= 2  # the errors at once, the async answers later


async def test_an_unsendable_result_raises_for_its_call_only():
    a, _, _ = linked_endpoints(LocalHandler(), unsendable="object at")
    results = await asyncio.gather(
        a.request("call", "unsendable", [], None),
        a.request("call", "add", [1, 2], None),
        return_exceptions=True,
    )
    assert isinstance(results[0], RemoteError) and results[0].type == "TypeError"
    assert results[1] == 3


async def test_unbatched_endpoints_send_a_message_per_call():
    a, _, frames = linked_endpoints(LocalHandler(), batch=False)
    results = await asyncio.gather(*(a.request("call", "add", [i, 1], None) for i in range(20)))
    assert results == [i + 1 for i in range(20)]
    assert frames == {"a": 20, "b": 20}


async def test_a_malformed_batch_answers_the_requests_it_names():
    wire = Wire()
    endpoint = Endpoint(wire, lambda: LocalHandler())
    endpoint.receive(
        {"rpc": "batch", "messages": [{"rpc": "call", "id": 4, "name": "add", "args": [1, 2]}]},
        [b"stray buffer"],
    )
    await asyncio.sleep(0)
    assert [(d["rpc"], d["id"]) for d, _ in wire.sent] == [("raise", 4)]


def test_batch_cap_is_bounded():
    assert 2 <= MAX_BATCH_MESSAGES <= 10_000


def test_the_codec_needs_no_event_loop():
    """Encoding and decoding run anywhere: the codec imports neither asyncio nor the endpoint."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(codec.__file__).read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {alias.name for alias in node.names}
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not [name for name in imported if "asyncio" in name or "endpoint" in name]


# -- through a real server and kernel ----------------------------------------------------------


@pytest.fixture
def channel(server_url, token, kernel, jp_asyncio_loop):
    """Open ``calc`` channels as Python clients: ``await channel(handler=...)``."""
    jp_asyncio_loop.run_until_complete(kernel.execute(KERNEL_CHANNEL))
    opened: list[Channel] = []

    async def inner(handler=None, **kwargs):
        ch = await asyncio.wait_for(
            Channel.open(server_url, kernel.id, "calc", token=token, handler=handler, **kwargs),
            TIMEOUT,
        )
        opened.append(ch)
        await ch.echo(timeout=TIMEOUT)  # the kernel has registered this client
        return ch

    yield inner

    async def close_all():
        for ch in opened:
            await asyncio.wait_for(ch.close(), TIMEOUT)

    jp_asyncio_loop.run_until_complete(close_all())


async def test_client_calls_kernel(channel):
    ch = await channel(timeout=TIMEOUT)
    assert await ch.call("add", 1, 2) == 3
    assert await ch.call("slow", 0) == "done"  # an async handler method
    assert await ch.echo(1, "two", [3], {"4": None}) == [1, "two", [3], {"4": None}]
    assert await ch.pipe(b"\x00\xffbinary") == b"\x00\xffbinary"
    assert await ch.pipe([b"chunk", b"ed"]) == b"chunked"


async def test_client_call_errors_and_timeout(channel):
    ch = await channel()
    with pytest.raises(RemoteError) as info:
        await ch.call("fail", "no good", timeout=TIMEOUT)
    assert (info.value.type, info.value.message) == ("ValueError", "no good")
    with pytest.raises(RemoteError) as info:
        await ch.call("nope", timeout=TIMEOUT)
    assert info.value.type == "AttributeError"
    with pytest.raises(RemoteError):
        await ch.call("_private", timeout=TIMEOUT)
    with pytest.raises(TimeoutError):
        await ch.call("slow", 30, timeout=0.3)
    assert await ch.call("add", 2, 2, timeout=TIMEOUT) == 4  # still usable


async def test_binary_arguments_and_results_are_buffers(channel):
    ch = await channel(timeout=TIMEOUT)
    payload = bytes(range(256)) * 1024
    result = await ch.call_with_stream("measure", payload, "blob")
    assert result == {"label": "blob", "size": len(payload), "reversed": payload[::-1]}


class ClientHandler:
    def __init__(self):
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    def double(self, x):
        return 2 * x

    async def later(self, x):
        await asyncio.sleep(0)
        return x

    def fail(self):
        raise KeyError("client side")

    async def hang(self):
        self.called.set()
        await self.release.wait()
        return "too late"

    def name(self):
        return "second"


async def traffic(jp_fetch, kernel) -> tuple[int, int]:
    """Comm messages to and from the kernel so far, as the server counts them."""
    response = await jp_fetch("api", "transports", "status")
    counts = json.loads(response.body)["kernels"][kernel.id]
    return counts["messages_to_kernel"], counts["messages_from_kernel"]


async def test_a_thousand_concurrent_calls_from_the_client(channel, kernel, jp_fetch):
    ch = await channel(timeout=TIMEOUT)
    sent, received = await traffic(jp_fetch, kernel)
    results = await asyncio.gather(
        *(ch.call("add_or_fail", i, 1) for i in range(1000)), return_exceptions=True
    )
    for i, result in enumerate(results):
        if i % 7 == 0:
            assert isinstance(result, RemoteError)
            assert (result.type, result.message) == ("ValueError", f"{i} is a multiple of 7")
        else:
            assert result == i + 1
    sent_now, received_now = await traffic(jp_fetch, kernel)
    assert sent_now - sent <= 2  # batched: not a comm message per call
    assert received_now - received <= 10


async def test_a_thousand_concurrent_calls_unbatched(channel, kernel, jp_fetch):
    ch = await channel(timeout=TIMEOUT, batch=False)
    sent, _ = await traffic(jp_fetch, kernel)
    results = await asyncio.gather(*(ch.call("add", i, 1) for i in range(1000)))
    assert results == [i + 1 for i in range(1000)]
    assert (await traffic(jp_fetch, kernel))[0] - sent == 1000


async def test_kernel_calls_200_client_handlers_concurrently(channel, kernel):
    first = await channel(handler=ClientHandler())
    await channel(handler={"name": lambda: "other"})
    first_id = (await kernel.evaluate("list(channel.clients)"))[0]
    await kernel.execute(
        "import asyncio\n"
        f"many = await asyncio.gather(*(channel.call('double', i, to={first_id!r}, timeout=20)"
        " for i in range(200)))\n"
        "many_async = await asyncio.gather(*(channel.call('later', i, timeout=20) for i in range(200)))"
    )
    assert await kernel.evaluate("many") == [2 * i for i in range(200)]
    assert await kernel.evaluate("many_async") == list(range(200))
    assert first.comm.close_code is None


async def test_kernel_calls_client_from_a_handler(channel):
    ch = await channel(handler=ClientHandler(), timeout=TIMEOUT)
    assert await ch.call("ask", "double", [21], 3, None) == {"result": 42}
    assert await ch.call("ask", "later", ["async"], 3, None) == {"result": "async"}
    assert await ch.call("ask", "fail", [], 3, None) == {
        "raised": "RemoteError",
        "message": "KeyError: 'client side'",
    }
    assert await ch.call("ask", "hang", [], 0.3, None) == {
        "raised": "TimeoutError",
        "message": "no answer to 'hang' within 0.3 s",
    }


async def test_kernel_awaits_client_in_a_cell(channel, kernel):
    await channel(handler=ClientHandler())
    # a cell that awaits: the kernel keeps dispatching comm messages while the cell waits
    await kernel.execute("result = await channel.call('double', 4, timeout=10)")
    assert await kernel.evaluate("result") == 8
    await kernel.execute("echoed = await channel.echo(1, [2], timeout=10)")
    assert await kernel.evaluate("echoed") == [1, [2]]
    await kernel.execute("piped = await channel.pipe(b'abc', timeout=10)")
    assert await kernel.evaluate("piped.decode()") == "abc"


async def test_to_all_and_to_a_client(channel, kernel):
    first = await channel(handler=ClientHandler())
    second = await channel(handler={"name": lambda: "other"})
    ids = await kernel.evaluate("list(channel.clients)")
    assert len(ids) == 2
    await kernel.execute("everyone = await channel.call('name', to='all', timeout=10)")
    results = await kernel.evaluate("{k: repr(v) for k, v in everyone.items()}")
    assert results == {ids[0]: "'second'", ids[1]: "'other'"}
    await kernel.execute(f"one = await channel.call('name', to={ids[1]!r}, timeout=10)")
    assert await kernel.evaluate("one") == "other"
    await kernel.execute(
        "try:\n    await channel.call('name', to='nobody')\nexcept Exception as e:\n    err = type(e).__name__"
    )
    assert await kernel.evaluate("err") == "NoClient"
    assert first is not second


async def test_any_moves_on_when_its_client_leaves(channel, kernel):
    leaving = ClientHandler()
    first = await channel(handler=leaving)
    await channel(handler={"hang": lambda: "answered by the second"})
    await kernel.execute("task = channel.call('hang', timeout=20)")  # goes to the oldest client
    await asyncio.wait_for(leaving.called.wait(), TIMEOUT)
    await first.close()
    await kernel.execute("moved = await task")
    assert await kernel.evaluate("moved") == "answered by the second"


async def test_any_with_no_client_raises_no_client(channel, kernel):
    await kernel.execute(
        "try:\n    await channel.call('name', timeout=0.2)\nexcept Exception as e:\n    err = (type(e).__name__, str(e))"
    )
    assert await kernel.evaluate("err") == ["NoClient", "no client of channel 'calc' could answer"]


async def test_client_sees_connection_lost_when_channel_closes(channel, kernel):
    ch = await channel(handler=ClientHandler())
    pending = asyncio.ensure_future(ch.call("slow", 30))
    await ch.echo(timeout=TIMEOUT)  # the slow call reached the kernel before this answer
    await kernel.execute("channel.close()")
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(pending, TIMEOUT)
    assert ch.comm.close_code == 1000


async def test_failing_the_pending_calls_keeps_the_conversation():
    sent = []
    endpoint = Endpoint(lambda data, buffers: sent.append(data), lambda: None, batch=False)
    call = asyncio.ensure_future(endpoint.request("call", "f", [], timeout=None))
    await asyncio.sleep(0)
    endpoint.fail_pending(ConnectionLost("reset"))
    with pytest.raises(ConnectionLost):
        await call
    assert endpoint.closed is None
    again = asyncio.ensure_future(endpoint.request("call", "g", [], timeout=None))
    await asyncio.sleep(0)
    endpoint.receive({"rpc": "return", "id": sent[-1]["id"], "result": 7})
    assert await again == 7


def test_no_client_is_a_connection_error():
    assert issubclass(NoClient, ConnectionError) and issubclass(ConnectionLost, ConnectionError)


def test_kernel_side_imports_neither_jupyter_server_nor_tornado():
    code = (
        "import sys, jupyter_transports.kernel, jupyter_transports.rpc, jupyter_transports.protocol\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'jupyter_server', 'tornado', 'zmq'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=TIMEOUT
    )
    assert out.stdout.strip() == "[]"


async def test_attaching_again_and_again_never_hangs(kernel, server_url, token):
    """Each round starts a new bridge whose attach asks the kernel for its comms (a shell reply).

    Regression: zmq.asyncio could lose the wakeup of a shell reply sent while the bridge was
    also sending, leaving the handshake waiting for ``kernel_timeout`` (about 1 round in 30).
    """
    await kernel.execute(
        "from comm import create_comm\nshared_comm = create_comm(target_name='t', data={})"
    )
    comm_id = await kernel.evaluate("shared_comm.comm_id")
    await kernel.execute(KERNEL_CHANNEL)
    for _ in range(60):
        ch = await asyncio.wait_for(
            Channel.open(server_url, kernel.id, "calc", token=token), TIMEOUT
        )
        assert await ch.call("add", 1, 1, timeout=TIMEOUT) == 2
        attached = await asyncio.wait_for(
            CommClient.attach(server_url, kernel.id, comm_id, token=token), 5
        )
        await asyncio.wait_for(attached.close(), TIMEOUT)
        await asyncio.wait_for(ch.close(), TIMEOUT)


async def test_a_newer_channel_of_the_same_name_survives_closing_the_older(channel, kernel):
    await kernel.execute("older = channel\nchannel = Channel('calc', Handler())\nolder.close()")
    ch = await channel()
    assert await ch.call("add", 3, 4, timeout=TIMEOUT) == 7
    await kernel.execute(
        "try:\n    await channel.call('x', to=['a'])\nexcept TypeError as e:\n    err = str(e)"
    )
    assert "client id" in await kernel.evaluate("err")
