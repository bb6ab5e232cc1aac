"""The REST calls over a kernel's bridge: one request in, one answer out (no tornado here).

A REST call is a client of the bridge like a socket, with a :class:`ReplyCollector` as its sink:
it opens or posts, collects what the router routes to it, and leaves. Bodies are checked by
:func:`parse_body` before anything reaches the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from .bridge import KernelBridge
from .errors import BadFrame, BadRequest, CloseCode, CommNotFound, KernelTimeout, TooLarge
from .framing import OutgoingFrame, loads
from .router import Subscriber

DATA = "data"
WAIT = "wait"
COUNT = "count"
TARGET_NAME = "target_name"
CLIENTS = "clients"

MAX_WAIT = 24 * 3600  # seconds: a REST call is no place to wait longer
OPEN_DEFAULTS: dict[str, Any] = {DATA: {}, WAIT: 0}
SEND_DEFAULTS: dict[str, Any] = {WAIT: 5, COUNT: 1}  # and DATA, which is required


CLIENT_GONE = "the HTTP client went away"


@dataclass
class ReplyCollector:
    """A sink that keeps the ``data`` of what the router routes to it, until it is closed.

    It stops taking replies once they hold ``limit`` bytes (``client_buffer_bytes``), as a
    socket that far behind would be closed: a caller's ``count`` and ``wait`` cannot make the
    server hold more for it than for any other client.
    """

    limit: int | None = None
    replies: list[Any] = field(default_factory=list)
    size: int = 0
    code: CloseCode | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, frame: OutgoingFrame) -> None:
        if self.closed.is_set():
            return
        self.replies.append(frame.data)  # buffers have no place in a JSON answer
        self.size += frame.size
        if self.limit is not None and self.size >= self.limit:
            self.closed.set()

    def close(self, code: CloseCode, reason: str) -> None:
        if self.code is None:
            self.code = code
        self.closed.set()

    def lost(self, count: int) -> None:
        """A REST call's answer has no place to say it (the status and metrics count it)."""

    def presence(self, frame: str) -> None:
        """A REST call is not on the roster (it is not attached)."""

    async def wait(self, seconds: float) -> None:
        """Until the collector is closed, or ``seconds`` passed (``wait`` is not a timeout)."""
        if seconds <= 0 or self.closed.is_set():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), seconds)


def parse_body(body: bytes, defaults: dict[str, Any], *, max_bytes: int) -> dict[str, Any]:
    """A JSON object body with ``defaults`` filled in; 400 or 413 if it is not acceptable.

    An empty body is ``{}``. ``data`` is required unless ``defaults`` has it; ``wait`` is a
    finite number of seconds >= 0; ``count`` an integer >= 0; no other field is taken.
    """
    if len(body) > max_bytes:
        raise TooLarge(f"body of {len(body)} bytes is over the limit of {max_bytes}")
    try:
        parsed = loads(body) if body.strip() else {}
    except BadFrame as e:
        raise BadRequest(f"body is {e}") from None
    if not isinstance(parsed, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(parsed) - {DATA, *defaults}
    if unknown:
        raise BadRequest(f"unknown fields in body: {', '.join(sorted(unknown))}")
    if DATA not in parsed and DATA not in defaults:
        raise BadRequest("body needs 'data'")
    fields = {**defaults, **parsed}
    wait = fields.get(WAIT)
    if not _is_number(wait) or not 0 <= wait <= MAX_WAIT:
        raise BadRequest(f"'wait' must be a number of seconds from 0 to {MAX_WAIT}")
    if COUNT in fields and not (_is_integer(fields[COUNT]) and fields[COUNT] >= 0):
        raise BadRequest("'count' must be an integer >= 0")
    return fields


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def list_comms(bridge: KernelBridge, user: str) -> dict[str, dict[str, Any]]:
    """The kernel's own view of its comms, with the clients attached to each in this server;
    only those ``user`` may use (private comms)."""
    comms = await bridge.comms.refresh()
    return {
        comm_id: {
            TARGET_NAME: info.get(TARGET_NAME, ""),
            CLIENTS: bridge.router.subscribers(comm_id),
        }
        for comm_id, info in comms.items()
        if bridge.router.may_use(comm_id, user)
    }


async def open_comm(
    bridge: KernelBridge,
    client: Subscriber,
    collector: ReplyCollector,
    target_name: str,
    data: Any,
    query: dict[str, str],
    wait: float,
) -> list[Any]:
    """Open ``client.comm_id``, unowned so it outlives the call; what the kernel sent on it.

    Collects until the kernel has handled the comm_open (at most ``kernel_timeout``) and ``wait``
    seconds have passed since it was sent. :class:`CommNotFound` if the kernel refused it.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    msg_id = bridge.open_comm(client, collector, target_name, data, query, owned=False)
    try:
        try:
            await bridge.settled(msg_id)
        except KernelTimeout:
            _close_quietly(bridge, client.comm_id)  # no comm nobody knows of left behind
            raise
        if collector.code is CloseCode.NO_SUCH_COMM:
            raise CommNotFound(f"the kernel refused a comm to target {target_name!r}")
        await collector.wait(until - loop.time())
    finally:
        bridge.leave(client.id)
    return collector.replies


async def send(
    bridge: KernelBridge,
    client: Subscriber,
    collector: ReplyCollector,
    data: Any,
    *,
    count: int,
    wait: float,
    size: int,
) -> list[Any]:
    """Send one message on ``client.comm_id``; the first ``count`` replies to it within ``wait``."""
    await bridge.comms.require(client.comm_id, client.user)
    if (room := bridge.room(client.id)) is not None:  # the kernel has too much unhandled
        await room
    bridge.post(client, collector, data, count=count, size=size)
    if count == 0:
        return []
    try:
        await collector.wait(wait)
    finally:
        bridge.leave(client.id)
    return collector.replies


async def close_comm(bridge: KernelBridge, comm_id: str, user: str) -> None:
    """Close a comm (one ``user`` may use), and return once the kernel has handled the
    comm_close."""
    await bridge.comms.require(comm_id, user)
    await bridge.settled(bridge.close_comm(comm_id))


def _close_quietly(bridge: KernelBridge, comm_id: str) -> None:
    with contextlib.suppress(CommNotFound):  # the kernel closed it already
        bridge.close_comm(comm_id)
