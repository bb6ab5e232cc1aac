"""The WebSocket endpoints against a real server and real ipykernel kernels."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from jupyter_transports.client import CommClient, Refused

from .conftest import TIMEOUT, closed, recv


async def test_echo_keeps_order(open_comm):
    comm = await open_comm("echo")
    for i in range(200):
        await comm.send({"i": i})
    assert [await recv(comm) for _ in range(200)] == [{"i": i} for i in range(200)]


async def test_buffer_round_trip(open_comm):
    comm = await open_comm("echo")
    payload = bytes(range(256)) * 4096  # 1 MiB
    await comm.send({"kind": "blob"}, buffers=[payload, b"second"])
    message = await asyncio.wait_for(comm.recv(), TIMEOUT)
    assert message.data == {"kind": "blob"}
    assert message.buffers == [payload, b"second"]
