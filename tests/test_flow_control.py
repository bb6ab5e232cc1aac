"""A client that sends faster than it reads the answers is paced, not dropped (issue 11)."""

from __future__ import annotations

import asyncio
import os

import pytest
import websockets

from jupyter_transports.client import comm_url
from jupyter_transports.framing import pack_binary, unpack_binary

from .conftest import TIMEOUT, start_cell

MiB = 1024 * 1024
REQUESTS = 64


@pytest.mark.parametrize("transports_config", [{"client_buffer_bytes": 2 * MiB}])
async def test_64_large_echoes_in_flight_are_paced_not_closed(server_url, token, kernel):
    """64 x 1 MiB echo requests sent at once by a third-party client that reads slowly: the
    answers back up far past client_buffer_bytes, and the server stops reading the client
    instead of closing it with 1013."""
    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    payloads = [os.urandom(MiB) for _ in range(REQUESTS)]
    async with websockets.connect(url, max_size=None, max_queue=1) as ws:

        async def send_all() -> None:
            for i, payload in enumerate(payloads):
                await ws.send(pack_binary(str(i).encode(), [payload]))

        async def read_slowly() -> list[bytes]:
            echoed = []
            for _ in range(REQUESTS):
                frame = await ws.recv()
                _, buffers = unpack_binary(frame)
                echoed.append(bytes(buffers[0]))
                await asyncio.sleep(0.01)  # slower than the kernel answers
            return echoed

        async with asyncio.timeout(TIMEOUT * 2):
            _, echoed = await asyncio.gather(send_all(), read_slowly())
        assert echoed == payloads  # every answer, intact, in order
        assert ws.close_code is None  # still open: paced, not dropped


@pytest.mark.parametrize(
    "transports_config",
    [{"client_in_flight_bytes": 4 * MiB, "kernel_in_flight_bytes": 6 * MiB}],
)
async def test_a_busy_kernel_holds_no_more_than_the_in_flight_bound(
    server_url, token, kernel, jp_serverapp
):
    """50 x 1 MiB sent to a kernel busy with a cell: the server hands it at most
    client_in_flight_bytes (and one frame) and stops reading the sender meanwhile, rather than
    queue all 50 MiB in the kernel; once the cell ends, all 50 come back, in order."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    url = comm_url(server_url, kernel.id, "targets", "echo", token=token)
    payloads = [os.urandom(MiB) for _ in range(50)]
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send('"ready"')
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == '"ready"'
        await start_cell(kernel, "import time; time.sleep(3)")

        async def send_all() -> None:
            for i, payload in enumerate(payloads):
                await ws.send(pack_binary(str(i).encode(), [payload]))

        sending = asyncio.create_task(send_all())
        await asyncio.sleep(1.5)  # the cell still runs
        in_flight = app.bridges.bridges[kernel.id].in_flight.bytes
        assert 3 * MiB < in_flight <= 5 * MiB + 4096, in_flight
        assert not sending.done()  # paced: the rest waits in the sender and in TCP's buffers

        for i, payload in enumerate(payloads):
            head, buffers = unpack_binary(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert (bytes(head), bytes(buffers[0])) == (str(i).encode(), payload)
        await asyncio.wait_for(sending, TIMEOUT)
