"""A kernel's comm message as the router takes it, and what it tells the server in
``metadata.transports`` (pure).

A kernel addresses a message to some clients (``to``), numbers its messages on a comm (``sent``)
and opts a comm in to features (``presence``, ``echo``, ``shared``). Kernel code is not trusted
to get the shapes right: anything malformed reads as "says nothing", except a malformed ``to``,
which addresses nobody (a private message never becomes a broadcast).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .framing import Buffers
from .protocol import METADATA_KEY, SENT_KEY, TO_KEY

NOTHING: Mapping[str, Any] = {}


class KernelCommMessage(NamedTuple):
    """A comm message the kernel published on iopub (an event; a tuple, as it comes per message)."""

    msg_type: str
    content: Mapping[str, Any]
    metadata: Mapping[str, Any]
    buffers: Buffers = ()
    parent_msg_type: str | None = None
    parent_msg_id: str | None = None

    @classmethod
    def from_jupyter(cls, msg: Mapping[str, Any]) -> KernelCommMessage:
        """The event of a message dict as jupyter_client makes them."""
        parent = msg["parent_header"]
        return cls(
            msg["msg_type"],
            msg["content"],
            msg.get("metadata") or {},
            msg.get("buffers") or (),
            parent.get("msg_type"),
            parent.get("msg_id"),
        )


def transports_of(metadata: Any) -> Mapping[str, Any]:
    """``metadata.transports``, or an empty mapping if it is missing or not a mapping.

    Read several times per kernel message: parsed JSON is made of dicts, checked first (an
    abstract ``Mapping`` check costs ten times as much)."""
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        return NOTHING
    transports = metadata.get(METADATA_KEY)
    if type(transports) is dict or isinstance(transports, Mapping):
        return transports
    return NOTHING


def addressees(metadata: Any) -> dict[str, None] | None:
    """The client ids ``to`` names (in order, once each), or None if the message is for all."""
    to = transports_of(metadata).get(TO_KEY)
    if to is None:
        return None
    return dict.fromkeys(c for c in to if isinstance(c, str)) if isinstance(to, list) else {}


def sent_number(metadata: Any) -> int | None:
    """The kernel's number of this message on its comm (1, 2, 3…), if it gives one."""
    sent = transports_of(metadata).get(SENT_KEY)
    return sent if isinstance(sent, int) and not isinstance(sent, bool) else None


def opted(metadata: Any, key: str) -> bool | None:
    """What the message says of the feature ``key``: True, False, or None if nothing."""
    value = transports_of(metadata).get(key)
    return value if isinstance(value, bool) else None
