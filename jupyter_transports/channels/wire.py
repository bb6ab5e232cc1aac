"""The kernel protocol on a gateway's WebSocket, both layouts (pure: no I/O).

``v1.kernel.websocket.jupyter.org``: every message is binary: 8-byte little-endian counts and
offsets, the channel's name, then the message's parts as the kernel packed them (header, parent
header, metadata, content, buffers), so nothing is re-encoded and buffers are views of the
frame. The legacy layout: JSON text with a ``channel`` key, or jupyter_server's binary layout
when there are buffers. jupyter_server's own helpers write both; reading v1 is done here, as
views rather than copies.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Collection, Mapping
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from ..framing import Buffers

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
IOPUB = "iopub"
HEAD_PARTS = 4  # header, parent header, metadata, content; buffers follow


def encode(
    session: Session,
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    *,
    v1: bool,
    metadata: dict[str, Any] | None = None,
    buffers: Buffers = (),
    header: Mapping[str, str] | None = None,
) -> tuple[str, bytes | str]:
    """A new message's id, and the message in the layout (with extra ``header`` fields)."""
    msg = session.msg(msg_type, content, metadata=metadata)
    if header:
        msg["header"].update(header)
    msg_id: str = msg["header"]["msg_id"]
    if v1:
        pack = session.pack
        parts = [pack(msg["header"]), pack({}), pack(msg["metadata"]), pack(msg["content"])]
        return msg_id, serialize_msg_to_ws_v1([*parts, *buffers], channel)
    msg["channel"] = channel
    if buffers:
        return msg_id, serialize_binary_message({**msg, "buffers": list(buffers)})
    return msg_id, json.dumps(msg, default=json_default)


def decode(
    message: bytes | str, *, v1: bool, iopub_types: Collection[str] | None = None
) -> tuple[str, dict[str, Any] | None]:
    """The message's channel, and the message as ``Session.deserialize`` makes it (None for an
    iopub type not in ``iopub_types``, dropped after its header alone is read)."""
    if not v1:
        if isinstance(message, str):
            msg = json.loads(message)
            msg.setdefault("buffers", [])
        else:
            msg = deserialize_binary_message(message)
        channel = msg.pop("channel", "")
        msg["msg_type"] = msg["header"]["msg_type"]
        if channel == IOPUB and iopub_types is not None and msg["msg_type"] not in iopub_types:
            return channel, None
        return channel, msg
    if not isinstance(message, bytes):
        raise ValueError("a text frame on the binary subprotocol")
    channel, parts = split_v1(message)
    if len(parts) < HEAD_PARTS:
        raise ValueError(f"a message of {len(parts)} parts")
    header = _load(parts[0])
    if channel == IOPUB and iopub_types is not None and header["msg_type"] not in iopub_types:
        return channel, None
    return channel, {
        "header": header,
        "msg_id": header["msg_id"],
        "msg_type": header["msg_type"],
        "parent_header": _load(parts[1]),
        "metadata": _load(parts[2]),
        "content": _load(parts[3]),
        "buffers": parts[HEAD_PARTS:],
    }


def split_v1(message: bytes) -> tuple[str, list[memoryview]]:
    """A ``v1.kernel.websocket.jupyter.org`` message's channel and parts (views of it)."""
    view = memoryview(message)
    (count,) = struct.unpack_from("<Q", view)
    if count < 2 or 8 * (count + 1) > len(view):
        raise ValueError(f"a message of {len(view)} bytes cannot hold {count} offsets")
    offsets = struct.unpack_from(f"<{count}Q", view, 8)
    if list(offsets) != sorted(offsets) or offsets[-1] > len(view):
        raise ValueError("offsets out of order or past the end")
    channel = bytes(view[offsets[0] : offsets[1]]).decode()
    return channel, [view[start:end] for start, end in itertools.pairwise(offsets[1:])]


def _load(part: memoryview) -> Any:
    return json.loads(bytes(part))
