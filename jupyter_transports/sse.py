"""Server-Sent Events, as bytes on the wire (pure, no I/O).

Each event is a block of ``field: value`` lines ending with a blank line; a line that starts with
``:`` is a comment, which clients ignore and proxies see as traffic (the keep-alive). Multi-line
data is sent as one ``data:`` line per line, as the WHATWG spec has clients join them back. An
``id:`` line is what a reconnecting EventSource sends back as its ``Last-Event-ID`` header.
"""

from __future__ import annotations

import re

CONTENT_TYPE = "text/event-stream"
OPEN = "open"  # the first event: the subscription is live
CLOSE = "close"  # the last event: the comm (or the kernel) went away
RESET = "reset"  # v2: a reconnection could not be given what it missed
LOST = "lost"  # v2: messages of the comm never reached the server
LAST_EVENT_ID = "Last-Event-ID"  # the header of a reconnecting EventSource
KEEPALIVE = b": keep-alive\n\n"
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what SSE clients split lines on


def event(data: str, name: str | None = None, event_id: str | None = None) -> bytes:
    """One event carrying ``data`` (the client's ``message`` event unless ``name`` is given)."""
    lines = [f"event: {name}"] if name else []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in _NEWLINE.split(data)]
    return ("\n".join(lines) + "\n\n").encode("utf-8")
