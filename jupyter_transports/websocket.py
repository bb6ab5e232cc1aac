"""The WebSocket endpoints: one socket is one client of one comm.

Each handler checks the handshake (auth, kernel, comm, parameters) before the upgrade, then each
WebSocket event is one call into the kernel's bridge. The socket is the bridge's sink.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketHandler

from .bridge import KernelBridge
from .errors import BadFrame, CloseCode, CommNotFound, TransportsError
from .framing import FrameMode, OutgoingFrame, decode_frame, loads, utf8_size
from .manager import BridgeManager
from .router import Subscriber
from .writer import FrameWriter, wire_pieces

AUTH_RESOURCE = "kernels"
EXECUTE = "execute"
READ = "read"
TOKEN_PARAM = "token"
DATA_PARAM = "data"
FRAMES_PARAM = "frames"
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 for the code


class TransportsHandlerMixin(ExtensionHandlerMixin):
    """What every handler of the extension reads from the app."""

    @property
    def bridges(self) -> BridgeManager:
        return self.extensionapp.bridges  # type: ignore[attr-defined,no-any-return]

    def check_kernel(self, kernel_id: str) -> None:
        if not self.bridges.kernel_exists(kernel_id):
            raise web.HTTPError(404, f"no kernel {kernel_id}")

    def check_target(self, target_name: str) -> None:
        allowed = self.extensionapp.allowed_targets  # type: ignore[attr-defined]
        if allowed is not None and target_name not in allowed:
            raise web.HTTPError(403, f"comm target {target_name!r} is not allowed")

    @staticmethod
    def check_open_data(data: Any) -> Any:
        """The data of a new comm's comm_open must be a JSON object."""
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the data of a new comm must be a JSON object")
        return data

    def comm_open_query(self) -> dict[str, str]:
        """The query parameters the kernel sees in the comm_open: all but the token, last wins."""
        return {
            name: values[-1].decode("utf-8", "replace")
            for name, values in self.request.query_arguments.items()  # type: ignore[attr-defined]
            if name != TOKEN_PARAM
        }

    def new_client(self, comm_id: str | None = None, *, can_send: bool = True) -> Subscriber:
        """A subscriber to ``comm_id`` (to a new comm if None) for the current user."""
        user = self.current_user.username  # type: ignore[attr-defined]
        return Subscriber(uuid.uuid4().hex, comm_id or uuid.uuid4().hex, user, can_send)

    @contextmanager
    def http_errors(self) -> Iterator[None]:
        """Before a response starts, every fault of the package answers with its status."""
        try:
            yield
        except TransportsError as e:
            raise web.HTTPError(e.status, str(e)) from e


