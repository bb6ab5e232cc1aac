"""Comms served by a kernel subshell answer while a cell runs; others wait for the cell (JEP 91)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import TIMEOUT, recv, start_cell

THREADED = "probe"  # opted in to the subshell
PLAIN = "probe_main"  # the same handler, served by the main shell

# A cell that keeps the main shell busy sets RUNNING while it sleeps; the probe answers each
# message with RUNNING as its handler saw it, so which shell ran the handler shows in the reply.
PROBE = f"""
RUNNING = False

def probe(comm, open_msg):
    comm.send({{"opened": True}})
    comm.on_msg(lambda msg: comm.send({{"running": RUNNING}}))

for _name in ({THREADED!r}, {PLAIN!r}):
    get_comm_manager().register_target(_name, probe)
"""


def busy_cell(seconds: float) -> str:
    return f"""
import time
RUNNING = True
try:
    time.sleep({seconds})
finally:
    RUNNING = False
"""


@pytest.fixture
def transports_config() -> dict[str, Any]:
    return {"subshell_targets": [THREADED], "bridge_idle_timeout": 0.2}


async def start_busy_cell(kernel: Any, seconds: float) -> str:
    """Start a sleeping cell; return once the kernel has begun running it."""
    return await start_cell(kernel, busy_cell(seconds))


async def execute_reply(kernel: Any, msg_id: str) -> dict[str, Any]:
    while True:
        reply = await kernel.client.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]  # type: ignore[no-any-return]


async def test_subshell_target_answers_while_a_cell_runs(kernel, open_comm, jp_serverapp):
    await kernel.execute(PROBE)
    comm = await open_comm(THREADED)
    assert await recv(comm) == {"opened": True}

    msg_id = await start_busy_cell(kernel, TIMEOUT * 10)
    await comm.send("are you busy?")
    assert await recv(comm) == {"running": True}  # answered from the subshell, mid-cell
    await comm.send("again")
    assert await recv(comm) == {"running": True}

    # the cell was still running all along: only the interrupt ends it
    await jp_serverapp.kernel_manager.interrupt_kernel(kernel.id)
    assert (await execute_reply(kernel, msg_id))["status"] == "error"


async def test_other_targets_wait_for_the_cell(kernel, open_comm):
    await kernel.execute(PROBE)
    comm = await open_comm(PLAIN)
    assert await recv(comm) == {"opened": True}

    msg_id = await start_busy_cell(kernel, 1)
    await comm.send("are you busy?")
    reply, content = await asyncio.gather(recv(comm), execute_reply(kernel, msg_id))
    assert reply == {"running": False}  # handled on the main shell, after the cell
    assert content["status"] == "ok"


async def test_subshell_is_deleted_with_the_bridge(kernel, open_comm, jp_serverapp):
    await kernel.execute(PROBE)
    comm = await open_comm(THREADED)
    assert await recv(comm) == {"opened": True}
    bridge = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    (app,) = bridge
    subshell_id = app.bridges.bridges[kernel.id].subshell.id
    assert subshell_id in await list_subshells(kernel)

    await comm.close()
    while subshell_id in await list_subshells(kernel):
        await asyncio.sleep(0.05)  # the delete request is on its way; bounded by the test timeout


async def list_subshells(kernel: Any) -> list[str]:
    msg = kernel.client.session.msg("list_subshell_request", {})
    kernel.client.control_channel.send(msg)
    while True:
        reply = await kernel.client.control_channel.get_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]["subshell_id"]  # type: ignore[no-any-return]
