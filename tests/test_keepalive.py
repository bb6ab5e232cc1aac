"""A connection that dies without a word is noticed by the keep-alive pings (issue 13, item 10)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from jupyter_transports.client import CommClient, Refused
from jupyter_transports.websocket import CommSocketHandler

from .conftest import TIMEOUT
from .proxies import Proxy, proxied


@pytest.fixture
def frozen_url(server_url, jp_asyncio_loop):
    """(a proxy that can go silent, the server's URL through it)."""
    yield from proxied(server_url, jp_asyncio_loop, Proxy)


@pytest.mark.parametrize(
    "transports_config", [{"socket_ping_interval": 0.2, "socket_ping_timeout": 0.6}]
)
async def test_a_silent_network_death_closes_the_comm_within_the_ping_timeout(
    kernel, token, frozen_url
):
    proxy, url = frozen_url
    comm = await CommClient.open(url, kernel.id, "echo", token=token, session=False)
    await comm.send("alive")
    assert (await asyncio.wait_for(comm.recv(), TIMEOUT)).data == "alive"
    proxy.frozen = True  # no more bytes either way, and no FIN
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await kernel.comm_ids("echo"):  # the owner's socket is closed: its comm with it
        assert loop.time() - start < 3, "the server did not notice the dead connection"
        await asyncio.sleep(0.1)
    comm.start_closing()


async def test_closed_sockets_are_released_and_queries_are_capped(
    kernel, server_url, token, caplog
):
    """Churn: sockets opened and closed with long query strings leave nothing behind (the
    keep-alive's callback used to hold each for a ping interval); longer ones are 414, logged
    with their URI cut short."""
    data = {"pad": "x" * 15_000}
    for _ in range(200):
        comm = await CommClient.open(server_url, kernel.id, "echo", token=token, data=data)
        await comm.close()
    # Closing handshakes and their callbacks may hold a few for a moment on a loaded machine;
    # the keep-alive's timer held every one for a ping interval (10 s), and a task or timer the
    # server made during its request (a session's linger) for up to session_timeout (60 s).
    loop = asyncio.get_running_loop()
    start = loop.time()
    while len(held := [o for o in gc.get_objects() if isinstance(o, CommSocketHandler)]) > 5:
        assert loop.time() - start < 5, f"{len(held)} of 200 closed sockets still held"
        del held
        await asyncio.sleep(0.1)
        gc.collect()

    with pytest.raises(Refused) as refused:
        await CommClient.open(
            server_url, kernel.id, "echo", token=token, data={"pad": "x" * 60_000}
        )
    assert refused.value.status == 414
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("414 ")]
    assert logged and all(len(line) < 1500 for line in logged)  # not 60 KB a refusal


@pytest.mark.parametrize("session", [False, True], ids=["plain", "session"])
async def test_closed_sockets_are_freed_without_the_cyclic_collector(
    kernel, server_url, token, session
):
    """A closed socket holds nothing that holds it back: refcounting frees it at once. Left to
    the cyclic collector, 5,000 closed sockets with 15 KB queries grew a server by 54 MiB
    (``python -m benchmarks.churn``): full collections are rare in a large process."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            comm = await CommClient.open(
                server_url, kernel.id, "echo", token=token, session=session, pad="x" * 1000
            )
            await comm.send("ping")
            assert (await asyncio.wait_for(comm.recv(), TIMEOUT)).data == "ping"
            await comm.close()
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (held := sum(isinstance(o, CommSocketHandler) for o in gc.get_objects())) > 1:
            assert loop.time() - start < 5, f"{held} of 20 closed sockets wait for the collector"
            await asyncio.sleep(0.1)  # closing handshakes still under way
    finally:
        gc.enable()