class CommSocketHandler(TransportsHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """A WebSocket bridged to one kernel comm."""

    auth_resource = AUTH_RESOURCE
    bridge: KernelBridge | None = None
    client: Subscriber
    writer: FrameWriter | None = None  # set in open
    raw_frames = False  # write the frames of wire_pieces() (set in open)

    def set_default_headers(self) -> None:
        """Jupyter's default headers (CSP and the like) do not apply to a socket."""

    @property
    def max_message_size(self) -> int:
        return self.extensionapp.max_message_bytes  # type: ignore[attr-defined,no-any-return]

    def get_compression_options(self) -> dict[str, Any] | None:
        return self.settings.get("websocket_compression_options")

    def parse_common(self, kernel_id: str) -> None:
        """Checks and parameters shared by both endpoints, before any upgrade."""
        self.check_kernel(kernel_id)
        frames = self.get_query_argument(FRAMES_PARAM, FrameMode.JSON.value)
        try:
            self.mode = FrameMode(frames)
        except ValueError:
            raise web.HTTPError(400, f"frames must be 'json' or 'text', not {frames!r}") from None

    async def upgrade(
        self,
        kernel_id: str,
        *args: str,
        check: Callable[[KernelBridge], Awaitable[None]] | None = None,
    ) -> None:
        """Hold the kernel's bridge for the socket's lifetime, ``check``, accept the WebSocket."""
        try:
            with self.http_errors():
                self.bridge = await self.bridges.acquire(kernel_id)
                if check is not None:
                    await check(self.bridge)
                await WebSocketHandler.get(self, kernel_id, *args)
        finally:
            if self.ws_connection is None:  # no upgrade: no on_close will follow
                self.release()

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin's keep-alive pings
        # Without per-message compression a frame from the server is the same bytes for every
        # socket: write the kernel message's ready-made frame rather than re-frame it per socket
        # (write_message copies the payload and starts a task per call).
        self.raw_frames = self.get_compression_options() is None
        connection = self.ws_connection
        assert connection is not None and connection.stream is not None
        self.writer = FrameWriter(
            connection.stream,
            self.extensionapp.client_buffer_bytes,  # type: ignore[attr-defined]
            self.drop_slow_client,
            connection.is_closing,
        )
        self.set_nodelay(True)
        self.log.debug("Client %s of comm %s connected", self.client.id, self.client.comm_id)

    def on_message(self, message: str | bytes) -> None:
        if self.bridge is None:
            return  # closed by the server; frames the client sent meanwhile go nowhere
        try:
            data, buffers = decode_frame(message, self.mode)
            self.bridge.send(self.client.id, data, buffers, utf8_size(message))
        except TransportsError as e:
            self.log.warning("Closing client %s (%d): %s", self.client.id, e.close_code, e)
            self.close(e.close_code, str(e))

    def on_close(self) -> None:
        self.log.debug("Client %s of comm %s closed", self.client.id, self.client.comm_id)
        self.release()

    def release(self) -> None:
        if self.bridge is not None:
            self.bridge.leave(self.client.id)
            self.bridges.release(self.bridge)
            self.bridge = None

    # -- the bridge's sink ---------------------------------------------------------------------

    def deliver(self, frame: OutgoingFrame) -> None:
        writer = self.writer
        if writer is None or writer.closed or writer.closing():
            return  # on_close follows and says goodbye to the bridge
        if self.raw_frames:
            writer.send(wire_pieces(frame, self.mode))
            return
        message = frame.for_mode(self.mode)
        binary = isinstance(message, bytes)
        if not writer.write(len(message), lambda: self.write_message(message, binary=binary)):
            self.drop_slow_client()

    def drop_slow_client(self) -> None:
        """Close with 1013 and let go of what was queued; the bridge forgets the client next."""
        self.log.warning("Client %s fell too far behind; closing it", self.client.id)
        if self.bridge is not None:
            self.bridge.count_drop()
        # Not from inside the bridge's delivery loop, which called us: on the next turn.
        IOLoop.current().add_callback(self.release)
        self.close(CloseCode.TOO_SLOW, "client fell too far behind")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.writer is not None:  # what was delivered before goes out before the close frame
            self.writer.close()
        if reason is not None:
            reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        super().close(code, reason)


class NewCommHandler(CommSocketHandler):
    """``…/targets/{target_name}``: open a new comm, owned by this socket."""

    @ws_authenticated
    @authorized(EXECUTE, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str, target_name: str) -> None:  # type: ignore[override]
        self.parse_common(kernel_id)
        self.check_target(target_name)
        self.target_name = target_name
        self.data = self.parse_data()
        self.query = self.comm_open_query()
        self.client = self.new_client()
        await self.upgrade(kernel_id, target_name)

    def parse_data(self) -> Any:
        text = self.get_query_argument(DATA_PARAM, None)
        if text is None:
            return {}
        try:
            return self.check_open_data(loads(text))
        except BadFrame as e:
            raise web.HTTPError(400, f"data is {e}") from None

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        assert self.bridge is not None
        try:
            self.bridge.open_comm(self.client, self, self.target_name, self.data, self.query)
        except TransportsError as e:
            self.close(e.close_code, str(e))


class AttachHandler(CommSocketHandler):
    """``…/comms/{comm_id}``: receive (and, with ``execute``, send on) an existing comm."""

    @ws_authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str, comm_id: str) -> None:  # type: ignore[override]
        self.parse_common(kernel_id)
        can_send = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, EXECUTE, AUTH_RESOURCE)
        )
        self.client = self.new_client(comm_id, can_send=can_send)
        await self.upgrade(kernel_id, comm_id, check=self.check_comm)

    async def check_comm(self, bridge: KernelBridge) -> None:
        await bridge.require_comm(self.client.comm_id)

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        assert self.bridge is not None
        try:
            self.bridge.attach(self.client, self)
        except CommNotFound:
            self.close(CloseCode.NO_SUCH_COMM, "the comm no longer exists")
        except TransportsError as e:
            self.close(e.close_code, str(e))
