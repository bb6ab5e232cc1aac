"""The Jupyter Server extension: its configuration, its handlers, and cleanup at shutdown."""

from __future__ import annotations

from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Instance, Int, List, Unicode, default

from . import metrics
from .client_frames import BufferPool
from .handlers import default_handlers
from .limits import SocketLimits
from .manager import BridgeManager
from .sessions import SessionStore

MiB = 1024 * 1024
STATIC_DIR = Path(__file__).parent / "static"  # served at {base_url}static/jupyter_transports/


class TransportsExtension(ExtensionApp):
    """Bridges WebSockets, REST and Server-Sent Events to kernel comms, routed in the server."""

    name = "jupyter_transports"

    max_message_bytes = Int(
        64 * MiB,
        config=True,
        help="""Largest frame (or REST body) a client may send, in bytes. A larger frame closes
        its socket with 1009 and never reaches the kernel. What the kernel sends is not limited.""",
    )
    max_query_bytes = Int(
        16 * 1024,
        config=True,
        help="""Longest query string a socket's handshake may have, in bytes (its data and other
        parameters, which reach the kernel in the comm_open); a longer one is refused with 414.""",
    )
    client_buffer_bytes = Int(
        16 * MiB,
        config=True,
        help="""Most unsent data a socket may hold in the server, in bytes. A client that falls
        further behind is closed with 1013, so one slow client cannot exhaust the server's
        memory; unless what backs up answers its own messages, still being handled by the
        kernel: then the server stops reading it until it has caught up, and closes it only past
        this plus max_message_bytes.""",
    )
    read_buffer_bytes = Int(
        32 * MiB,
        config=True,
        help="""Memory the server keeps for reading large client messages (64 KiB and more, or
        in fragments), in bytes: each is read and unmasked in a buffer reused from one message
        to the next, where fresh memory for each would cost a page fault per 4 KiB. A message
        that finds no free buffer in it gets one of its own. 0 keeps none.""",
    )
    gateway_max_message_bytes = Int(
        10 * MiB,
        config=True,
        help="""Largest kernel message the gateway takes (with GatewayClient.url set): a client
        frame or REST body that would make a larger one is refused (1009 / 413) rather than
        lost. Tornado's default, which Jupyter Kernel Gateway keeps; raise it only for a gateway
        configured with a larger websocket_max_message_size.""",
    )
    client_in_flight_bytes = Int(
        16 * MiB,
        config=True,
        help="""Most bytes of one client's messages that the kernel may have received and not yet
        handled (a busy kernel queues them). Past it the server stops reading that client's
        socket (TCP pushes back on the sender) until the kernel catches up; nothing is dropped.""",
    )
    kernel_in_flight_bytes = Int(
        64 * MiB,
        config=True,
        help="""Most bytes of all clients' messages that one kernel may have received and not
        yet handled. Past it every sender to that kernel is paced (sockets not read, REST calls
        held) until it catches up.""",
    )
    iopub_high_water_mark = Int(
        100_000,
        config=True,
        help="""Messages a local kernel may publish that the bridge has not read yet before ZMQ
        drops the next ones (ZMQ's default is 1,000, which a kernel's burst of comm messages can
        outrun for a moment). It costs memory only while a burst waits: at most this many of
        the kernel's messages.""",
    )
    kernel_timeout = Float(
        30.0,
        config=True,
        help="""Seconds to wait for the kernel's answer where one is needed (connecting, listing
        comms, checking a new comm was accepted) before giving up with 504.""",
    )
    kernel_check_interval = Float(
        1.0,
        config=True,
        help="""Seconds between looks at the process of a bridged kernel that no restarter
        watches (KernelManager.autorestart off): once it has exited, its sockets and streams
        close with 1011 within two of these, and new ones are refused with 503. 0: never look.""",
    )
    allowed_targets = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="""Comm target names that clients may open new comms to; others are refused with
        403. None allows every target.""",
    )

    sse_keepalive_interval = Float(
        15.0,
        config=True,
        help="""Seconds between the keep-alive comments of a quiet Server-Sent Events stream, so
        that proxies keep it open.""",
    )

    socket_ping_interval = Float(
        10.0,
        config=True,
        help="""Seconds between the keep-alive pings of the extension's WebSockets (jupyter_server's
        own sockets ping every 30 s), and of a gateway kernel's connection. 0 disables them.""",
    )
    socket_ping_timeout = Float(
        30.0,
        config=True,
        help="""Seconds without a pong after which a WebSocket counts as dead and is closed: a
        connection lost without a word (no FIN) is noticed then, and a durable session starts
        waiting for its client (session_timeout) rather than a TCP timeout deciding.""",
    )

    bridge_idle_timeout = Float(
        5.0,
        config=True,
        help="""Seconds a kernel's bridge (its kernel connection, a gateway kernel's WebSocket)
        stays open after its last socket, stream or REST call left, so that the next one reuses
        it rather than connecting anew. 0 closes it at once.""",
    )

    subshell_targets = List(
        Unicode(),
        config=True,
        help="""Comm target names whose comms a kernel subshell serves (JEP 91; ipykernel >= 7),
        so that they answer while a cell keeps the kernel busy. Their handlers then run in
        another thread, concurrently with cells: list only targets whose code is thread-safe.
        Kernels without subshells serve every comm on their main shell. Empty by default.""",
    )

    record_kernel_activity = Bool(
        True,
        config=True,
        help="""While a kernel is bridged, keep jupyter_server's record of its activity
        (``last_activity``, ``execution_state``) from the messages the bridge reads, and pause
        jupyter_server's own iopub subscriber, which deserializes every message a second time.
        False leaves that subscriber running.""",
    )

    session_timeout = Float(
        60.0,
        config=True,
        help="""Seconds a durable session waits for its client to come back after its connection
        dropped without a close frame. Meanwhile the comm it opened stays open and what the
        kernel sends waits in its window; after it, the session ends as a plain socket's
        close would (its comm closes), and a resume is told "expired".""",
    )
    session_window_bytes = Int(
        16 * MiB,
        config=True,
        help="""Most bytes of comm messages a durable session keeps until its client
        acknowledges them. A session whose window would hold more drops it, and its next
        resume is told "overflow" instead of replaying.""",
    )

    private_comms = Bool(
        False,
        config=True,
        help="""Make a comm a user opened through this server that user's: other users can
        neither attach to it, send on it nor see it listed, unless the kernel marks it shared
        (metadata.transports.shared). Comms the kernel opened stay everyone's. Off by default
        (v1). With jupyter_server's default identity provider every token-only connection is a
        new anonymous user, so turn it on only with real users (JupyterHub, a custom
        IdentityProvider).""",
    )

    max_sockets_per_user = Int(
        0,
        config=True,
        help="""Most WebSockets one user may hold open on this server at once (a session's
        connection counts while open); a handshake past it is refused with 429. 0: no cap. With
        jupyter_server's default identity provider every token-only connection is a new
        anonymous user, so the cap means something only with real users (JupyterHub, a custom
        IdentityProvider).""",
    )
    max_sockets_per_kernel = Int(
        0,
        config=True,
        help="""Most WebSockets this server holds open on one kernel at once; a handshake past it
        is refused with 429. 0: no cap.""",
    )

    bridges = Instance(BridgeManager, allow_none=True, help="The kernels' bridges.")
    sessions = Instance(SessionStore, allow_none=True, help="The durable sessions.")
    read_buffers = Instance(BufferPool, allow_none=True, help="Buffers for large messages.")
    socket_limits = Instance(SocketLimits, allow_none=True, help="Open sockets, and their caps.")
    metrics_collector = Instance(
        metrics.TransportsCollector,
        allow_none=True,
        help="What publishes the bridges' counters on /metrics.",
    )

    @default("static_paths")
    def _default_static_paths(self) -> list[str]:
        """The browser client (transports.js) and the demo page."""
        return [str(STATIC_DIR)]

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.bridges = BridgeManager(
            self.serverapp.kernel_manager,
            kernel_timeout=self.kernel_timeout,
            log=self.log,
            event_logger=self.serverapp.event_logger,
            subshell_targets=self.subshell_targets,
            record_activity=self.record_kernel_activity,
            idle_timeout=self.bridge_idle_timeout,
            gateway_max_message_bytes=self.gateway_max_message_bytes,
            check_interval=self.kernel_check_interval,
            iopub_hwm=self.iopub_high_water_mark,
            in_flight_bytes=(self.client_in_flight_bytes, self.kernel_in_flight_bytes),
            ping_interval=self.socket_ping_interval,
            ping_timeout=self.socket_ping_timeout,
            private_comms=self.private_comms,
        )
        self.sessions = SessionStore(
            self.bridges,
            timeout=self.session_timeout,
            window_bytes=self.session_window_bytes,
            log=self.log,
        )
        self.read_buffers = BufferPool(self.read_buffer_bytes)
        self.socket_limits = SocketLimits(self.max_sockets_per_user, self.max_sockets_per_kernel)
        self.metrics_collector = metrics.register(self.bridges.status)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def stop_extension(self) -> None:
        if self.bridges is not None:
            self.bridges.stop()
        if self.sessions is not None:
            self.sessions.stop()
        if self.metrics_collector is not None:
            metrics.unregister(self.metrics_collector)
            self.metrics_collector = None
