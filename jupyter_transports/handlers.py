"""URL patterns of the extension (under the server's ``base_url``), and its REST handlers.

The REST endpoints share their paths with the WebSocket ones: a GET with ``Upgrade: websocket``
is a socket, any other request is REST. Tornado routes a URL to one class, so a
:class:`SharedPath` only picks the handler that serves the request: the socket handler of
:mod:`.websocket`, or a REST handler here. Each REST method is a few checks and one call into
:mod:`.rest`; every fault of the package maps to its status in one place (``http_errors``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_escape, url_path_join
from tornado import httputil, web

from . import rest, sse
from .base import AUTH_RESOURCE, EXECUTE, READ, TransportsHandlerMixin
from .bridge import KernelBridge
from .endpoints import AttachHandler, NewCommHandler
from .errors import CloseCode
from .framing import OutgoingFrame, dumps
from .mux_socket import MuxSocketHandler
from .router import Subscriber
from .session import Reason
from .sessions import EventHistory
from .writer import BoundedWriter

API = r"/api/transports"
KERNEL = API + r"/kernels/(?P<kernel_id>[\w-]+)"
COMM = KERNEL + r"/comms/(?P<comm_id>[^/]+)"
SPEC_FILE = "rest-api.yml"
SPEC_RESOURCE = "api"  # as jupyter_server's own /api/spec.yaml
UPGRADE = "Upgrade"
WEBSOCKET = "websocket"


class TransportsAPIHandler(TransportsHandlerMixin, APIHandler):
    """What the REST handlers share: the kernel's bridge for one call, faults as statuses."""

    auth_resource = AUTH_RESOURCE
    collector: rest.ReplyCollector | None = None  # a POST's, while it waits for replies

    @asynccontextmanager
    async def bridge(self, kernel_id: str) -> AsyncIterator[KernelBridge]:
        """Hold the kernel's bridge for one call; 404 for an unknown kernel."""
        await self.check_kernel(kernel_id)
        with self.http_errors():
            async with self.bridges.using(kernel_id) as bridge:
                yield bridge

    def body(self, defaults: dict[str, Any]) -> dict[str, Any]:
        with self.http_errors():
            return rest.parse_body(
                self.request.body,
                defaults,
                max_bytes=self.extensionapp.max_message_bytes,  # type: ignore[attr-defined]
            )

    def new_collector(self) -> rest.ReplyCollector:
        """Where this call's replies go; it stops waiting if the HTTP client goes away."""
        self.collector = rest.ReplyCollector(self.extensionapp.client_buffer_bytes)  # type: ignore[attr-defined]
        return self.collector

    def on_connection_close(self) -> None:
        if self.collector is not None:
            self.collector.close(CloseCode.GOING_AWAY, rest.CLIENT_GONE)

    def reply(self, model: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(model))


class CommsHandler(TransportsAPIHandler):
    """``GET …/kernels/{kernel_id}/comms``: the kernel's comms and their clients."""

    @web.authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str) -> None:
        async with self.bridge(kernel_id) as bridge:
            comms = await rest.list_comms(bridge, self.current_user.username)
        self.reply({"comms": comms})


class NewCommAPIHandler(TransportsAPIHandler):
    """``POST …/targets/{target_name}``: open a comm that outlives the call."""

    @web.authenticated
    @authorized(EXECUTE, resource=AUTH_RESOURCE)
    async def post(self, kernel_id: str, target_name: str) -> None:
        self.check_target(target_name)
        body = self.body(rest.OPEN_DEFAULTS)
        client = self.new_client()
        async with self.bridge(kernel_id) as bridge:
            replies = await rest.open_comm(
                bridge,
                client,
                self.new_collector(),
                target_name,
                self.check_open_data(body[rest.DATA]),
                self.comm_open_query(),
                body[rest.WAIT],
            )
        location = url_path_join(
            self.base_url, "api/transports/kernels", kernel_id, "comms", url_escape(client.comm_id)
        )
        self.set_header("Location", location)
        self.reply({"comm_id": client.comm_id, "replies": replies}, 201)


class CommAPIHandler(TransportsAPIHandler):
    """``POST`` (send one message) and ``DELETE`` (close) ``…/comms/{comm_id}``."""

    @web.authenticated
    @authorized(EXECUTE, resource=AUTH_RESOURCE)
    async def post(self, kernel_id: str, comm_id: str) -> None:
        body = self.body(rest.SEND_DEFAULTS)
        async with self.bridge(kernel_id) as bridge:
            replies = await rest.send(
                bridge,
                self.new_client(comm_id),
                self.new_collector(),
                body[rest.DATA],
                count=body[rest.COUNT],
                wait=body[rest.WAIT],
                size=len(self.request.body),
            )
        self.reply({"replies": replies})

    @web.authenticated
    @authorized(EXECUTE, resource=AUTH_RESOURCE)
    async def delete(self, kernel_id: str, comm_id: str) -> None:
        async with self.bridge(kernel_id) as bridge:
            await rest.close_comm(bridge, comm_id, self.current_user.username)
        self.set_status(204)
        self.finish()


