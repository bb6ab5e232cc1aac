"""The bridges of one server, and everything that couples them to jupyter_server's kernel manager.

:class:`BridgeManager` (owned by the extension app) makes a kernel's bridge on first use and
closes it when its last user leaves; gives each bridge a kernel client of its own; registers the
kernel manager's restart callbacks and listens to its kernel-action events, so that bridges learn
of restarts, deaths and shutdowns; hands jupyter_server's activity record of a bridged kernel to
the bridge (:mod:`.activity`); and keeps the per-kernel state that outlives a bridge (its
traffic counters).

With a gateway, several servers may serve one kernel: a server adopts a gateway kernel that
another one started on first use (jupyter_server lists only the kernels it started), and hands
it back untouched when it stops, rather than shutting it down with its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from jupyter_server.gateway.managers import GatewayKernelManager, GatewayMappingKernelManager
from tornado import web

from .activity import ActivityRecorder
from .bridge import IOPUB_TYPES, KernelBridge
from .channels import open_channels
from .context import detached
from .errors import (
    KERNEL_DIED,
    KERNEL_RESTARTING,
    KERNEL_SHUT_DOWN,
    CloseCode,
    GatewayError,
    KernelFault,
    KernelNotRunning,
)
from .router import Comm, Router
from .stats import KernelStats

KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
RESTART_GAP = 0.5  # seconds to look again at a kernel found dead: a restart may be under way


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
        idle_timeout: float = 0,
        gateway_max_message_bytes: int = 10 * 1024 * 1024,
        check_interval: float = 0,
        iopub_hwm: int = 1000,
        in_flight_bytes: tuple[int, int] = (1 << 62, 1 << 62),
        ping_interval: float = 0,
        ping_timeout: float | None = None,
        private_comms: bool = False,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.kernel_timeout = kernel_timeout
        self.private_comms = private_comms  # a comm a user opened is that user's (router, rule 8)
        self.idle_timeout = idle_timeout  # seconds an unused bridge stays open
        self.gateway_max_message_bytes = gateway_max_message_bytes
        # a gateway kernel's connection: tornado waits for a pong at most until the next ping
        self.ping = (ping_interval, min(ping_timeout or ping_interval, ping_interval))
        self.check_interval = check_interval  # between looks at an unwatched kernel's process
        self.iopub_hwm = iopub_hwm
        self.in_flight_bytes = in_flight_bytes  # most unhandled by a kernel: (per client, in all)
        self.adopted: set[str] = set()  # gateway kernels another server started
        self._watchers: dict[str, asyncio.Task[None]] = {}  # of kernels no restarter watches
        self.subshell_targets = frozenset(subshell_targets)
        self.record_activity = record_activity
        self._recorders: dict[str, ActivityRecorder] = {}  # kernels whose activity bridges record
        self.log = log
        self.bridges: dict[str, KernelBridge] = {}
        # the comms closed bridges knew, for the next: kernel id -> (kernel generation, comms)
        self._known_comms: dict[str, tuple[object, dict[str, Comm]]] = {}
        self.stats: dict[str, KernelStats] = {}
        self._starting: dict[str, asyncio.Task[KernelBridge]] = {}
        self.event_logger = event_logger
        if event_logger is not None:
            event_logger.add_listener(
                schema_id=KERNEL_ACTIONS_SCHEMA, listener=self._on_kernel_action
            )

    def kernel_exists(self, kernel_id: str) -> bool:
        return kernel_id in self.kernel_manager

    async def find_kernel(self, kernel_id: str) -> bool:
        """Whether the kernel exists; a gateway kernel that another server started is adopted."""
        if self.kernel_exists(kernel_id):
            return True
        if not isinstance(self.kernel_manager, GatewayMappingKernelManager):
            return False
        try:
            await self.kernel_manager.start_kernel(kernel_id=kernel_id)  # connects, no start
        except web.HTTPError as e:
            raise GatewayError(f"the gateway could not be asked for the kernel: {e}") from e
        adopted: Any = self.kernel_manager.get_kernel(kernel_id)
        if adopted.kernel is None:  # its model: the gateway has no such kernel
            self.kernel_manager.remove_kernel(kernel_id)
            return False
        self.adopted.add(kernel_id)
        self.log.info("Adopted gateway kernel %s, started by another server", kernel_id)
        return True

    async def acquire(self, kernel_id: str) -> KernelBridge:
        """The kernel's bridge, started if need be; hold it until :meth:`release`."""
        bridge = self.bridges.get(kernel_id)
        if bridge is None or bridge.closed:
            starting = self._starting.get(kernel_id)
            if starting is None:
                starting = detached(asyncio.create_task, self._start(kernel_id))
                self._starting[kernel_id] = starting
                starting.add_done_callback(lambda _: self._starting.pop(kernel_id, None))
            bridge = await asyncio.shield(starting)
        bridge.users += 1
        bridge.idle_since = None
        return bridge

    def hold(self, bridge: KernelBridge) -> None:
        """Hold a bridge already held by the caller, until :meth:`release`."""
        bridge.users += 1

    def release(self, bridge: KernelBridge) -> None:
        """Let go of a bridge; unused for ``idle_timeout`` seconds, it closes."""
        bridge.users -= 1
        if bridge.users > 0:
            return
        if self.idle_timeout <= 0:
            bridge.close()
            return
        loop = asyncio.get_running_loop()
        idle_since = bridge.idle_since = loop.time()
        detached(loop.call_later, self.idle_timeout, self._close_if_idle, bridge, idle_since)

    @staticmethod
    def _close_if_idle(bridge: KernelBridge, idle_since: float) -> None:
        if bridge.users <= 0 and bridge.idle_since == idle_since:
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
        if not isinstance(kernel, GatewayKernelManager) and not await self._running(kernel):
            raise KernelNotRunning(
                f"kernel {kernel_id} is not running (it died, and nothing restarted it)"
            )
        # A session of its own: a shell socket's identity is its session id, and the kernel
        # answers only one of the sockets that share one.
        session = kernel.session.clone()
        session.session = uuid.uuid4().hex
        recorder = None
        if self.record_activity:
            recorder = ActivityRecorder(self.kernel_manager, kernel_id, session.unpack, self.log)
            if not recorder.take_over():
                recorder = None
        channels = open_channels(
            kernel,
            session,
            log=self.log,
            iopub_types=IOPUB_TYPES,
            observe_iopub=recorder.record if recorder is not None else None,
            iopub_hwm=self.iopub_hwm,
            max_message_bytes=self.gateway_max_message_bytes,
            ping_interval=self.ping[0],
            ping_timeout=self.ping[1],
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
            client_in_flight_bytes=self.in_flight_bytes[0],
            kernel_in_flight_bytes=self.in_flight_bytes[1],
            private_comms=self.private_comms,
        )
        generation, comms = self._known_comms.pop(kernel_id, (None, {}))
        if generation is bridge.kernel_generation:  # not if the kernel restarted since
            bridge.comms.remember(comms)
        try:
            await bridge.start()
        except BaseException:
            channels.stop()
            if recorder is not None:
                recorder.hand_back()
            raise
        if bridge.closed:  # the kernel went away while the bridge started (channels stopped)
            if recorder is not None:
                recorder.hand_back()
            raise KernelFault(f"kernel {kernel_id} went away while the bridge started")
        self.bridges[kernel_id] = bridge
        self._watch(kernel_id, bridge, add=True)
        if recorder is not None:
            self._recorders[kernel_id] = recorder
        self.log.debug("Bridge to kernel %s started", kernel_id)
        return bridge

    async def _running(self, kernel: Any) -> bool:
        """Whether a local kernel is running, once a (re)start under way has ended: a resume
        that comes during a restart is served by the new kernel, not refused."""
        for _ in range(2):  # a restart starts the new kernel a moment after the old one died
            ready = kernel.ready
            if not ready.done():
                with contextlib.suppress(Exception):  # a failed start: not running
                    await asyncio.wait_for(asyncio.wrap_future(ready), self.kernel_timeout)
            if await kernel.is_alive():
                return True
            await asyncio.sleep(RESTART_GAP)
        return False

    def _forget(self, bridge: KernelBridge) -> None:
        if self.bridges.get(bridge.kernel_id) is bridge:
            del self.bridges[bridge.kernel_id]
            self._watch(bridge.kernel_id, bridge, add=False)
            recorder = self._recorders.pop(bridge.kernel_id, None)
            if recorder is not None:
                recorder.hand_back()
            self.log.debug("Bridge to kernel %s closed", bridge.kernel_id)
            comms = {  # what the router learned of each (target, opener, opt-ins), no clients
                comm.id: replace(comm, clients={}, collectors={})
                for comm in bridge.router.comms.values()
            }
            if comms and self.kernel_exists(bridge.kernel_id):  # none if the kernel went away
                self._known_comms[bridge.kernel_id] = (bridge.kernel_generation, comms)

    def _watch(self, kernel_id: str, bridge: KernelBridge, *, add: bool) -> None:
        """(Un)register the kernel manager's callbacks for automatic restarts and deaths, and
        watch the process of a local kernel that no restarter watches (autorestart off)."""
        if not add and (watcher := self._watchers.pop(kernel_id, None)) is not None:
            watcher.cancel()
        if kernel_id not in self.kernel_manager:
            return
        register = (
            self.kernel_manager.add_restart_callback
            if add
            else self.kernel_manager.remove_restart_callback
        )
        register(kernel_id, bridge.kernel_restarted, "restart")
        register(kernel_id, bridge.kernel_died, "dead")
        kernel = self.kernel_manager.get_kernel(kernel_id)
        if add and self.check_interval > 0 and not _restarted_by_its_manager(kernel):
            self._watchers[kernel_id] = asyncio.create_task(self._watch_process(kernel, bridge))

    async def _watch_process(self, kernel: Any, bridge: KernelBridge) -> None:
        """Close the bridge with 1011 once the kernel's process has exited (1012 if it was
        restarted meanwhile, by hand: the restart's own events usually come first)."""
        while not bridge.closed:
            await asyncio.sleep(self.check_interval)
            if await kernel.is_alive():
                continue
            await asyncio.sleep(self.check_interval)  # a restart by hand may be under way
            if await kernel.is_alive() or self._outlived_its_kernel(bridge):
                bridge.kernel_gone(CloseCode.RESTARTING, KERNEL_RESTARTING)
            else:
                bridge.kernel_gone(CloseCode.BRIDGE_FAILED, KERNEL_DIED)
            return

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
            router = bridge.router if bridge is not None else Router()
            status[kernel_id] = {
                "comms": len(router.comms),
                "clients": sum(map(router.subscribers, router.comms)),
                **stats.as_dict(),
            }
        return status

    def stop(self) -> None:
        """The server stops: close every bridge's comms and sockets; forget adopted kernels,
        which jupyter_server would shut down with its own."""
        for bridge in list(self.bridges.values()):
            bridge.server_stopping()
        for task in self._starting.values():
            task.cancel()
        for kernel_id in self.adopted:
            self.kernel_manager.remove_kernel(kernel_id)
        if self.event_logger is not None:
            self.event_logger.remove_listener(
                schema_id=KERNEL_ACTIONS_SCHEMA, listener=self._on_kernel_action
            )


def _restarted_by_its_manager(kernel: Any) -> bool:
    """Whether something else notices the kernel's death: its restarter (autorestart on; it
    calls the "dead" callbacks when it gives up), or, for a gateway kernel, the gateway."""
    return isinstance(kernel, GatewayKernelManager) or bool(getattr(kernel, "autorestart", True))
