"""One bridge per kernel: the seam between the I/O (sockets, kernel channels) and the router.

A :class:`KernelBridge` owns one kernel client, shared by every socket on that kernel. It reads the
kernel's iopub and shell channels, feeds comm messages to its :class:`~.router.Router`, and carries
out the actions the router returns. The :class:`BridgeManager` (owned by the extension app) makes
bridges on first use, closes them when their last user leaves, and tells them when their kernel
restarts, dies or shuts down.

Kernel subshells (JEP 91): comms to the targets named in ``subshell_targets`` are served by a
subshell of the kernel that the bridge creates at start (if the kernel's ``kernel_info_reply``
lists the ``kernel subshells`` feature) and deletes at close: their handlers then run in the
subshell's thread and answer while a cell keeps the main shell busy. The ``comm_open`` goes to
the subshell too, because ipykernel sends a comm's messages to the shell that the comm last
published from (``Comm._reply_subshell_for``), whatever the header says; a comm opened on the
main shell would stay there. Opt-in per target, because those handlers then run concurrently
with the kernel's cells, which breaks code that is not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .activity import IDLE, ActivityRecorder
from .channels import (
    COMM_INFO_REQUEST,
    KERNEL_INFO_REQUEST,
    STATUS,
    ClientChannels,
    KernelChannels,
)
from .errors import CloseCode, CommNotFound, KernelFault, KernelTimeout
from .framing import Buffers, OutgoingFrame
from .router import COMM_MSG_TYPES, Action, Client, Close, Deliver, Router, ToKernel
from .stats import KernelStats

SHUTDOWN_REPLY = "shutdown_reply"
CREATE_SUBSHELL_REQUEST = "create_subshell_request"
DELETE_SUBSHELL_REQUEST = "delete_subshell_request"
SUBSHELLS_FEATURE = "kernel subshells"  # in kernel_info_reply's supported_features
# What _read_iopub reads; the rest is dropped unread. Status: REST waits for the kernel to
# finish handling a message (``settled``).
IOPUB_TYPES = COMM_MSG_TYPES | {SHUTDOWN_REPLY, STATUS}
KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"

KERNEL_RESTARTING = "kernel restarting"
KERNEL_SHUT_DOWN = "kernel shut down"
KERNEL_DIED = "kernel died"
SERVER_STOPPING = "server stopping"
BRIDGE_FAILED = "bridge to the kernel failed"


class Sink(Protocol):
    """A subscriber as the bridge sees it (a WebSocket, an SSE stream, a REST call)."""

    def deliver(self, frame: OutgoingFrame) -> None:
        """Queue one comm message for the subscriber; must not block."""

    def close(self, code: CloseCode, reason: str) -> None:
        """End the subscription; the bridge has forgotten the subscriber already."""


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
    ) -> None:
        self.kernel_id = kernel_id
        self.kernel_generation = kernel_generation
        self.channels = channels
        self.kernel_timeout = kernel_timeout
        self.log = log
        self.router = Router()
        self.sinks: dict[str, Sink] = {}
        self.users = 0
        self.closed = False
        self._on_closed = on_closed
        self.stats = stats if stats is not None else KernelStats()
        self.subshell_targets = frozenset(subshell_targets)
        self.subshell_id: str | None = None  # the bridge's own kernel subshell, if any
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._idle: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.channels.start(self.kernel_timeout)
        for read in (self._read_iopub, self._read_shell):
            task = asyncio.create_task(read())
            self._tasks.add(task)
            task.add_done_callback(self._reader_done)
        if self.subshell_targets:
            try:
                self.subshell_id = await self._create_subshell()
            except KernelFault as e:  # the main shell still serves every comm
                self.log.warning("Kernel %s: no subshell (%s)", self.kernel_id, e)

    async def _create_subshell(self) -> str | None:
        """A subshell of the kernel for the opted-in targets, or None if it has none."""
        info = await self.request(KERNEL_INFO_REQUEST, {})
        if SUBSHELLS_FEATURE not in info["content"].get("supported_features", ()):
            self.log.info("Kernel %s has no subshells; comms use its main shell", self.kernel_id)
            return None
        reply = await self.channels.control_request(
            CREATE_SUBSHELL_REQUEST, {}, self.kernel_timeout
        )
        subshell_id = reply["content"].get("subshell_id")
        if reply["content"].get("status") != "ok" or not isinstance(subshell_id, str):
            self.log.warning("Kernel %s created no subshell: %s", self.kernel_id, reply["content"])
            return None
        return subshell_id

    def _subshell_for(self, target_name: str) -> str | None:
        """The subshell that serves comms to this target: the bridge's, if the target opted in."""
        return self.subshell_id if target_name in self.subshell_targets else None

    # -- subscribers ---------------------------------------------------------------------------

    def open_comm(
        self,
        client: Client,
        sink: Sink,
        target_name: str,
        data: Any,
        query: Mapping[str, str],
        *,
        owned: bool = True,
    ) -> str:
        """Open a new comm in the kernel (owned by ``client`` if ``owned``); the comm_open's id."""
        self.check_open()
        self.sinks[client.id] = sink
        [msg_id] = self.perform(
            self.router.open_comm(client, target_name, data, query, owned=owned)
        )
        return msg_id

    async def require_comm(self, comm_id: str) -> None:
        """:class:`CommNotFound` unless the kernel has this comm (asked if the bridge has not
        seen the comm open)."""
        if comm_id not in self.router.comms and comm_id not in await self.refresh_comms():
            raise CommNotFound(f"no comm {comm_id} in this kernel")

    def attach(self, client: Client, sink: Sink) -> None:
        """Subscribe ``client`` to an existing comm (:class:`~.errors.CommNotFound` if unknown)."""
        self.check_open()
        self.router.attach(client)
        self.sinks[client.id] = sink

    def send(self, client_id: str, data: Any, buffers: Buffers = (), size: int = 0) -> None:
        """A client's message to its comm; :class:`~.errors.ReadOnly` if it may only receive.

        ``size`` is the bytes of the client's frame, for the traffic counters.
        """
        if self.perform(self.router.send(client_id, data, buffers)):
            self.stats.messages_to_kernel += 1
            self.stats.bytes_to_kernel += size

    def post(self, client: Client, sink: Sink, data: Any, *, count: int, size: int = 0) -> str:
        """Send one message for a client not attached to the comm (a REST call); its id.

        Up to ``count`` of the kernel's replies to it (messages on the comm whose parent it is)
        go to ``sink``, which is closed once they all arrived; see :meth:`leave` to stop sooner.
        """
        [msg_id] = self.perform(self.router.post(client, data))
        self.stats.messages_to_kernel += 1
        self.stats.bytes_to_kernel += size
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

    def check_open(self) -> None:
        """A bridge closes when its kernel goes away, possibly between a handshake and its open."""
        if self.closed:
            raise KernelFault("the bridge to the kernel closed")

    # -- kernel requests -----------------------------------------------------------------------

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """Send a shell request and await its reply, at most ``kernel_timeout`` seconds."""
        msg_id = self.channels.send(msg_type, content)
        return await self._answer(self._replies, msg_id, f"no {msg_type} reply")

    async def settled(self, msg_id: str) -> None:
        """Return once the kernel has handled the request ``msg_id`` (its iopub ``status: idle``).

        Await it right after sending, with no other ``await`` between, so the status cannot be
        missed. Raises :class:`~.errors.KernelTimeout` after ``kernel_timeout`` seconds.
        """
        await self._answer(self._idle, msg_id, "the kernel did not handle the request")

    async def _answer(self, waiting: dict[str, asyncio.Future[Any]], msg_id: str, late: str) -> Any:
        """What the readers resolve ``waiting[msg_id]`` with; :class:`KernelTimeout` if late."""
        answer = waiting[msg_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(answer, self.kernel_timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"{late} within {self.kernel_timeout} s") from None
        finally:
            waiting.pop(msg_id, None)

    async def refresh_comms(self) -> dict[str, Any]:
        """Ask the kernel which comms it has; learn those the bridge had not seen opening."""
        reply = await self.request(COMM_INFO_REQUEST, {})
        comms = reply["content"].get("comms", {})
        for comm_id, info in comms.items():
            self.router.comm_exists(comm_id, info.get("target_name", ""))
        return comms

    # -- the kernel's side ---------------------------------------------------------------------

    async def _read_iopub(self) -> None:
        while True:
            msg = await self.channels.next_iopub()
            msg_type = msg["msg_type"]
            if msg_type in COMM_MSG_TYPES:
                self.perform(
                    self.router.from_kernel(
                        msg_type,
                        msg["content"],
                        msg.get("metadata") or {},
                        msg.get("buffers") or (),
                        msg["parent_header"].get("msg_type"),
                        msg["parent_header"].get("msg_id"),
                    )
                )
            elif msg_type == STATUS:
                if msg["content"].get("execution_state") == IDLE:
                    _resolve(self._idle.get(msg["parent_header"].get("msg_id")), None)
            elif msg_type == SHUTDOWN_REPLY:
                restart = msg["content"].get("restart")
                self.kernel_gone(*_restart_or_shutdown(restart))
                return

    async def _read_shell(self) -> None:
        while True:
            msg = await self.channels.next_shell()
            _resolve(self._replies.get(msg["parent_header"].get("msg_id")), msg)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.closed:
            return
        error = task.exception()
        if error is not None:
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
                for client_id in action.clients:
                    sink = self.sinks.get(client_id)
                    if sink is not None:  # a sink may close others on its way out
                        sink.deliver(action.frame)
            elif isinstance(action, Close):
                sink = self.sinks.pop(action.client, None)
                if sink is not None:
                    sink.close(action.code, action.reason)
            elif isinstance(action, ToKernel):
                subshell_id = self._subshell_for(action.target_name)
                sent.append(
                    self.channels.send(
                        action.msg_type,
                        action.content,
                        action.metadata,
                        action.buffers,
                        subshell_id,
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
        self.subshell_id = None  # gone with the kernel
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
        self.close()

    def close(self) -> None:
        """Stop reading, fail pending requests, release the kernel client."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for waiting in (self._replies, self._idle):
            for pending in waiting.values():
                if not pending.done():
                    pending.set_exception(KernelFault("the bridge to the kernel closed"))
        if self.subshell_id is not None:  # its thread would outlive the bridge in the kernel
            self.channels.send_control(DELETE_SUBSHELL_REQUEST, {"subshell_id": self.subshell_id})
        self.channels.stop()
        self._on_closed(self)


def _resolve(future: asyncio.Future[Any] | None, result: Any) -> None:
    if future is not None and not future.done():
        future.set_result(result)


def _restart_or_shutdown(restart: bool) -> tuple[CloseCode, str]:
    if restart:
        return CloseCode.RESTARTING, KERNEL_RESTARTING
    return CloseCode.GOING_AWAY, KERNEL_SHUT_DOWN


class BridgeManager:
    """The bridges of one server, one per kernel in use."""

    def __init__(
        self,
        kernel_manager: Any,
        *,
        kernel_timeout: float,
        log: logging.Logger,
        event_logger: Any = None,
        subshell_targets: Collection[str] = (),
        record_activity: bool = True,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.kernel_timeout = kernel_timeout
        self.subshell_targets = frozenset(subshell_targets)
        self.record_activity = record_activity
        self._recorders: dict[str, ActivityRecorder] = {}  # kernels whose activity bridges record
        self.log = log
        self.bridges: dict[str, KernelBridge] = {}
        self.stats: dict[str, KernelStats] = {}
        self._starting: dict[str, asyncio.Task[KernelBridge]] = {}
        self.event_logger = event_logger
        if event_logger is not None:
            event_logger.add_listener(
                schema_id=KERNEL_ACTIONS_SCHEMA, listener=self._on_kernel_action
            )

    def kernel_exists(self, kernel_id: str) -> bool:
        return kernel_id in self.kernel_manager

    async def acquire(self, kernel_id: str) -> KernelBridge:
        """The kernel's bridge, started if need be; hold it until :meth:`release`."""
        bridge = self.bridges.get(kernel_id)
        if bridge is None or bridge.closed:
            starting = self._starting.get(kernel_id)
            if starting is None:
                starting = self._starting[kernel_id] = asyncio.create_task(self._start(kernel_id))
                starting.add_done_callback(lambda _: self._starting.pop(kernel_id, None))
            bridge = await asyncio.shield(starting)
        bridge.users += 1
        return bridge

    def release(self, bridge: KernelBridge) -> None:
        bridge.users -= 1
        if bridge.users <= 0:
            bridge.close()

    @asynccontextmanager
    async def using(self, kernel_id: str) -> AsyncIterator[KernelBridge]:
        """``async with manager.using(kernel_id) as bridge:`` holds a bridge for one call."""
        bridge = await self.acquire(kernel_id)
        try:
            yield bridge
        finally:
            self.release(bridge)

    async def _start(self, kernel_id: str) -> KernelBridge:
        kernel = self.kernel_manager.get_kernel(kernel_id)
        # A session of its own: a shell socket's identity is its session id, and the kernel
        # answers only one of the sockets that share one.
        session = kernel.session.clone()
        session.session = uuid.uuid4().hex
        channels = ClientChannels(
            kernel.client(session=session),
            iopub_types=IOPUB_TYPES,
            control=bool(self.subshell_targets),
        )
        bridge = KernelBridge(
            kernel_id,
            channels,
            kernel_timeout=self.kernel_timeout,
            log=self.log,
            on_closed=self._forget,
            kernel_generation=self._generation(kernel_id),
            stats=self.stats.setdefault(kernel_id, KernelStats()),
            subshell_targets=self.subshell_targets,
        )
        try:
            await bridge.start()
        except BaseException:
            channels.stop()
            raise
        if bridge.closed:  # the kernel went away while the bridge started
            raise KernelFault(f"kernel {kernel_id} went away while the bridge started")
        self.bridges[kernel_id] = bridge
        self._watch(kernel_id, bridge, add=True)
        if self.record_activity:
            recorder = ActivityRecorder(self.kernel_manager, kernel_id, session.unpack, self.log)
            if recorder.take_over():
                channels.observe_iopub = recorder.record
                self._recorders[kernel_id] = recorder
        self.log.debug("Bridge to kernel %s started", kernel_id)
        return bridge

    def _forget(self, bridge: KernelBridge) -> None:
        if self.bridges.get(bridge.kernel_id) is bridge:
            del self.bridges[bridge.kernel_id]
            self._watch(bridge.kernel_id, bridge, add=False)
            recorder = self._recorders.pop(bridge.kernel_id, None)
            if recorder is not None:
                recorder.hand_back()
            self.log.debug("Bridge to kernel %s closed", bridge.kernel_id)

    def _watch(self, kernel_id: str, bridge: KernelBridge, *, add: bool) -> None:
        """(Un)register the kernel manager's callbacks for automatic restarts and deaths."""
        if kernel_id not in self.kernel_manager:
            return
        register = (
            self.kernel_manager.add_restart_callback
            if add
            else self.kernel_manager.remove_restart_callback
        )
        register(kernel_id, bridge.kernel_restarted, "restart")
        register(kernel_id, bridge.kernel_died, "dead")

    def _generation(self, kernel_id: str) -> object:
        """What tells one start of a kernel from the next: jupyter_client makes a new ``ready``
        future each time it starts (or restarts) a kernel."""
        return getattr(self.kernel_manager.get_kernel(kernel_id), "ready", None)

    def _outlived_its_kernel(self, bridge: KernelBridge) -> bool:
        """A bridge made during a restart already talks to the new kernel; older ones do not."""
        return bridge.kernel_generation is not self._generation(bridge.kernel_id)

    async def _on_kernel_action(self, logger: Any, schema_id: str, data: Mapping[str, Any]) -> None:
        """Catch shutdowns and restarts that sent no ``shutdown_reply`` (killed, culled, hung)."""
        bridge = self.bridges.get(data.get("kernel_id", ""))
        if bridge is None or data.get("status") != "success":
            return
        action = data.get("action")
        if action == "shutdown":
            bridge.kernel_gone(CloseCode.GOING_AWAY, KERNEL_SHUT_DOWN)
        elif action == "restart" and self._outlived_its_kernel(bridge):
            bridge.kernel_gone(CloseCode.RESTARTING, KERNEL_RESTARTING)

    def status(self) -> dict[str, dict[str, int]]:
        """Per kernel that has been bridged and still lives: its traffic and current subscribers."""
        for kernel_id in [k for k in self.stats if not self.kernel_exists(k)]:
            del self.stats[kernel_id]
        status = {}
        for kernel_id, stats in self.stats.items():
            bridge = self.bridges.get(kernel_id)
            comms = bridge.router.comms.values() if bridge is not None else ()
            status[kernel_id] = {
                "comms": len(comms),
                "clients": sum(len(comm.clients) for comm in comms),
                **stats.as_dict(),
            }
        return status

    def stop(self) -> None:
        """The server stops: close every bridge's comms and sockets."""
        for bridge in list(self.bridges.values()):
            bridge.server_stopping()
        for task in self._starting.values():
            task.cancel()
        if self.event_logger is not None:
            self.event_logger.remove_listener(
                schema_id=KERNEL_ACTIONS_SCHEMA, listener=self._on_kernel_action
            )
