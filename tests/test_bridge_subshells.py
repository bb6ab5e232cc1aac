"""Which shell the bridge sends each comm message to, with a fake kernel (no I/O)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jupyter_transports.bridge import KernelBridge
from jupyter_transports.router import Subscriber


class FakeChannels:
    """A kernel that answers kernel_info and create_subshell, and records what it is sent."""

    def __init__(self, features: list[str]) -> None:
        self.features = features
        self.sent: list[tuple[str, str | None]] = []  # (msg_type, subshell_id)
        self.control: list[str] = []

    async def start(self, timeout: float) -> None:
        pass

    async def next_iopub(self) -> dict[str, Any]:
        await _forever()
        raise AssertionError

    def send(self, msg_type, content, metadata=None, buffers=(), header=None) -> str:
        self.sent.append((msg_type, (header or {}).get("subshell_id")))
        return f"msg-{len(self.sent)}"

    async def request(self, msg_type, content, timeout) -> dict[str, Any]:
        assert msg_type == "kernel_info_request"
        return {"content": {"supported_features": self.features}}

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        self.control.append(msg_type)
        return f"control-{len(self.control)}"

    async def control_request(self, msg_type, content, timeout) -> dict[str, Any]:
        self.send_control(msg_type, content)
        return {"content": {"status": "ok", "subshell_id": "sub-1"}}

    def stop(self) -> None:
        pass


async def _forever() -> None:
    await asyncio.Event().wait()


class Sink:
    def deliver(self, frame: Any) -> None:
        pass

    def close(self, code: Any, reason: str) -> None:
        pass


async def started_bridge(channels: FakeChannels) -> KernelBridge:
    bridge = KernelBridge(
        "k",
        channels,  # type: ignore[arg-type]
        kernel_timeout=5,
        log=logging.getLogger("test"),
        on_closed=lambda bridge: None,
        subshell_targets=["threaded"],
    )
    await bridge.start()
    return bridge


async def test_opted_in_targets_use_the_subshell_from_comm_open_on():
    channels = FakeChannels(["kernel subshells"])
    bridge = await started_bridge(channels)
    assert bridge.subshell.id == "sub-1"
    bridge.open_comm(Subscriber("a", "comm-a", "u"), Sink(), "threaded", {}, {})
    bridge.open_comm(Subscriber("b", "comm-b", "u"), Sink(), "plain", {}, {})
    bridge.send("a", {"x": 1})
    bridge.send("b", {"x": 1})
    assert channels.sent[-4:] == [
        ("comm_open", "sub-1"),
        ("comm_open", None),
        ("comm_msg", "sub-1"),
        ("comm_msg", None),
    ]
    bridge.close()
    assert channels.control == ["create_subshell_request", "delete_subshell_request"]


async def test_kernels_without_subshells_use_the_main_shell():
    channels = FakeChannels([])
    bridge = await started_bridge(channels)
    assert bridge.subshell.id is None
    bridge.open_comm(Subscriber("a", "comm-a", "u"), Sink(), "threaded", {}, {})
    bridge.send("a", {"x": 1})
    assert channels.sent[-2:] == [("comm_open", None), ("comm_msg", None)]
    bridge.close()
    assert channels.control == []
