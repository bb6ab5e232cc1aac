"""What a bridge writes to, as it sees them: a subscriber's sink, and a follower of targets."""

from __future__ import annotations

from typing import Protocol

from .actions import Opened
from .errors import CloseCode
from .framing import OutgoingFrame


class Sink(Protocol):
    """A subscriber as the bridge sees it (a WebSocket, an SSE stream, a REST call)."""

    def deliver(self, frame: OutgoingFrame) -> None:
        """Queue one comm message for the subscriber; must not block."""

    def close(self, code: CloseCode, reason: str) -> None:
        """End the subscription; the bridge has forgotten the subscriber already."""

    def lost(self, count: int) -> None:
        """``count`` messages of the subscriber's comm never reached the server."""

    def presence(self, frame: str) -> None:
        """Who is on the subscriber's comm, or who joined or left it (opted-in comms): the
        JSON of a roster frame, encoded once for all its recipients."""


class Follower(Protocol):
    """A socket on every comm of some targets (a multiplexed socket)."""

    def kernel_opened(self, opened: Opened) -> None:
        """The kernel opened a comm of a followed target."""

    def close(self, code: CloseCode, reason: str) -> None:
        """The bridge closes (its kernel is gone, or the server stops)."""
