"""jupyter_server's record of kernel activity, kept by the bridge while a kernel is bridged:
with a real server and kernel, and the recorder's rules on their own."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

from jupyter_transports.activity import RESOLUTION, ActivityRecorder

from .conftest import TIMEOUT, Kernel, recv

POLL = 0.02  # seconds between looks at the server's kernel model


async def kernel_model(jp_fetch: Any, kernel_id: str) -> dict[str, Any]:
    """The kernel as jupyter_server's REST API shows it."""
    return json.loads((await jp_fetch("api", "kernels", kernel_id)).body)  # type: ignore[no-any-return]


async def until_state(jp_fetch: Any, kernel_id: str, state: str) -> None:
    async def look() -> None:
        while (await kernel_model(jp_fetch, kernel_id))["execution_state"] != state:
            await asyncio.sleep(POLL)

    await asyncio.wait_for(look(), TIMEOUT)


def count_activity_stream(jp_serverapp: Any, kernel: Kernel) -> list[Any]:
    """What jupyter_server's own iopub subscriber for the kernel receives from now on (in place
    of recording it)."""
    received: list[Any] = []
    jp_serverapp.kernel_manager.get_kernel(kernel.id)._activity_stream.on_recv(received.append)
    return received


async def test_bridge_records_activity_and_state(open_comm, kernel, jp_fetch):
    comm = await open_comm("echo")
    before = (await kernel_model(jp_fetch, kernel.id))["last_activity"]
    await asyncio.sleep(RESOLUTION)
    await comm.send({"ping": 1})
    assert await recv(comm) == {"ping": 1}
    assert (await kernel_model(jp_fetch, kernel.id))["last_activity"] > before

    kernel.client.execute("import time; time.sleep(1)")
    await until_state(jp_fetch, kernel.id, "busy")
    await until_state(jp_fetch, kernel.id, "idle")


@pytest.mark.parametrize("transports_config", [{"bridge_idle_timeout": 0.2}])
async def test_server_activity_stream_pauses_while_bridged(open_comm, kernel, jp_serverapp):
    comm = await open_comm("echo")
    received = count_activity_stream(jp_serverapp, kernel)
    for i in range(20):
        await comm.send({"i": i})
        assert await recv(comm) == {"i": i}
    assert received == []

    await comm.close()

    async def until_received() -> None:  # the new subscription takes a moment to reach the kernel
        while not received:
            await kernel.execute("pass")

    await asyncio.wait_for(until_received(), TIMEOUT)


@pytest.mark.parametrize("transports_config", [{"record_kernel_activity": False}])
async def test_activity_stream_left_alone_when_asked(open_comm, kernel, jp_serverapp):
    comm = await open_comm("echo")
    received = count_activity_stream(jp_serverapp, kernel)
    await comm.send({"ping": 1})
    assert await recv(comm) == {"ping": 1}

    async def until_received() -> None:
        while not received:
            await asyncio.sleep(POLL)

    await asyncio.wait_for(until_received(), TIMEOUT)


class KernelRecord:
    """The two attributes of a jupyter_server kernel manager that activity is recorded in."""

    execution_state = "starting"
    last_activity = None


class Clock:
    """A clock that moves only when told."""

    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder(clock) -> ActivityRecorder:
    kernel_manager = MappingKernelManager()
    kernel_manager.get_kernel = lambda kernel_id: KernelRecord()
    return ActivityRecorder(kernel_manager, "k", json.loads, logging.getLogger("test"), clock=clock)


def status(state: str) -> bytes:
    return json.dumps({"execution_state": state}).encode()


def test_recorder_follows_jupyter_servers_rules(recorder):
    kernel = recorder.kernel
    recorder.record("status", "kernel_info_request", status("busy"))  # untracked parent
    assert (kernel.execution_state, kernel.last_activity) == ("idle", None)  # starting -> idle

    recorder.record("status", "comm_msg", status("busy"))  # tracked parent
    assert kernel.execution_state == "busy"
    assert kernel.last_activity is not None
    assert recorder.kernel_manager.last_kernel_activity == kernel.last_activity

    recorder.record("status", "comm_info_request", status("idle"))  # untracked: state kept
    assert kernel.execution_state == "busy"
    recorder.record("status", "comm_msg", status("idle"))
    assert kernel.execution_state == "idle"


def test_recorder_writes_last_activity_at_most_once_per_resolution(recorder, clock):
    kernel = recorder.kernel
    recorder.record("comm_msg", "comm_msg", b"{}")
    first = kernel.last_activity
    recorder.record("comm_msg", "comm_msg", b"{}")
    assert kernel.last_activity is first
    clock.now += RESOLUTION
    recorder.record("stream", "kernel_info_request", b"{}")  # untracked, kernel not busy
    assert kernel.last_activity is first
    recorder.record("comm_msg", "comm_msg", b"{}")
    assert kernel.last_activity is not first
