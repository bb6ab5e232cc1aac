"""A gateway kernel's channels: one WebSocket of the bridge's own to the gateway's
``/api/kernels/{id}/channels`` (Jupyter Kernel Gateway, Enterprise Gateway).

It speaks the binary subprotocol ``v1.kernel.websocket.jupyter.org`` where the gateway offers
it, else the legacy layout (both in :mod:`.wire`), so buffers cross both ways intact. The
connection takes the
auth headers, TLS options and timeouts of jupyter_server's ``GatewayClient`` config, and a
``session_id`` of the bridge's own.

Everything is event-driven: the tornado client calls :meth:`GatewayChannels._on_message` for
each frame. When the connection drops it reconnects with the ``GatewayClient``'s retry backoff
under the same session id (jupyter_server then replays what the kernel sent meanwhile, if it
buffered it: it does when that was the kernel's only connection), holding back what is sent
meanwhile. The kernel's restart, death or shutdown, which a gateway's kernel manager sees and
this server's does not, shows in the kernel's messages: a ``restarting`` or ``dead`` status from
the gateway, a new kernel session, or a 404 on reconnecting; it ends the iopub stream with
:class:`~jupyter_transports.errors.KernelGone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

from jupyter_client.session import Session
from jupyter_server.utils import url_path_join
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from ..errors import (
    KERNEL_DIED,
    KERNEL_RESTARTING,
    KERNEL_SHUT_DOWN,
    CloseCode,
    GatewayError,
    KernelFault,
    KernelGone,
    KernelTimeout,
    TooLarge,
)
from ..framing import Buffers
from ..protocol import STARTING, STATUS
from . import wire
from .base import CLOSED, PendingReplies, nudge

SHELL, CONTROL, IOPUB = "shell", "control", wire.IOPUB
RESTARTING, DEAD = "restarting", "dead"  # statuses the gateway itself sends about its kernel
HELD_BACK_LIMIT = 64 * 1024 * 1024  # bytes sent while reconnecting before the channels give up
MAX_MESSAGE_BYTES = 1 << 40  # what the kernel sends is not limited (as for local kernels)


class GatewayChannels:
    """:class:`~jupyter_transports.channels.KernelChannels` of a kernel behind a gateway.

    ``gateway`` is jupyter_server's ``GatewayClient`` (its config: url, auth, TLS, retries).
    """

    def __init__(
        self,
        kernel_id: str,
        session: Session,
        gateway: Any,
        iopub_types: Collection[str] | None = None,
        *,
        log: logging.Logger,
        max_message_bytes: int = 10 * 1024 * 1024,
        ping_interval: float = 0,
        ping_timeout: float | None = None,
    ) -> None:
        self.kernel_id = kernel_id
        self.max_message_bytes = max_message_bytes  # the most the gateway takes in a message
        self.session = session
        self.gateway = gateway
        self.iopub_types = None if iopub_types is None else frozenset(iopub_types) | {STATUS}
        self.log = log
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.failure: KernelFault | None = None
        self.kernel_session: str | None = None  # the kernel's own session id: a new one, a restart
        self._ws: WebSocketClientConnection | None = None
        self._quickack: Callable[[], None] = _no_quickack
        self._v1 = False  # whether the gateway speaks the v1 subprotocol
        self._iopub: deque[dict[str, Any]] = deque()
        self._iopub_wake: asyncio.Future[None] | None = None
        self.replies = PendingReplies()
        self._held_back: list[bytes | str] = []  # sent while the connection is down
        self._held_back_bytes = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self._connections = 0  # connections attempted: only the latest one's messages count
        self._stopped = False

    # -- connecting ----------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        await self._connect(timeout)
        try:
            status = await asyncio.wait_for(nudge(self), timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"the kernel did not answer within {timeout} s") from None
        self.kernel_session = status["header"].get("session")

    @property
    def url(self) -> str:
        base = self.gateway.ws_url or ""
        path = url_path_join(self.gateway.kernels_endpoint, quote(self.kernel_id, safe=""))
        return f"{url_path_join(base, path, 'channels')}?session_id={self.session.session}"

    async def _connect(self, timeout: float | None = None) -> None:
        """Open the WebSocket; :class:`GatewayError` with the gateway's reason if it refuses,
        or if it does not answer within ``timeout`` seconds (tornado's own timeouts, so that
        no handshake is left behind)."""
        args = self.gateway.load_connection_args()
        if timeout is not None:
            for name in ("connect_timeout", "request_timeout"):
                args[name] = min(args.get(name) or timeout, timeout)
        request = HTTPRequest(self.url, **args)
        self._connections += 1
        connection = self._connections
        try:
            ws = await websocket_connect(
                request,
                on_message_callback=lambda message: self._on_message(message, connection),
                subprotocols=[wire.V1_PROTOCOL],
                max_message_size=MAX_MESSAGE_BYTES,
                ping_interval=self.ping_interval or None,
                ping_timeout=self.ping_timeout,
            )
        except HTTPClientError as e:
            if e.code == 599:  # tornado's code for a timeout or a dropped connection
                raise GatewayError(f"the gateway did not answer: {e.message}", 503) from e
            status = 404 if e.code == 404 else 502
            raise GatewayError(f"the gateway answered {e.code} {_reason(e)}", status) from e
        except OSError as e:
            raise GatewayError(f"the gateway is unreachable: {e}", 503) from e
        if self._stopped:
            ws.close()
            return
        # The gateway's replies are small and come in bursts (busy, reply, idle): Nagle on
        # either side would hold each one until the previous is acknowledged.
        stream = ws.protocol.stream  # type: ignore[union-attr]
        assert stream is not None
        stream.set_nodelay(True)
        self._quickack = _quickack(stream.socket)
        self._v1 = ws.selected_subprotocol == wire.V1_PROTOCOL
        self._ws = ws

    def _on_closed(self) -> None:
        if self._ws is not None:
            self._ws.close()  # the gateway closed it, or the network dropped it: let it go
            self._ws = None
        if self._stopped or self.failure is not None or self._reconnecting is not None:
            return
        self.log.warning("Lost the gateway connection of kernel %s; reconnecting", self.kernel_id)
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reconnect with the gateway client's backoff, then send what was held back."""
        gateway = self.gateway
        try:
            for attempt in range(gateway.gateway_retry_max):
                delay = min(
                    gateway.gateway_retry_interval * 2**attempt, gateway.gateway_retry_interval_max
                )
                await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))
                if self._stopped:
                    return
                try:
                    await self._connect()
                except GatewayError as e:
                    if e.status == 404:
                        self._fail(KernelGone(CloseCode.GOING_AWAY, KERNEL_SHUT_DOWN), e)
                        return
                    self.log.warning("Kernel %s: reconnecting failed: %s", self.kernel_id, e)
                    continue
                self.log.info("Kernel %s: gateway connection back", self.kernel_id)
                held_back, self._held_back, self._held_back_bytes = self._held_back, [], 0
                for message in held_back:
                    self._write(message)
                return
            self._fail(KernelFault(f"lost the gateway connection of kernel {self.kernel_id}"))
        finally:
            self._reconnecting = None

    # -- receiving -----------------------------------------------------------------------------

    def _on_message(self, message: bytes | str | None, connection: int) -> None:
        if self._stopped or connection != self._connections:  # one given up on
            return
        if message is None:
            self._on_closed()
            return
        self._quickack()
        try:
            channel, msg = wire.decode(message, v1=self._v1, iopub_types=self.iopub_types)
        except (ValueError, KeyError, TypeError) as e:
            self._fail(KernelFault(f"malformed message from the gateway: {e!r}"), e)
            return
        if msg is None:
            return
        if channel == IOPUB:
            self._on_iopub(msg)
        elif channel in (SHELL, CONTROL):
            self.replies.answer(msg)

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == STATUS:
            state = msg["content"].get("execution_state")
            if state == RESTARTING:  # from the gateway, on its kernel manager's callbacks
                self._fail(KernelGone(CloseCode.RESTARTING, KERNEL_RESTARTING))
                return
            if state == DEAD:
                self._fail(KernelGone(CloseCode.BRIDGE_FAILED, KERNEL_DIED))
                return
            session = msg["header"].get("session")
            new_kernel = state == STARTING or session != self.kernel_session
            if self.kernel_session is not None and new_kernel:
                self._fail(KernelGone(CloseCode.RESTARTING, KERNEL_RESTARTING))
                return
        self._iopub.append(msg)
        self._wake()

    def _wake(self) -> None:
        wake = self._iopub_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def next_iopub(self) -> dict[str, Any]:
        while not self._iopub:
            if self.failure is not None:
                raise self.failure
            self._iopub_wake = asyncio.get_running_loop().create_future()
            try:
                await self._iopub_wake
            finally:
                self._iopub_wake = None
        return self._iopub.popleft()

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        header: Mapping[str, str] | None = None,
    ) -> str:
        return self._send(SHELL, msg_type, content, metadata, buffers, header)

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        return self._send(CONTROL, msg_type, content)

    async def request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        return await self._request(SHELL, msg_type, content, timeout)

    async def control_request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        return await self._request(CONTROL, msg_type, content, timeout)

    async def _request(
        self, channel: str, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        if self.failure is not None:
            raise self.failure
        return await self.replies.wait(self._send(channel, msg_type, content), msg_type, timeout)

    def _send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        header: Mapping[str, str] | None = None,
    ) -> str:
        msg_id, message = wire.encode(
            self.session,
            channel,
            msg_type,
            content,
            v1=self._v1,
            metadata=metadata,
            buffers=buffers,
            header=header,
        )
        if len(message) > self.max_message_bytes:
            raise TooLarge(
                f"a kernel message of {len(message)} bytes is over what the gateway takes "
                f"({self.max_message_bytes} bytes: gateway_max_message_bytes)"
            )
        self._write(message)
        return msg_id

    def _write(self, message: bytes | str) -> None:
        if self._ws is not None:
            try:
                written = self._ws.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:  # dropped; the close callback reconnects
                pass
            else:
                written.add_done_callback(_retrieve)  # a drop is seen by the close callback
                return
        if self.failure is not None or self._stopped:
            return
        self._held_back.append(message)
        self._held_back_bytes += len(message)
        if self._held_back_bytes > HELD_BACK_LIMIT:
            self._fail(KernelFault("too much held back while reconnecting to the gateway"))

    # -- failing and stopping ------------------------------------------------------------------

    def _fail(self, failure: KernelFault, cause: BaseException | None = None) -> None:
        """The channels stopped working: fail every pending request, and iopub's reader."""
        if self.failure is not None:
            return
        failure.__cause__ = cause
        self.failure = failure
        self.replies.fail(failure)
        self._held_back.clear()
        self._wake()
        if self._ws is not None and not isinstance(failure, KernelGone):
            self._ws.close()

    def stop(self) -> None:
        self._stopped = True
        self._fail(KernelFault(CLOSED))
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._ws is not None:
            self._ws.close()  # after what was written: the close frame follows it
            self._ws = None


def _retrieve(written: asyncio.Future[None]) -> None:
    if not written.cancelled():
        written.exception()


def _reason(error: HTTPClientError) -> str:
    """The gateway's reason for refusing: its JSON error's ``reason``/``message``, or the
    status's phrase."""
    body = error.response.body if error.response is not None else b""
    try:
        detail = json.loads(body)
        return str(detail.get("message") or detail.get("reason") or error.message)
    except (ValueError, AttributeError):
        return str(error.message)


def _no_quickack() -> None:
    pass


def _quickack(sock: socket.socket) -> Callable[[], None]:
    """A function that acknowledges what was received at once (Linux's TCP_QUICKACK).

    A gateway writes a request's busy status, reply and idle status one after another without
    TCP_NODELAY: Nagle holds each until the previous is acknowledged, and a delayed
    acknowledgement would cost up to 40 ms per message.
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is None:
        return _no_quickack

    def quickack() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    return quickack
