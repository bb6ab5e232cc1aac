"""The WebSocket endpoints: one socket is one client of one comm.

Each handler checks the handshake (auth, kernel, comm, parameters) before the upgrade, then each
WebSocket event is one call into the kernel's bridge. The socket is the bridge's sink.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from itertools import chain
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .bridge import BridgeManager, KernelBridge
from .errors import BadFrame, CloseCode, CommNotFound, TransportsError
from .framing import FrameMode, OutgoingFrame, Pieces, decode_frame, loads, utf8_size
from .router import Client

AUTH_RESOURCE = "kernels"
EXECUTE = "execute"
READ = "read"
TOKEN_PARAM = "token"
DATA_PARAM = "data"
FRAMES_PARAM = "frames"
COALESCE_BYTES = 256 * 1024  # frames waiting together up to this size are joined into one write
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

    def new_client(self, comm_id: str | None = None, *, can_send: bool = True) -> Client:
        """A client of ``comm_id`` (of a new comm if None) for the current user."""
        user = self.current_user.username  # type: ignore[attr-defined]
        return Client(uuid.uuid4().hex, comm_id or uuid.uuid4().hex, user, can_send)

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
    client: Client
    raw_frames = False  # write the pieces of OutgoingFrame.wire() (set in open)
    _unsent: list[Pieces] | None = None  # frames waiting for the flush; None: none since the last

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
        self.set_nodelay(True)
        self.log.debug("Client %s of comm %s connected", self.client.id, self.client.comm_id)

    @property
    def stream_of_socket(self) -> IOStream:
        """The upgraded connection's stream; its write buffer limit bounds a slow client."""
        return self.ws_connection.stream  # type: ignore[union-attr,return-value]

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
        if self.raw_frames:
            # The first frame goes out at once (no added latency); the rest of the same burst
            # from the kernel (routed before the event loop next runs) leave together in one
            # write: one syscall and one future per socket, not per message, which was most of
            # the server's cost per delivery in a fan-out.
            wire = frame.wire(self.mode)
            if self._unsent is not None:
                self._unsent.append(wire)
                return
            self._unsent = []
            IOLoop.current().add_callback(self._flush)
            self._write_wire([wire])
            return
        message = frame.for_mode(self.mode)
        binary = isinstance(message, bytes)
        self._write(lambda: self.write_message(message, binary=binary), len(message))

    def _flush(self) -> None:
        frames, self._unsent = self._unsent or [], None
        self._write_wire(frames)

    def _write_wire(self, frames: list[Pieces]) -> None:
        if not frames or self.ws_connection is None or self.ws_connection.is_closing():
            return  # on_close follows and says goodbye to the bridge
        if len(frames) > 1 and sum(map(len, chain(*frames))) <= COALESCE_BYTES:
            frames = [(b"".join(chain(*frames)),)]
        for pieces in frames:
            if not self._write(partial(self._write_pieces, pieces), len(pieces[0])):
                return

    def _write_pieces(self, pieces: Pieces) -> None:
        stream = self.stream_of_socket
        stream.write(pieces[0])
        stream.max_write_buffer_size = None  # the rest of a frame is never refused
        for piece in pieces[1:]:
            stream.write(piece)

    def _write(self, write: Callable[[], object], size: int) -> bool:
        """Call ``write`` (``size`` bytes first); False if the socket is closed or closing after.

        The stream refuses a write that would leave more than its limit unsent; with the limit
        at ``client_buffer_bytes`` plus this write, what it bounds is the data still unsent
        *before* this write, so a kernel message larger than the buffer still goes out.
        """
        self.stream_of_socket.max_write_buffer_size = self.extensionapp.client_buffer_bytes + size  # type: ignore[attr-defined]
        try:
            write()
            return True
        except StreamBufferFullError:
            self.drop_slow_client()
        except (WebSocketClosedError, StreamClosedError):
            pass  # on_close follows and says goodbye to the bridge
        return False

    def drop_slow_client(self) -> None:
        """Close with 1013 and let go of what was queued; the bridge forgets the client next."""
        self.log.warning("Client %s fell too far behind; closing it", self.client.id)
        self._unsent = None
        self.stream_of_socket.max_write_buffer_size = None  # room for the close frame
        if self.bridge is not None:
            self.bridge.count_drop()
        # Not from inside the bridge's delivery loop, which called us: on the next turn.
        IOLoop.current().add_callback(self.release)
        self.close(CloseCode.TOO_SLOW, "client fell too far behind")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self._flush()  # what the bridge delivered before closing goes out before the close frame
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
