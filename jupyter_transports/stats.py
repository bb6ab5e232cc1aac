"""Traffic counters of one kernel's bridge: plain ints, so counting a message is one add.

They outlive the kernel's bridge (which closes when its last user leaves), so that totals only
grow while the kernel lives; ``GET /api/transports/status`` and the Prometheus metrics of
:mod:`.metrics` both read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class KernelStats:
    """What went through one kernel's bridge since the server started."""

    messages_to_kernel: int = 0  # comm messages from clients (sockets and REST)
    bytes_to_kernel: int = 0  # their frames' or bodies' bytes
    messages_from_kernel: int = 0  # comm messages of the kernel routed to at least one client
    bytes_from_kernel: int = 0  # their frames' bytes, counted once however many receive them
    drops: int = 0  # clients closed for falling too far behind
    lost: int = 0  # numbered kernel comm messages (metadata.transports.sent) that never arrived

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
