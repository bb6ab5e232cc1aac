"""jupyter_server's record of a kernel's activity, kept by the bridge while it reads iopub anyway.

jupyter_server watches every kernel's iopub with a subscriber of its own (``kernel.
_activity_stream``, made by ``start_watching_activity``) that receives and deserializes every
message, large buffers included, to keep ``last_activity`` and ``execution_state`` current. While
a bridge reads that iopub too, the server would pay twice for each comm message. So while a
kernel is bridged, its activity stream is unsubscribed (it stays connected, so handing back is
quick) and :class:`ActivityRecorder` records the same facts, by the same rules, from the
messages the bridge reads; at the bridge's close the stream subscribes again.
``TransportsExtension.record_kernel_activity = False`` leaves jupyter_server's stream alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from jupyter_server._tz import utcnow

from .protocol import BUSY, IDLE, STARTING, STATUS

RESOLUTION = 1.0  # seconds: last_activity is written at most this often (culling counts minutes)


class ActivityRecorder:
    """Stands in for jupyter_server's activity stream of one kernel (``record_activity`` in
    ``MappingKernelManager.start_watching_activity``, whose rules :meth:`record` follows, but
    for writing ``last_activity`` at most once per ``RESOLUTION``)."""

    def __init__(
        self,
        kernel_manager: Any,
        kernel_id: str,
        unpack: Callable[[bytes], Any],
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.kernel_id = kernel_id
        self.kernel = kernel_manager.get_kernel(kernel_id)
        self.unpack = unpack
        self.log = log
        self.untracked = frozenset(kernel_manager.untracked_message_types)
        self.clock = clock  # seconds, for the write rate
        self._stamped = -RESOLUTION  # clock() at the last write of last_activity
        self._stream: Any = None  # the activity stream while it is unsubscribed

    def take_over(self) -> bool:
        """Unsubscribe jupyter_server's activity stream; False if the kernel has none (a
        gateway kernel, or a jupyter_server that watches differently): nothing to record then."""
        stream = getattr(self.kernel, "_activity_stream", None)
        if stream is None or stream.closed():
            return False
        stream.socket.setsockopt(zmq.UNSUBSCRIBE, b"")
        self._stream = stream
        self.log.debug("Kernel %s: the bridge records its activity", self.kernel_id)
        return True

    def hand_back(self) -> None:
        """Subscribe the activity stream again (unless jupyter_server replaced or closed it)."""
        stream, self._stream = self._stream, None
        if stream is not None and not stream.closed():
            stream.socket.setsockopt(zmq.SUBSCRIBE, b"")

    def record(self, msg_type: str, parent_type: str | None, content: bytes) -> None:
        """One iopub message: its type, its parent's type, and its content (parsed only for a
        status)."""
        kernel, untracked = self.kernel, self.untracked
        now = self.clock()
        if now - self._stamped >= RESOLUTION and (
            msg_type not in untracked
            or parent_type not in untracked
            or kernel.execution_state == BUSY
        ):
            self._stamped = now
            self.kernel_manager.last_kernel_activity = kernel.last_activity = utcnow()
        if msg_type == STATUS:
            state = self.unpack(content).get("execution_state")
            if parent_type not in untracked:
                kernel.execution_state = state
            elif kernel.execution_state == STARTING and state != STARTING:
                kernel.execution_state = IDLE
