"""Fan-out writes a burst to each socket in one go; nothing is lost or reordered, even by a close."""

from __future__ import annotations

import asyncio

from jupyter_transports.errors import CloseCode

from .conftest import closed, recv

WIDGET = """
from comm import create_comm
widget = create_comm(target_name="test.widget", data={})
"""
BURST = 500


async def test_burst_then_close_arrives_whole_and_in_order(kernel, attach):
    await kernel.execute(WIDGET)
    comm_id = await kernel.evaluate("widget.comm_id")
    sockets = [await attach(comm_id) for _ in range(5)]

    await kernel.execute(
        f"for i in range({BURST}): widget.send({{'i': i}})\nwidget.close(data={{'bye': True}})"
    )

    async def whole(socket):
        got = [await recv(socket) for _ in range(BURST + 1)]
        return got, await closed(socket)

    for got, (code, _) in await asyncio.gather(*(whole(s) for s in sockets)):
        assert got == [{"i": i} for i in range(BURST)] + [{"bye": True}]
        assert code == CloseCode.COMM_CLOSED
