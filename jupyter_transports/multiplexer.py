"""One multiplexed client's comms on a kernel's bridge, whatever carries its frames.

A :class:`Multiplexer` is a client of its own on each comm it is on (a :class:`MuxComm`, the
bridge's sink for that client), and a :class:`~.sinks.Follower` of the targets it follows, so
the comms the kernel opens later join it. It carries out the client's frames (:mod:`.mux`) and
writes what it has to say to a :class:`MuxOutput`: the socket itself, or a durable session
(:mod:`.mux_session`) that numbers and keeps frames across connections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Collection, Mapping
from typing import Protocol

from . import mux
from .actions import Opened
from .bridge import KernelBridge
from .errors import CloseCode, CommExists, CommNotFound
from .framing import Buffers, OutgoingFrame
from .router import Subscriber

COMM_CODES = frozenset({CloseCode.COMM_CLOSED, CloseCode.NO_SUCH_COMM})  # end one comm only
NOT_ALLOWED = "comm target {!r} is not allowed"


class MuxOutput(Protocol):
    """Where a multiplexer's frames go."""

    def frame(self, head: str, buffers: Buffers = ()) -> None:
        """One frame: a JSON object (and buffers)."""

    def message(self, frame: OutgoingFrame, comm_id: str) -> None:
        """A kernel message on ``comm_id``."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Everything ends: the kernel went away, or the server stops."""


class MuxComm:
    """One comm of a multiplexer: the bridge's sink for its client on that comm."""

    def __init__(self, mux: Multiplexer, client: Subscriber, target_name: str) -> None:
        self.mux = mux
        self.client = client
        self.target_name = target_name

    def deliver(self, frame: OutgoingFrame) -> None:
        self.mux.output.message(frame, self.client.comm_id)

    def close(self, code: CloseCode, reason: str) -> None:
        if code in COMM_CODES:
            self.mux.comm_ended(self.client.comm_id, code, reason)
        else:  # the kernel went away, or the server stops: the whole socket ends
            self.mux.output.close(code, reason)

    def lost(self, count: int) -> None:
        self.mux.output.frame(mux.lost(self.client.comm_id, count))

    def presence(self, frame: str) -> None:
        """Roster frames are for one-comm sessions."""


class Multiplexer:
    """A client on many comms of one kernel."""

    def __init__(
        self,
        bridge: KernelBridge,
        socket: Subscriber,
        output: MuxOutput,
        *,
        follows: frozenset[str] = frozenset(),
        query: Mapping[str, str] | None = None,
        allowed_targets: Collection[str] | None = None,
    ) -> None:
        self.bridge = bridge
        self.socket = socket  # its own id and user; each comm's client is derived from it
        self.output = output
        self.follows = follows
        self.query = query or {}
        self.allowed_targets = allowed_targets
        self.comms: dict[str, MuxComm] = {}  # the comms it is on, by id
        self.left = False

    def start(self) -> None:
        """Follow the targets, and be on every comm of theirs the bridge knows."""
        self.bridge.follow(self, self.follows)
        for comm_id, target_name in self.bridge.comms_of(self.follows, self.socket.user):
            self.join(comm_id, target_name)

    def listing(self) -> list[tuple[str, str]]:
        """The comms it is on: (id, target)."""
        return [(comm_id, comm.target_name) for comm_id, comm in self.comms.items()]

    def join(self, comm_id: str, target_name: str) -> bool:
        """Be on an existing comm; False if it is gone or not this user's."""
        sink = MuxComm(self, self.client_on(comm_id), target_name)
        try:
            self.bridge.attach(sink.client, sink)
        except CommNotFound:
            return False
        self.comms[comm_id] = sink
        return True

    def client_on(self, comm_id: str) -> Subscriber:
        return dataclasses.replace(
            self.socket, id=mux.client_id(self.socket.id, comm_id), comm_id=comm_id
        )

    def leave(self) -> None:
        """Leave every comm (those it opened close) and stop following."""
        self.left = True
        self.bridge.unfollow(self)
        comms, self.comms = self.comms, {}
        for sink in comms.values():
            self.bridge.leave(sink.client.id)

    def awaits_answers(self) -> bool:
        """Whether the kernel is still handling messages of its clients."""
        return any(self.bridge.awaits_answers(sink.client.id) for sink in self.comms.values())

    # -- the bridge's follower -------------------------------------------------------------------

    def kernel_opened(self, opened: Opened) -> None:
        head = mux.opened(opened.comm_id, opened.target_name, opened.data, opened.metadata)
        self.output.frame(head, opened.buffers)
        self.join(opened.comm_id, opened.target_name)

    def close(self, code: CloseCode, reason: str) -> None:
        self.output.close(code, reason)

    def comm_ended(self, comm_id: str, code: int, reason: str) -> None:
        """It is no longer on the comm (the bridge forgot its client already)."""
        self.comms.pop(comm_id, None)
        self.output.frame(mux.closed(comm_id, code, reason))

    # -- the client's frames ---------------------------------------------------------------------

    def handle(self, frame: mux.ClientFrame, size: int) -> Awaitable[None] | None:
        """Carry out one frame (``size``: its bytes); what to await before the next (an attach
        asks the kernel; a message may have to wait for room)."""
        bridge = self.bridge
        if isinstance(frame, mux.Attach):
            return self.attach(frame.comm_id)
        if isinstance(frame, mux.Open):
            self.open_comm(frame)
            return None
        sink = self.comms.get(frame.comm_id)
        if sink is None:
            if not isinstance(frame, mux.Detach):
                self.comm_ended(frame.comm_id, CloseCode.NO_SUCH_COMM, "not on this comm")
        elif isinstance(frame, mux.Message):
            bridge.send(sink.client.id, frame.data, frame.buffers, size)
            return bridge.room(sink.client.id)
        elif isinstance(frame, mux.CloseComm):
            bridge.close_comm(frame.comm_id)  # its own close frame comes with everyone's
        else:  # detach
            del self.comms[frame.comm_id]
            bridge.leave(sink.client.id)
        return None

    async def attach(self, comm_id: str) -> None:
        if comm_id not in self.comms:
            try:
                await self.bridge.comms.require(comm_id, self.socket.user)
            except CommNotFound as e:
                self.comm_ended(comm_id, CloseCode.NO_SUCH_COMM, str(e))
                return
            if self.left:  # its socket closed meanwhile
                return
            comm = self.bridge.router.comms.get(comm_id)
            if comm is None or not self.join(comm_id, comm.target_name):
                self.comm_ended(comm_id, CloseCode.NO_SUCH_COMM, f"no comm {comm_id}")
                return
        self.output.frame(mux.attached(comm_id, self.comms[comm_id].target_name))

    def open_comm(self, frame: mux.Open) -> None:
        comm_id, target_name = frame.comm_id, frame.target_name
        if self.allowed_targets is not None and target_name not in self.allowed_targets:
            self.comm_ended(comm_id, CloseCode.NOT_ALLOWED, NOT_ALLOWED.format(target_name))
            return
        sink = MuxComm(self, self.client_on(comm_id), target_name)
        try:
            self.bridge.open_comm(
                sink.client,
                sink,
                target_name,
                frame.data,
                self.query,
                metadata=frame.metadata,
                buffers=frame.buffers,
            )
        except CommExists as e:
            self.comm_ended(comm_id, e.close_code, str(e))
            return
        self.comms[comm_id] = sink
