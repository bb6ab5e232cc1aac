"""What a kernel has been sent and not yet handled, per client and in all.

A message counts from when the bridge sends it until the kernel's ``status: idle`` for it. Two
uses: while a client has messages in flight, what the kernel sends may be their answers (see
the writer's pacing); and the bytes in flight are bounded, per client and per kernel, so that a
client sending to a busy kernel is paced (its socket is not read) instead of filling the
kernel's memory with a queue it cannot handle yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Flight:
    """One client's messages in flight."""

    count: int = 0
    bytes: int = 0


class InFlight:
    """The messages a kernel has not handled yet; waits for room under the bounds."""

    def __init__(self, client_bytes: int, kernel_bytes: int) -> None:
        self.client_bytes = client_bytes  # most bytes one client may have in flight
        self.kernel_bytes = kernel_bytes  # most bytes all clients together may have in flight
        self.bytes = 0
        self._clients: dict[str, Flight] = {}
        self._messages: dict[str, tuple[str, int]] = {}  # msg id -> (client id, bytes)
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []

    def sent(self, client_id: str, msg_id: str, size: int) -> None:
        flight = self._clients.setdefault(client_id, Flight())
        flight.count += 1
        flight.bytes += size
        self.bytes += size
        self._messages[msg_id] = (client_id, size)

    def handled(self, msg_id: str) -> tuple[str, int] | None:
        """The client and size of a message the kernel has handled (None: not one of ours)."""
        return self._messages.pop(msg_id, None)

    def answered(self, client_id: str, size: int) -> None:
        """Stop counting a handled message (after its answers were written); wake who may go."""
        flight = self._clients[client_id]
        flight.count -= 1
        flight.bytes -= size
        self.bytes -= size
        if not flight.count:
            del self._clients[client_id]
        if self._waiting:
            self._wake(lambda client: not self._over(client))

    def count(self, client_id: str) -> int:
        flight = self._clients.get(client_id)
        return flight.count if flight is not None else 0

    def room(self, client_id: str) -> asyncio.Future[None] | None:
        """None if ``client_id`` may send now; else a future done once it may (a message
        that crosses a bound still goes: the bounds pace the next one)."""
        if not self._over(client_id):
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((client_id, waiter))
        return waiter

    def _over(self, client_id: str) -> bool:
        flight = self._clients.get(client_id)
        mine = flight.bytes if flight is not None else 0
        return mine > self.client_bytes or self.bytes > self.kernel_bytes

    def release(self) -> None:
        """Wake every waiter (the kernel is gone: nothing more will be handled)."""
        self._wake(lambda client: True)

    def _wake(self, may_go: Callable[[str], bool]) -> None:
        still = []
        for client_id, waiter in self._waiting:
            if waiter.done():
                continue
            if may_go(client_id):
                waiter.set_result(None)
            else:
                still.append((client_id, waiter))
        self._waiting = still
