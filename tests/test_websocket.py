"""The WebSocket endpoints against a real server and real ipykernel kernels."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from array import array

import pytest
import websockets

from jupyter_transports.client import CommClient, Refused, comm_url
from jupyter_transports.errors import CloseCode

from .conftest import TIMEOUT, closed, recv

WIDGET = """
from comm import create_comm
widget = create_comm(target_name="test.widget", data={})
def reply_to_sender(msg):
    sender = msg["metadata"]["transports"]["client"]
    widget.send({"to_you": sender}, metadata={"transports": {"to": [sender]}})
widget.on_msg(reply_to_sender)
"""


async def test_echo_keeps_order(open_comm):
    comm = await open_comm("echo")
    for i in range(200):
        await comm.send({"i": i})
    assert [await recv(comm) for _ in range(200)] == [{"i": i} for i in range(200)]


async def test_buffer_round_trip(open_comm):
    comm = await open_comm("echo")
    payload = bytes(range(256)) * 4096  # 1 MiB
    floats = memoryview(array("d", range(10_000)))  # 80,000 bytes in 10,000 elements
    buffers = [b"odd", payload, b"second", floats]  # large ones at unaligned offsets
    await comm.send({"kind": "blob"}, buffers=buffers)
    message = await asyncio.wait_for(comm.recv(), TIMEOUT)
    assert message.data == {"kind": "blob"}
    assert message.buffers == [bytes(b) for b in buffers]


async def test_kernel_sees_open_data_query_and_identity(open_comm):
    comm = await open_comm("whoami", data={"x": [1, 2]}, color="blue", color2="red")
    opened = await recv(comm)
    assert opened["data"] == {"x": [1, 2]}
    who = opened["metadata"]["transports"]
    assert isinstance(who["client"], str) and who["client"]
    assert isinstance(who["user"], str) and who["user"]
    assert who["query"] == {
        "data": json.dumps({"x": [1, 2]}),
        "color": "blue",
        "color2": "red",
        "frames": "json",
    }

    await comm.send("hello")
    said = await recv(comm)
    assert said["data"] == "hello"
    assert said["metadata"]["transports"] == {"client": who["client"], "user": who["user"]}


async def test_token_in_query_is_not_passed_on(server_url, token, kernel):
    url = comm_url(server_url, kernel.id, "targets", "whoami", token=token)
    comm = await CommClient.connect(url)
    opened = await recv(comm)
    assert "token" not in opened["metadata"]["transports"]["query"]
    await comm.close()


async def test_fan_out_to_attached_sockets_and_unicast(kernel, attach):
    await kernel.execute(WIDGET)
    comm_id = await kernel.evaluate("widget.comm_id")
    sockets = [await attach(comm_id) for _ in range(3)]

    await kernel.execute("for i in range(50): widget.send({'i': i})")
    for socket in sockets:
        assert [await recv(socket) for _ in range(50)] == [{"i": i} for i in range(50)]

    await sockets[1].send({"ping": True})
    reply = await recv(sockets[1])
    assert set(reply) == {"to_you"}
    await kernel.execute("widget.send('after')")
    for socket in (sockets[0], sockets[2]):
        assert await recv(socket) == "after"  # the unicast reply never reached them
    assert await recv(sockets[1]) == "after"


async def test_attached_socket_closed_when_owner_leaves(open_comm, attach, kernel):
    owner = await open_comm("whoami")
    comm_id = (await recv(owner))["comm_id"]
    follower = await attach(comm_id)
    await owner.send("to everyone")
    assert (await recv(follower))["data"] == "to everyone"

    await owner.close()
    code, reason = await closed(follower)
    assert code == CloseCode.COMM_CLOSED
    assert "opened it" in reason


async def test_comms_are_isolated_and_other_output_is_not_routed(open_comm, kernel):
    first, second = await open_comm("echo"), await open_comm("echo")
    await kernel.execute("print('not for sockets')")
    await first.send("one")
    await second.send("two")
    assert await recv(first) == "one"
    assert await recv(second) == "two"
    await first.send("again")
    assert await recv(first) == "again"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(second.recv(), 0.5)


async def test_no_token_is_refused(server_url, kernel):
    with pytest.raises(Refused) as info:
        await CommClient.open(server_url, kernel.id, "echo", token=None)
    assert info.value.status == 403


async def test_unknown_kernel_and_comm_are_404(server_url, token, kernel):
    with pytest.raises(Refused) as info:
        await CommClient.open(server_url, str(uuid.uuid4()), "echo", token=token)
    assert info.value.status == 404
    with pytest.raises(Refused) as info:
        await CommClient.attach(server_url, kernel.id, "no-such-comm", token=token)
    assert info.value.status == 404


async def test_bad_handshake_parameters_are_400(server_url, token, kernel):
    for params in ({"data": "[1, 2]"}, {"data": "{not json"}, {"frames": "xml"}):
        with pytest.raises(Refused) as info:
            await CommClient.connect(
                comm_url(server_url, kernel.id, "targets", "echo", **params), token=token
            )
        assert info.value.status == 400


async def test_unknown_target_closes_4404(open_comm):
    comm = await open_comm("no.such.target")
    code, _ = await closed(comm)
    assert code == CloseCode.NO_SUCH_COMM


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        b"\x00\x00\x00\x05short",
        b"\x00\x00\x00\x01\x00\x00\x00\x08\xff",
        "[" * 990 + "]" * 990,  # was a RecursionError: the socket aborted (1006)
        "[NaN]",
        b"\x00\x0f\x42\x40" + bytes(4_000_000),  # a million empty parts: held the loop 14 s
    ],
    ids=["not-json", "short", "not-utf8", "nested", "nan", "million-parts"],
)
async def test_undecodable_frame_closes_1007(open_comm, frame):
    comm = await open_comm("echo")
    await comm.send_frame(frame)
    code, _ = await closed(comm)
    assert code == CloseCode.BAD_FRAME
    other = await open_comm("echo")  # the server keeps serving
    await other.send("still here")
    assert await recv(other) == "still here"


@pytest.mark.parametrize("frames", ["json", "text"])
async def test_a_text_frame_that_is_not_utf8_closes_1007(server_url, token, kernel, frames):
    """Not the abort (1006) tornado makes of it, which clients take for a network failure."""
    url = comm_url(server_url, kernel.id, "targets", "echo", token=token, frames=frames)
    async with websockets.connect(url) as ws:
        await ws.send(b'"\xff"', text=True)
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.BAD_FRAME


@pytest.mark.parametrize("transports_config", [{"max_message_bytes": 1024}])
async def test_frame_over_limit_closes_1009(open_comm, kernel):
    comm = await open_comm("echo")
    await comm.send("x" * 1000)
    assert await recv(comm) == "x" * 1000
    await comm.send("x" * 2000)
    code, _ = await closed(comm)
    assert code == CloseCode.TOO_BIG
    other = await open_comm("echo")
    await other.send("small")
    assert await recv(other) == "small"


@pytest.mark.parametrize("transports_config", [{"allowed_targets": ["echo"]}])
async def test_target_not_allowed_is_403(open_comm):
    await open_comm("echo")
    with pytest.raises(Refused) as info:
        await open_comm("whoami")
    assert info.value.status == 403


async def test_restart_closes_1012(open_comm, jp_fetch, kernel):
    comm = await open_comm("echo")
    await comm.send("open")  # the kernel has the comm: a comm_open cut short is a refusal
    assert await recv(comm) == "open"
    await jp_fetch("api", "kernels", kernel.id, "restart", method="POST", body="")
    code, _ = await closed(comm)
    assert code == CloseCode.RESTARTING


async def test_forced_restart_closes_1012(open_comm, jp_serverapp, kernel):
    comm = await open_comm("echo")
    await comm.send("open")  # the kernel has the comm: a comm_open cut short is a refusal
    assert await recv(comm) == "open"
    await jp_serverapp.kernel_manager.restart_kernel(kernel.id, now=True)  # no shutdown_reply
    code, _ = await closed(comm)
    assert code == CloseCode.RESTARTING


async def test_shutdown_closes_1001(open_comm, jp_fetch, kernel):
    comm = await open_comm("echo")
    await comm.send("open")  # the kernel has the comm: a comm_open cut short is a refusal
    assert await recv(comm) == "open"
    await jp_fetch("api", "kernels", kernel.id, method="DELETE")
    code, _ = await closed(comm)
    assert code == CloseCode.GOING_AWAY


async def test_no_comm_left_behind(open_comm, kernel):
    sockets = [await open_comm("echo") for _ in range(30)]
    for socket in sockets:
        await socket.send("hi")
        assert await recv(socket) == "hi"
    assert len(await kernel.comm_ids("echo")) == 30
    for socket in sockets:
        await socket.close()
    await kernel.execute("pass")  # the comm_close messages were handled before this
    assert await kernel.comm_ids("echo") == []


async def test_server_stop_closes_comms_1001(open_comm, kernel, jp_serverapp):
    comm = await open_comm("echo")
    await comm.send("hi")
    assert await recv(comm) == "hi"
    await jp_serverapp.extension_manager.stop_all_extensions()
    code, _ = await closed(comm)
    assert code == CloseCode.GOING_AWAY
    await kernel.execute("pass")
    assert await kernel.comm_ids("echo") == []


@pytest.mark.parametrize("transports_config", [{"client_buffer_bytes": 256 * 1024}])
async def test_slow_client_closed_1013_and_others_served(
    server_url, token, kernel, open_comm, attach
):
    fast = await open_comm("echo")  # another comm of the same kernel
    url = comm_url(server_url, kernel.id, "targets", "flood", token=token)
    async with websockets.connect(url, max_queue=1, max_size=None) as slow:  # reads nothing
        flood_id = await kernel.opened_comm("flood")
        follower = await attach(flood_id, session=False)  # v1: a drop is final
        await follower.send({"count": 200, "size": 128 * 1024})

        # The owner, which reads nothing, falls behind a broadcast it did not cause: it is
        # dropped, and its comm ends with it (the follower, in the same event loop as the
        # server, may itself have fallen behind first).
        code, _ = await closed(follower)
        assert code in (CloseCode.COMM_CLOSED, CloseCode.TOO_SLOW)
        received = 0
        with pytest.raises(websockets.ConnectionClosed) as info:
            async with asyncio.timeout(TIMEOUT):
                async for _ in slow:
                    received += 1
        assert info.value.rcvd.code == CloseCode.TOO_SLOW
        assert received < 200
    await fast.send("unaffected")
    assert await recv(fast) == "unaffected"


@pytest.mark.parametrize("transports_config", [{"client_buffer_bytes": 64 * 1024}])
async def test_kernel_message_larger_than_client_buffer_is_delivered(open_comm):
    comm = await open_comm("flood")
    await comm.send({"count": 2, "size": 1024 * 1024})
    assert [len((await recv(comm))["pad"]) for _ in range(2)] == [1024 * 1024] * 2


async def test_lone_surrogate_is_a_bad_frame(open_comm):
    comm = await open_comm("echo")
    await comm.send_frame('{"text": "\\ud800"}')
    code, _ = await closed(comm)
    assert code == CloseCode.BAD_FRAME
    paired = await open_comm("echo", session=False)  # a raw v1 frame follows
    await paired.send_frame('"\\ud83d\\ude00"')  # a pair is fine: one emoji
    assert await recv(paired) == "\U0001f600"


ELSEWHERE = "http://elsewhere.example"


@pytest.mark.parametrize(
    ("server_config", "elsewhere_allowed"),
    [({}, False), ({"ServerApp": {"allow_origin": ELSEWHERE}}, True)],
)
async def test_origin_checked_for_cookie_auth_as_jupyter_does(
    jp_fetch, server_url, kernel, elsewhere_allowed
):
    response = await jp_fetch("api", "status")  # token-authenticated: sets the login cookie
    cookie = "; ".join(c.split(";", 1)[0] for c in response.headers.get_list("Set-Cookie"))
    server_url = server_url.replace("localhost", "127.0.0.1")  # the host the cookie is named for
    url = comm_url(server_url, kernel.id, "targets", "echo")
    host = url.split("/")[2]

    async def connect(origin: str) -> CommClient:
        headers = {"Cookie": cookie, "Origin": origin}
        return await CommClient.connect(url, headers=headers)

    if elsewhere_allowed:
        await (await connect(ELSEWHERE)).close()
    else:
        with pytest.raises(Refused) as info:
            await connect(ELSEWHERE)
        assert info.value.status == 403
    same_origin = await connect(f"http://{host}")
    await same_origin.send("cookie ok")
    assert await recv(same_origin) == "cookie ok"
    await same_origin.close()


@pytest.mark.parametrize("tail", ["comms/%FF", "targets/%FF", "targets/echo?token=%FF"])
async def test_undecodable_paths_are_400_without_a_traceback(
    server_url, token, kernel, caplog, tail
):
    url = f"{comm_url(server_url, kernel.id)}/{tail}"
    if "?" not in tail:
        url += f"?token={token}"
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url)
    assert info.value.response.status_code == 400
    assert "Traceback" not in caplog.text


async def test_a_message_in_fragments_arrives_whole(server_url, token, kernel):
    """Browsers send a large message as 128 KiB frames: the server gathers them into one."""
    from jupyter_transports.framing import pack_binary, unpack_binary

    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    payload = bytes(range(256)) * 4096  # 1 MiB
    frame = pack_binary(b'{"n": 1}', [payload])
    async with websockets.connect(url, max_size=None) as socket:
        fragments = [frame[i : i + 128 * 1024] for i in range(0, len(frame), 128 * 1024)]
        await socket.send(fragments)  # a list of bytes goes as one fragmented message
        head, buffers = unpack_binary(await asyncio.wait_for(socket.recv(), TIMEOUT))
        assert json.loads(bytes(head)) == {"n": 1} and bytes(buffers[0]) == payload
        await socket.send(["{", '"n": ', "2}"])  # a fragmented text message
        assert json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT)) == {"n": 2}


async def test_small_fragmented_messages_do_not_fill_the_buffer_pool(
    jp_serverapp, server_url, token, kernel
):
    """Each fragmented message takes a pooled buffer of 64 KiB at least: the pool keeps a few
    reusable buffers, not one per small message."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    async with websockets.connect(url) as socket:
        for n in range(200):
            await socket.send(["{", f'"n": {n}', "}"])
        for n in range(200):
            assert json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT)) == {"n": n}
    assert 1 <= len(app.read_buffers.buffers) <= 2
    assert all(len(buffer) >= 64 * 1024 for buffer in app.read_buffers.buffers)


