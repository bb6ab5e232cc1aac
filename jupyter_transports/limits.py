"""How many sockets one user, and one kernel, may hold open at once (pure).

A deployment shared by many people caps both (``max_sockets_per_user``,
``max_sockets_per_kernel``), so that one user's runaway page cannot take every file descriptor
and every kernel's attention: a handshake past a cap is refused with 429 before the upgrade.
A durable session's connection counts while it is open, not while its session waits.
"""

from __future__ import annotations

from collections import Counter

from .errors import TooManySockets


class SocketLimits:
    """Open sockets per user and per kernel, within their caps (0: no cap)."""

    def __init__(self, per_user: int = 0, per_kernel: int = 0) -> None:
        self.per_user = per_user
        self.per_kernel = per_kernel
        self.by_user: Counter[str] = Counter()
        self.by_kernel: Counter[str] = Counter()

    def admit(self, user: str, kernel_id: str) -> None:
        """Count one more socket; :class:`TooManySockets` if it would pass a cap."""
        if self.per_user and self.by_user[user] >= self.per_user:
            raise TooManySockets(
                f"user {user} has {self.per_user} sockets open (max_sockets_per_user)"
            )
        if self.per_kernel and self.by_kernel[kernel_id] >= self.per_kernel:
            raise TooManySockets(
                f"kernel {kernel_id} has {self.per_kernel} sockets open (max_sockets_per_kernel)"
            )
        self.by_user[user] += 1
        self.by_kernel[kernel_id] += 1

    def release(self, user: str, kernel_id: str) -> None:
        """One socket counted by :meth:`admit` closed."""
        for counter, key in ((self.by_user, user), (self.by_kernel, kernel_id)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
