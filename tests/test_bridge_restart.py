"""A bridge that closes and starts again at once still hears its kernel's replies."""

from __future__ import annotations

import asyncio

from .conftest import TIMEOUT

WIDGET = """
from comm import create_comm
widget = create_comm(target_name="test.widget", data={})
"""
CYCLES = 150  # the lost wakeup showed up within ~30 restarts; 150 take a few seconds


async def test_bridge_restarts_back_to_back(kernel, attach):
    """Each cycle starts a bridge and asks the kernel for its comms (attach checks the comm)."""
    await kernel.execute(WIDGET)
    comm_id = await kernel.evaluate("widget.comm_id")
    for cycle in range(CYCLES):
        sockets = await asyncio.gather(*(attach(comm_id) for _ in range(1 + cycle % 3)))
        await asyncio.wait_for(asyncio.gather(*(s.close() for s in sockets)), TIMEOUT)
