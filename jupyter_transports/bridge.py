"""One bridge per kernel: the seam between the I/O (sockets, kernel channels) and the router.

A :class:`KernelBridge` owns one kernel's channels, shared by every socket on that kernel. It
reads the kernel's iopub, feeds comm messages to its :class:`~.router.Router`, and carries out
the actions the router returns. The :class:`~.manager.BridgeManager` makes bridges on first use,
closes them when their last user leaves, and tells them when their kernel restarts, dies or shuts
down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .actions import Action, Close, Deliver, Lost, Opened, Presence, ToKernel
from .channels import KernelChannels
from .comm_lookup import CommLookup
from .context import detached
from .errors import (
    KERNEL_DIED,
    KERNEL_RESTARTING,
    KERNEL_SHUT_DOWN,
    CloseCode,
    KernelFault,
    KernelGone,
    KernelTimeout,
)
from .framing import Buffers, dumps
from .inflight import InFlight
from .kernel_message import KernelCommMessage
from .protocol import (
    BUSY,
    COMM_CLOSE,
    COMM_ID_HEADER,
    COMM_MSG_TYPES,
    IDLE,
    SHUTDOWN_REPLY,
    STATUS,
    SUBSHELL_ID_HEADER,
)
from .router import Router, Subscriber
from .session import CommLog
from .sinks import Follower, Sink
from .stats import KernelStats
from .subshell import Subshell
from .writer import Bursts

# What _read_iopub reads; the rest is dropped unread. Status: REST waits for the kernel to
# finish handling a message (``settled``).
IOPUB_TYPES = COMM_MSG_TYPES | {SHUTDOWN_REPLY, STATUS}

SERVER_STOPPING = "server stopping"
BRIDGE_FAILED = "bridge to the kernel failed"


class KernelBridge:
    """Routes one kernel's comms to their subscribers."""

    def __init__(
        self,
        kernel_id: str,
        channels: KernelChannels,
        *,
        kernel_timeout: float,
        log: logging.Logger,
        on_closed: Callable[[KernelBridge], None],
        kernel_generation: object = None,
        stats: KernelStats | None = None,
        subshell_targets: Collection[str] = (),
        client_in_flight_bytes: int = 1 << 62,
        kernel_in_flight_bytes: int = 1 << 62,
        private_comms: bool = False,
    ) -> None:
        self.kernel_id = kernel_id
        self.kernel_generation = kernel_generation
        self.channels = channels
        self.kernel_timeout = kernel_timeout
        self.log = log
        self.router = Router(private=private_comms)
        self.sinks: dict[str, Sink] = {}
        self.bursts = Bursts()  # the sockets' writers with frames of this turn still to write
        self.followers: dict[Follower, frozenset[str]] = {}  # and the targets each follows
        self.logs: dict[str, CommLog] = {}  # of comms with sessions or event streams, by comm id
        self.users = 0
        self.idle_since: float | None = None  # loop time its last user left, while unused
        self.closed = False
        self._on_closed = on_closed
        self.stats = stats if stats is not None else KernelStats()
        self.subshell = Subshell(subshell_targets, kernel_id, log)
        self._idle: dict[str, asyncio.Future[None]] = {}
        self.in_flight = InFlight(client_in_flight_bytes, kernel_in_flight_bytes)
        self.comms = CommLookup(self.router, self.request)  # those it has not seen open
        self._reader: asyncio.Task[None] | None = None  # of iopub

    async def start(self) -> None:
        await self.channels.start(self.kernel_timeout)
        self._reader = asyncio.create_task(self._read_iopub())
        self._reader.add_done_callback(self._reader_done)
        if self.comms.unconfirmed:  # in the background: a busy kernel answers late
            detached(asyncio.ensure_future, self.comms.confirm())
        await self.subshell.create(self.channels, self.kernel_timeout)

    def _report_lost(self, lost: Lost) -> None:
        self.stats.lost += lost.count
        self.log.warning(
            "Kernel %s, comm %s: %d messages never reached the server (iopub overflow)",
            self.kernel_id,
            lost.comm_id,
            lost.count,
        )
        comm = self.router.comms.get(lost.comm_id)
        for client_id in comm.clients if comm is not None else ():
            sink = self.sinks.get(client_id)
            if sink is not None:
                sink.lost(lost.count)

    def _header(self, action: ToKernel) -> dict[str, str] | None:
        """Extra header fields of a message to the kernel: the subshell that serves comms to
        its target (the bridge's, if the target opted in); a comm_close's comm, for the other
        servers on this kernel (see :meth:`_closing_seen`)."""
        header = {}
        if (subshell_id := self.subshell.serving(action.target_name)) is not None:
            header[SUBSHELL_ID_HEADER] = subshell_id
        if action.msg_type == COMM_CLOSE:
            header[COMM_ID_HEADER] = action.content["comm_id"]
        return header or None

    # -- subscribers ---------------------------------------------------------------------------

    def open_comm(
        self,
        client: Subscriber,
        sink: Sink,
        target_name: str,
        data: Any,
        query: Mapping[str, str],
        *,
        owned: bool = True,
        metadata: Mapping[str, Any] | None = None,
        buffers: Buffers = (),
    ) -> str:
        """Open a new comm in the kernel (owned by ``client`` if ``owned``); the comm_open's id."""
        self.check_open()
        actions = self.router.open_comm(
            client, target_name, data, query, owned=owned, metadata=metadata, buffers=buffers
        )
        self.sinks[client.id] = sink
        [msg_id] = self.perform(actions)
        return msg_id

    def attach(self, client: Subscriber, sink: Sink) -> None:
        """Subscribe ``client`` to an existing comm (:class:`~.errors.CommNotFound` if unknown)."""
        self.check_open()
        actions = self.router.attach(client)
        self.sinks[client.id] = sink
        self.perform(actions)

    def send(self, client_id: str, data: Any, buffers: Buffers = (), size: int = 0) -> None:
        """A client's message to its comm; :class:`~.errors.ReadOnly` if it may only receive.

        ``size`` is the bytes of the client's frame, for the traffic counters.
        """
        for msg_id in self.perform(self.router.send(client_id, data, buffers)):
            self.stats.messages_to_kernel += 1
            self.stats.bytes_to_kernel += size
            self.in_flight.sent(client_id, msg_id, size)

    def awaits_answers(self, client_id: str) -> bool:
        """Whether the kernel is still handling messages of this client: what it sends
        meanwhile may be their answers, which the client caused."""
        return self.in_flight.count(client_id) > 0

    def room(self, client_id: str) -> asyncio.Future[None] | None:
        """None if the client may send more now, else a future done once it may: what the
        kernel has not handled yet is bounded per client and per kernel."""
        return None if self.closed else self.in_flight.room(client_id)

    def post(self, client: Subscriber, sink: Sink, data: Any, *, count: int, size: int = 0) -> str:
        """Send one message for a client not attached to the comm (a REST call); its id.

        Up to ``count`` of the kernel's replies to it (messages on the comm whose parent it is)
        go to ``sink``, which is closed once they all arrived; see :meth:`leave` to stop sooner.
        """
        [msg_id] = self.perform(self.router.post(client, data))
        self.stats.messages_to_kernel += 1
        self.stats.bytes_to_kernel += size
        self.in_flight.sent(client.id, msg_id, size)
        if count > 0:
            self.router.expect_replies(client, msg_id, count)
            self.sinks[client.id] = sink
        return msg_id

    def close_comm(self, comm_id: str) -> str:
        """Close a comm for the server: its subscribers close with 1000; the comm_close's id."""
        msg_id, *_ = self.perform(self.router.close_comm(comm_id))
        return msg_id

    def count_drop(self) -> None:
        """A subscriber fell too far behind and is being closed."""
        self.stats.drops += 1

    def leave(self, client_id: str) -> None:
        """A subscriber went away."""
        self.sinks.pop(client_id, None)
        self.perform(self.router.leave(client_id))

    def follow(self, follower: Follower, target_names: frozenset[str]) -> None:
        """Tell ``follower`` of every comm the kernel opens to one of ``target_names``, and
        close it with the bridge."""
        self.check_open()
        self.followers[follower] = target_names

    def unfollow(self, follower: Follower) -> None:
        self.followers.pop(follower, None)

    def comms_of(self, target_names: frozenset[str], user: str) -> list[tuple[str, str]]:
        """The comms (id, target) of these targets that ``user`` may use."""
        return [
            (comm.id, comm.target_name)
            for comm in self.router.comms.values()
            if comm.target_name in target_names and self.router.may_use(comm.id, user)
        ]

    def check_open(self) -> None:
        """A bridge closes when its kernel goes away, possibly between a handshake and its open."""
        if self.closed:
            raise KernelFault("the bridge to the kernel closed")

    # -- kernel requests -----------------------------------------------------------------------

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """Send a shell request and await its reply, at most ``kernel_timeout`` seconds."""
        return await self.channels.request(msg_type, content, self.kernel_timeout)

    async def settled(self, msg_id: str) -> None:
        """Return once the kernel has handled the request ``msg_id`` (its iopub ``status: idle``).

        Await it right after sending, with no other ``await`` between, so the status cannot be
        missed. Raises :class:`~.errors.KernelTimeout` after ``kernel_timeout`` seconds.
        """
        idle = self._idle[msg_id] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(idle, self.kernel_timeout)
        except asyncio.TimeoutError:
            late = f"the kernel did not handle the request within {self.kernel_timeout} s"
            raise KernelTimeout(late) from None
        finally:
            self._idle.pop(msg_id, None)

    # -- the kernel's side ---------------------------------------------------------------------

    async def _read_iopub(self) -> None:
        while True:
            msg = await self.channels.next_iopub()
            msg_type = msg["msg_type"]
            if msg_type in COMM_MSG_TYPES:
                self.perform(self.router.from_kernel(KernelCommMessage.from_jupyter(msg)))
            elif msg_type == STATUS:
                state = msg["content"].get("execution_state")
                parent = msg["parent_header"]
                if state == IDLE:
                    self._handled(parent.get("msg_id"))
                elif state == BUSY and parent.get("msg_type") == COMM_CLOSE:
                    self._closing_seen(parent)
            elif msg_type == SHUTDOWN_REPLY:
                restart = msg["content"].get("restart")
                self.kernel_gone(*_restart_or_shutdown(restart))
                return

    def _closing_seen(self, parent: Mapping[str, Any]) -> None:
        """The kernel handles a comm_close: one sent through another server on this kernel
        (a gateway kernel's) ends that comm here too. Such a comm_close names its comm in
        its header, which the kernel copies into the parent header of its status."""
        comm_id = parent.get(COMM_ID_HEADER)
        if isinstance(comm_id, str):
            self.perform(self.router.closed_elsewhere(comm_id))

    def _handled(self, msg_id: str | None) -> None:
        """The kernel has handled the message ``msg_id`` (its iopub ``status: idle``)."""
        if msg_id is None:
            return
        idle = self._idle.get(msg_id)
        if idle is not None and not idle.done():
            idle.set_result(None)
        handled = self.in_flight.handled(msg_id)
        if handled is not None:
            # still in flight for the rest of this turn: its answers, routed just before, are
            # written when the turn ends (a socket's burst) and must still count as its own
            asyncio.get_running_loop().call_soon(self.in_flight.answered, *handled)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.closed:
            return
        error = task.exception()
        if isinstance(error, KernelGone):  # seen by a gateway kernel's channels
            self.kernel_gone(error.close_code, error.reason)
        elif error is not None:
            self.log.error("Bridge to kernel %s failed", self.kernel_id, exc_info=error)
            self.kernel_gone(CloseCode.BRIDGE_FAILED, BRIDGE_FAILED)

    # -- actions -------------------------------------------------------------------------------

    def perform(self, actions: list[Action]) -> list[str]:
        """Carry out what the router decided; the ids of the messages sent to the kernel."""
        sent = []
        for action in actions:
            if isinstance(action, Deliver):
                self.stats.messages_from_kernel += 1
                self.stats.bytes_from_kernel += action.frame.size
                if self.logs and (log := self.logs.get(action.comm_id)) is not None:
                    log.add(action.frame, action.clients, action.broadcast)
                for client_id in action.clients:
                    sink = self.sinks.get(client_id)
                    if sink is not None:  # a sink may close others on its way out
                        sink.deliver(action.frame)
            elif isinstance(action, Close):
                sink = self.sinks.pop(action.client, None)
                if sink is not None:
                    sink.close(action.code, action.reason)
            elif isinstance(action, Lost):
                self._report_lost(action)
            elif isinstance(action, Opened):
                for follower, target_names in tuple(self.followers.items()):
                    if action.target_name in target_names:
                        follower.kernel_opened(action)
            elif isinstance(action, Presence):
                frame = dumps(action.event)
                for client_id in action.clients:
                    if (sink := self.sinks.get(client_id)) is not None:
                        sink.presence(frame)
            elif isinstance(action, ToKernel):
                sent.append(
                    self.channels.send(
                        action.msg_type,
                        action.content,
                        action.metadata,
                        action.buffers,
                        self._header(action),
                    )
                )
        return sent

    # -- lifecycle -----------------------------------------------------------------------------

    def kernel_gone(self, code: CloseCode, reason: str) -> None:
        """Close every subscriber with ``code`` and the bridge with them."""
        if self.closed:
            return
        self.log.info("Kernel %s: %s; closing %d sockets", self.kernel_id, reason, len(self.sinks))
        self.perform(self.router.kernel_gone(code, reason))
        self._close_followers(code, reason)
        self.subshell.forget()
        self.close()

    # The kernel manager's restart callbacks. They run while it iterates over its callbacks, so
    # the bridge's closing (which unregisters them) waits for the next turn of the loop.

    def kernel_restarted(self) -> None:
        """The kernel manager restarted the kernel after it died."""
        asyncio.get_running_loop().call_soon(
            self.kernel_gone, CloseCode.RESTARTING, KERNEL_RESTARTING
        )

    def kernel_died(self) -> None:
        """The kernel died and the kernel manager gave up restarting it."""
        asyncio.get_running_loop().call_soon(self.kernel_gone, CloseCode.BRIDGE_FAILED, KERNEL_DIED)

    def server_stopping(self) -> None:
        """Close the comms clients opened in the kernel, then every subscriber."""
        self.perform(self.router.server_stopping(SERVER_STOPPING))
        self._close_followers(CloseCode.GOING_AWAY, SERVER_STOPPING)
        self.close()

    def _close_followers(self, code: CloseCode, reason: str) -> None:
        followers, self.followers = self.followers, {}
        for follower in followers:
            follower.close(code, reason)

    def close(self) -> None:
        """Stop reading, fail pending requests, release the kernel client."""
        if self.closed:
            return
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
        for idle in self._idle.values():
            if not idle.done():
                idle.set_exception(KernelFault("the bridge to the kernel closed"))
        self.in_flight.release()
        self.subshell.delete(self.channels)
        self.channels.stop()
        self._on_closed(self)


def _restart_or_shutdown(restart: bool) -> tuple[CloseCode, str]:
    if restart:
        return CloseCode.RESTARTING, KERNEL_RESTARTING
    return CloseCode.GOING_AWAY, KERNEL_SHUT_DOWN