class EventsHandler(TransportsAPIHandler):
    """``GET …/comms/{comm_id}/events``: the comm's messages as Server-Sent Events.

    The stream is a receive-only client of the comm and the bridge's sink: each message is
    written as it comes, with its seq as its ``id``; the stream ends when the comm does, or when
    the client goes away. A stream that comes back with ``Last-Event-ID`` is first given what it
    missed, from the comm's :class:`~.sessions.EventHistory`, or a ``reset`` event.
    """

    ended: asyncio.Event
    client: Subscriber
    writer: BoundedWriter
    history: EventHistory
    bridge_in_use: KernelBridge | None = None

    @web.authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str, comm_id: str) -> None:
        self.ended = asyncio.Event()
        self.client = self.new_client(comm_id, can_send=False)
        async with self.bridge(kernel_id) as bridge:
            await bridge.comms.require(comm_id, self.client.user)
            self.set_header("Content-Type", sse.CONTENT_TYPE)
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")  # nginx: do not hold events back
            self.writer = BoundedWriter(
                self.request.connection.stream,  # type: ignore[union-attr]
                self.extensionapp.client_buffer_bytes,  # type: ignore[attr-defined]
            )
            self.history = history = self.sessions.history(kernel_id, comm_id, bridge)
            history.stream_started()
            bridge.attach(self.client, self)
            self.bridge_in_use = bridge
            try:
                self.begin()
                await self.keep_alive()
            finally:
                self.bridge_in_use = None
                bridge.leave(self.client.id)
                history.stream_ended()
                self.writer.unbound()  # the connection may serve more requests
        if not self.writer.stream.closed():
            self.finish(set_content_type=sse.CONTENT_TYPE)

    def begin(self) -> None:
        """The open event, then what a reconnecting stream missed (or a reset), in one go: the
        live stream follows with no gap and no repeat."""
        opened = dumps({"comm_id": self.client.comm_id})
        last_id = self.request.headers.get(sse.LAST_EVENT_ID)
        now = self.history.event_id(self.history.log.last)  # the comm's last message so far
        if last_id is None:
            self.send(sse.event(opened, sse.OPEN, now))
            return
        self.send(sse.event(opened, sse.OPEN))  # the client's Last-Event-ID stays as it was
        missed = self.history.missed(last_id)
        if isinstance(missed, Reason):
            self.send(sse.event(dumps({"reason": missed.value}), sse.RESET, now))
            return
        for frame in missed:
            self.deliver(frame)

    async def keep_alive(self) -> None:
        """Comment lines while the stream is quiet, so proxies hold it open, until it ends."""
        interval = self.extensionapp.sse_keepalive_interval  # type: ignore[attr-defined]
        while not self.ended.is_set():
            try:
                await asyncio.wait_for(self.ended.wait(), interval)
            except asyncio.TimeoutError:
                self.send(sse.KEEPALIVE)

    def send(self, chunk: bytes) -> None:
        """Write now, without waiting: a client too far behind is dropped, as a socket would be."""
        if self.ended.is_set():
            return
        self.write(chunk)
        if not self.writer.write(len(chunk), self.flush):
            self.log.warning("Event stream %s fell too far behind; closing it", self.client.id)
            if self.bridge_in_use is not None:
                self.bridge_in_use.count_drop()
            self.writer.stream.close()
            self.ended.set()

    def on_connection_close(self) -> None:
        self.ended.set()  # the client went away; get() says goodbye to the bridge

    # -- the bridge's sink ---------------------------------------------------------------------

    def deliver(self, frame: OutgoingFrame) -> None:
        self.send(sse.event(frame.json_text, event_id=self.history.event_id(frame.seq)))

    def close(self, code: CloseCode, reason: str) -> None:
        self.send(sse.event(dumps({"code": int(code), "reason": reason}), sse.CLOSE))
        self.ended.set()

    def lost(self, count: int) -> None:
        self.send(sse.event(dumps({"count": count}), sse.LOST))

    def presence(self, frame: str) -> None:
        """Event streams do not hear of the roster (sessions with presence=1 do)."""


class StatusHandler(TransportsAPIHandler):
    """``GET /api/transports/status``: per kernel, its comms, clients and traffic."""

    @web.authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    def get(self) -> None:
        self.reply({"kernels": self.bridges.status()})


class SpecHandler(web.StaticFileHandler, JupyterHandler):
    """``GET /api/transports/spec.yaml``: the OpenAPI document of the REST endpoints."""

    auth_resource = SPEC_RESOURCE

    def initialize(self) -> None:  # type: ignore[override]
        web.StaticFileHandler.initialize(self, path=os.path.dirname(__file__))

    @web.authenticated
    @authorized(READ, resource=SPEC_RESOURCE)
    def get(self) -> Any:  # type: ignore[override]
        return web.StaticFileHandler.get(self, SPEC_FILE)

    @web.authenticated
    @authorized(READ, resource=SPEC_RESOURCE)
    def head(self) -> Any:  # type: ignore[override]
        return web.StaticFileHandler.head(self, SPEC_FILE)

    def get_content_type(self) -> str:
        return "text/x-yaml"


class SharedPath(ExtensionHandlerMixin, web.RequestHandler):
    """One path, two protocols: hands the request to the socket or to the REST handler."""

    socket: ClassVar[type[web.RequestHandler]]
    rest: ClassVar[type[web.RequestHandler]]

    def __new__(  # type: ignore[misc]
        cls, application: web.Application, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> web.RequestHandler:
        upgrade = request.headers.get(UPGRADE, "").lower() == WEBSOCKET
        handler = cls.socket if request.method == "GET" and upgrade else cls.rest
        return handler(application, request, **kwargs)


class CommsPath(SharedPath):
    socket = MuxSocketHandler
    rest = CommsHandler


class TargetPath(SharedPath):
    socket = NewCommHandler
    rest = NewCommAPIHandler


class CommPath(SharedPath):
    socket = AttachHandler
    rest = CommAPIHandler


default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (KERNEL + r"/comms", CommsPath),
    (KERNEL + r"/targets/(?P<target_name>[^/]+)", TargetPath),
    (COMM, CommPath),
    (COMM + r"/events", EventsHandler),
    (API + r"/status", StatusHandler),
    (API + r"/spec\.yaml", SpecHandler),
]

__all__ = ["AUTH_RESOURCE", "default_handlers"]
