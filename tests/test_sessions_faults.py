"""Durable sessions under fault injection: a TCP proxy of the test's own cuts the connection
again and again while numbered messages flow, and the Python client resumes every time."""

from __future__ import annotations

import asyncio
import random

import pytest

from jupyter_transports.client import CommClient
from jupyter_transports.rpc_client import Channel

from .conftest import TIMEOUT
from .proxies import CuttingProxy, proxied

MESSAGES = 10_000
CUTS = 50

KERNEL_CODE = """
import threading, time
from comm import create_comm, get_comm_manager
from jupyter_transports.kernel import Channel as _Channel

COLLECTED = []

def collect(comm, open_msg):
    comm.on_msg(lambda msg: COLLECTED.append(msg["content"]["data"]))

get_comm_manager().register_target("collect", collect)
numbers = create_comm(target_name="numbers")

def send_numbers(count):
    # paced, so the kernel's iopub never runs its high-water mark over (see the contract)
    for i in range(count):
        numbers.send(i)
        if i % 20 == 19:
            time.sleep(0.01)  # about 5 s in all: time for 50 cuts and reconnections

class Counted:
    calls = 0
    def add(self, a, b):
        Counted.calls += 1
        return a + b

rpc = _Channel("counted", Counted())
"""


@pytest.fixture
def proxied_url(server_url, jp_asyncio_loop):
    """(a cutting proxy, the server's URL through it)."""
    yield from proxied(server_url, jp_asyncio_loop, CuttingProxy)


async def test_kernel_to_client_survives_50_cuts(kernel, token, proxied_url):
    proxy, url = proxied_url
    await kernel.execute(KERNEL_CODE)
    comm_id = await kernel.evaluate("numbers.comm_id")
    comm = await CommClient.attach(url, kernel.id, comm_id, token=token)
    assert comm.resumable is not None
    kernel.client.execute(f"send_numbers({MESSAGES})")
    rng = random.Random(11)
    cut_at = sorted(rng.sample(range(1, MESSAGES - 100), CUTS))
    received = []
    async with asyncio.timeout(TIMEOUT * 4):
        while len(received) < MESSAGES:
            received.append((await comm.recv()).data)
            if cut_at and len(received) >= cut_at[0] and proxy.cut():
                cut_at.pop(0)  # else: still reconnecting; cut once it is back
    assert proxy.cuts == CUTS
    assert received == list(range(MESSAGES))  # nothing lost, nothing twice, in order
    assert 0 < comm.reconnects <= CUTS  # a cut during a handshake costs one more attempt
    assert comm.reason is None
    await comm.close()


@pytest.mark.timeout(300)
async def test_client_to_kernel_survives_50_cuts_and_keeps_its_comm(kernel, token, proxied_url):
    proxy, url = proxied_url
    await kernel.execute(KERNEL_CODE)
    comm = await CommClient.open(url, kernel.id, "collect", token=token)
    assert comm.resumable is not None
    first_comm_id = comm.comm_id
    rng = random.Random(12)
    cut_at = sorted(rng.sample(range(1, MESSAGES), CUTS))
    for i in range(MESSAGES):
        await comm.send(i)
        if cut_at and i >= cut_at[0] and proxy.cut():
            cut_at.pop(0)
        if i % 20 == 19:
            await asyncio.sleep(0.01)  # about 5 s in all: time for 50 cuts and reconnections
    # the kernel handles the comm messages in turn (1 to 3 ms each), then this request
    async with asyncio.timeout(250):
        while await kernel.evaluate("len(COLLECTED)", timeout=250) < MESSAGES:
            await asyncio.sleep(0.5)
    assert await kernel.evaluate("COLLECTED") == list(range(MESSAGES))  # each exactly once
    assert comm.comm_id == first_comm_id
    assert await kernel.comm_ids("collect") == [first_comm_id]  # the same comm, never reopened
    assert proxy.cuts == CUTS
    assert comm.reason is None
    await comm.close()


async def test_rpc_calls_in_flight_across_cuts_complete_exactly_once(kernel, token, proxied_url):
    proxy, url = proxied_url
    await kernel.execute(KERNEL_CODE)
    channel = await Channel.open(url, kernel.id, "counted", token=token, timeout=TIMEOUT)
    calls = [asyncio.ensure_future(channel.call("add", i, 1)) for i in range(300)]
    for _ in range(5):
        await asyncio.sleep(0.02)
        proxy.cut()
    assert await asyncio.gather(*calls) == [i + 1 for i in range(300)]
    assert await kernel.evaluate("Counted.calls") == 300
    await channel.close()