async def test_large_messages_in_flight_each_arrive_as_sent(server_url, token, kernel):
    """Large messages are read into reused buffers: eight distinct 1 MiB messages sent without
    waiting, on two sockets at once, each come back byte for byte (one buffer reused too early
    would show here as another message's bytes), as do a large text frame and a message whose
    fragments are small and large in turn."""
    from jupyter_transports.framing import pack_binary, unpack_binary

    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    sockets = [await websockets.connect(url, max_size=None) for _ in range(2)]
    try:
        sent = {(s, i): os.urandom(1 << 20) for s in range(len(sockets)) for i in range(4)}
        for (s, i), payload in sent.items():
            await sockets[s].send(pack_binary(json.dumps({"i": i}).encode(), [payload]))
        for s, socket in enumerate(sockets):
            for i in range(4):
                head, buffers = unpack_binary(await asyncio.wait_for(socket.recv(), TIMEOUT))
                assert json.loads(bytes(head)) == {"i": i}
                assert bytes(buffers[0]) == sent[s, i]
        text = {"text": "é" * 100_000}  # 200 KB of UTF-8 in one text frame
        await sockets[0].send(json.dumps(text, ensure_ascii=False))
        assert json.loads(await asyncio.wait_for(sockets[0].recv(), TIMEOUT)) == text
        payload = os.urandom(300_000)
        frame = pack_binary(b'{"n": 3}', [payload])
        await sockets[1].send(
            [frame[:10], frame[10:200_000], frame[200_000:200_001], frame[200_001:]]
        )
        head, buffers = unpack_binary(await asyncio.wait_for(sockets[1].recv(), TIMEOUT))
        assert json.loads(bytes(head)) == {"n": 3} and bytes(buffers[0]) == payload
    finally:
        for socket in sockets:
            await socket.close()


@pytest.mark.parametrize(
    "server_config",
    [{"ServerApp": {"websocket_compression_options": {}}}],
)
async def test_compressed_messages_large_and_in_fragments(server_url, token, kernel):
    """With per-message deflate on (ServerApp.websocket_compression_options), large and
    fragmented messages, which are read into reused buffers, are inflated whole."""
    from jupyter_transports.framing import pack_binary, unpack_binary

    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    async with websockets.connect(url, max_size=None) as socket:  # offers permessage-deflate
        assert "permessage-deflate" in socket.response.headers["Sec-WebSocket-Extensions"]
        payload = os.urandom(200_000) + bytes(300_000)
        frame = pack_binary(b'{"n": 1}', [payload])
        await socket.send(frame)
        await socket.send([frame[:100_000], frame[100_000:]])
        for _ in range(2):
            head, buffers = unpack_binary(await asyncio.wait_for(socket.recv(), TIMEOUT))
            assert json.loads(bytes(head)) == {"n": 1} and bytes(buffers[0]) == payload
