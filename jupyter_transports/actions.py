"""What the router decides, for the I/O side to carry out (pure): its actions, one kind each.

:class:`~.router.Router` methods return lists of these; :class:`~.bridge.KernelBridge` performs
them in order (writes to sockets, sends to the kernel, counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CloseCode
from .framing import Buffers, OutgoingFrame


@dataclass(frozen=True)
class Deliver:
    """Send ``frame``, a message of ``comm_id``, to each of ``clients`` (all of the comm's, if
    ``broadcast``)."""

    clients: tuple[str, ...]
    frame: OutgoingFrame
    comm_id: str = ""
    broadcast: bool = True


@dataclass(frozen=True)
class Close:
    """Close ``client``'s socket with ``code``."""

    client: str
    code: CloseCode
    reason: str


@dataclass(frozen=True)
class ToKernel:
    """Send a comm message to the kernel's shell channel (``target_name``: its comm's target)."""

    msg_type: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: Buffers = ()
    target_name: str = ""


@dataclass(frozen=True)
class Lost:
    """Messages the kernel numbered on this comm that never reached the server."""

    comm_id: str
    count: int


@dataclass(frozen=True)
class Presence:
    """Tell ``clients`` of ``comm_id`` that asked for it (durable sessions) ``event``: the roster,
    a join or a leave."""

    comm_id: str
    clients: tuple[str, ...]
    event: dict[str, Any]


@dataclass(frozen=True)
class Opened:
    """The kernel opened a comm (for the sockets that follow its target)."""

    comm_id: str
    target_name: str
    data: Any
    metadata: Any
    buffers: Buffers = ()


Action = Deliver | Close | ToKernel | Lost | Presence | Opened
