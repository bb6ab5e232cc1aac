"""The REST and Server-Sent Events endpoints against a real server and real ipykernel kernels.

Every answer of the ``api`` fixture is checked against the package's OpenAPI document, and the
last test checks that the tests, together, met every operation and status the document lists.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml
from jupyter_server.auth import Authorizer
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders

from jupyter_transports import rest, sse
from jupyter_transports.client import CommClient, Refused
from jupyter_transports.errors import BadRequest, CloseCode, TooLarge

from .conftest import TIMEOUT, closed, recv, start_cell

SPEC_TEXT = (files("jupyter_transports") / "rest-api.yml").read_text()
SPEC = OpenAPI.from_dict(yaml.safe_load(SPEC_TEXT))
API = "/api/transports"

WIDGET = """
from comm import create_comm
widget = create_comm(target_name="test.widget", data={})
"""


@dataclass
class Answer:
    status: int
    headers: HTTPHeaders
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def spec_seen() -> set[tuple[str, str, int]]:
    """(path pattern, method, status) of every answer checked against the spec in this module."""
    return set()


@pytest.fixture
def api(server_url: str, token: str, spec_seen: set[tuple[str, str, int]]):
    """``await api("POST", "kernels", id, "targets", "echo", body={...})``: one checked call."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server_url))

    async def call(
        method: str,
        *path: str,
        body: Any = None,
        raw: bytes | None = None,
        token: str | None = token,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        api_path = "/".join([API, *(quote(p, safe="") for p in path)])
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if method in ("POST", "PUT") and data is None:
            data = b""
        request = HTTPRequest(
            server_url.rstrip("/") + api_path,
            method,
            headers=headers,
            body=data,
            request_timeout=TIMEOUT,
            allow_nonstandard_methods=True,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        answer = Answer(response.code, response.headers, response.body or b"")
        check_against_spec(origin, method, api_path, data, answer, spec_seen)
        return answer

    return call


def check_against_spec(
    origin: str, method: str, path: str, data: bytes | None, answer: Answer, seen: set
) -> None:
    content_type = answer.headers.get("Content-Type", "").split(";")[0]
    request = MockRequest(origin, method.lower(), path, data=data)
    body = answer.body if content_type == "application/json" else answer.body.decode()
    response = MockResponse(body, answer.status, dict(answer.headers), content_type)  # type: ignore[arg-type]
    SPEC.validate_response(request, response)
    seen.add((_pattern(path), method, answer.status))


def _pattern(path: str) -> str:
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("kernels", "comms", "targets") and parts[i + 1]:
            parts[i + 1] = "{{{}}}".format(
                {"kernels": "kernel_id", "comms": "comm_id", "targets": "target_name"}[part]
            )
    return "/".join(parts)


class EventStream:
    """A Server-Sent Events client on a raw connection, so a test decides when it goes away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = ""
        self.comments = 0

    @classmethod
    async def connect(
        cls, server_url: str, path: str, token: str | None
    ) -> tuple[Answer, EventStream]:
        """Subscribe; the answer's body is empty for a stream (its events are read with next)."""
        url = urlsplit(server_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        target = url.path.rstrip("/") + API + path
        auth = f"Authorization: token {token}\r\n" if token else ""
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n{auth}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        status = int((await asyncio.wait_for(reader.readline(), TIMEOUT)).split()[1])
        headers = HTTPHeaders()
        while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)) != b"\r\n":
            headers.parse_line(line.decode())
        stream = cls(reader, writer)
        if "Content-Length" in headers:  # an error, not a stream
            body = await asyncio.wait_for(
                reader.readexactly(int(headers["Content-Length"])), TIMEOUT
            )
        else:  # the stream's first event
            stream.buffer = await asyncio.wait_for(stream._chunk(), TIMEOUT)
            body = stream.buffer.encode()
        return Answer(status, headers, body), stream

    async def next(self) -> tuple[str, Any] | None:
        """The next event as (name, data), or None once the stream ended."""
        while "\n\n" not in self.buffer:
            chunk = await asyncio.wait_for(self._chunk(), TIMEOUT)
            if not chunk:
                return None
            self.buffer += chunk
        block, self.buffer = self.buffer.split("\n\n", 1)
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if not data:
            return await self.next()  # a keep-alive comment
        return name, json.loads("\n".join(data))

    async def _chunk(self) -> str:
        size = int(await self.reader.readline(), 16)
        if size == 0:
            return ""
        chunk = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return chunk.decode()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def events(server_url: str, token: str, kernel: Any, spec_seen: set) -> Iterator[Any]:
    """``status, stream = await events(comm_id)``: subscribe to a comm of the test kernel."""
    streams: list[EventStream] = []
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server_url))

    async def subscribe(
        comm_id: str, kernel_id: str | None = None, token: str | None = token
    ) -> tuple[int, EventStream]:
        path = f"/kernels/{kernel_id or kernel.id}/comms/{comm_id}/events"
        answer, stream = await EventStream.connect(server_url, path, token)
        check_against_spec(origin, "GET", API + path, None, answer, spec_seen)
        streams.append(stream)
        return answer.status, stream

    yield subscribe
    for stream in streams:
        stream.close()


async def open_rest(api, kernel, target: str = "echo", **body: Any) -> str:
    answer = await api("POST", "kernels", kernel.id, "targets", target, body=body)
    assert answer.status == 201, answer.body
    return answer.json["comm_id"]


async def status_of(api, kernel) -> dict[str, int]:
    answer = await api("GET", "status")
    assert answer.status == 200
    return answer.json["kernels"][kernel.id]


# -- opening, sending, closing ---------------------------------------------------------------


async def test_open_with_wait_returns_first_replies(api, kernel, jp_base_url):
    answer = await api(
        "POST", "kernels", kernel.id, "targets", "whoami", body={"data": {"x": [1, 2]}, "wait": 0.2}
    )
    assert answer.status == 201
    comm_id = answer.json["comm_id"]
    [opened] = answer.json["replies"]
    assert opened["comm_id"] == comm_id
    assert opened["data"] == {"x": [1, 2]}
    assert set(opened["metadata"]["transports"]) == {"client", "user", "query"}
    assert (
        answer.headers["Location"]
        == f"{jp_base_url}api/transports/kernels/{kernel.id}/comms/{comm_id}"
    )

    # the comm outlives the call that opened it
    assert comm_id in await kernel.comm_ids("whoami")
    sent = await api("POST", "kernels", kernel.id, "comms", comm_id, body={"data": "hello"})
    assert sent.status == 200
    [said] = sent.json["replies"]
    assert said["data"] == "hello"
    assert said["metadata"]["transports"]["user"]  # token users are anonymous, one per request


async def test_open_without_wait_and_empty_body(api, kernel):
    answer = await api("POST", "kernels", kernel.id, "targets", "echo")
    assert answer.status == 201
    assert answer.json["replies"] == []
    assert answer.json["comm_id"] in await kernel.comm_ids("echo")


async def test_refused_target_is_404_and_leaves_nothing(api, kernel):
    answer = await api("POST", "kernels", kernel.id, "targets", "no.such.target", body={"wait": 0})
    assert answer.status == 404
    assert "refused" in answer.json["message"]
    assert (await api("GET", "kernels", kernel.id, "comms")).json["comms"] == {}


async def test_send_collects_only_its_own_replies(api, kernel, attach):
    comm_id = await open_rest(api, kernel)
    socket = await attach(comm_id)

    async def send(i: int) -> list[Any]:
        answer = await api("POST", "kernels", kernel.id, "comms", comm_id, body={"data": {"i": i}})
        assert answer.status == 200
        return answer.json["replies"]

    results = await asyncio.gather(*(send(i) for i in range(10)), socket.send({"from": "socket"}))
    assert results[:10] == [[{"i": i}] for i in range(10)]
    # the socket attached to the comm saw everything the kernel sent on it
    seen = [await recv(socket) for _ in range(11)]
    assert sorted(map(json.dumps, seen)) == sorted(
        map(json.dumps, [{"i": i} for i in range(10)] + [{"from": "socket"}])
    )


async def test_send_never_more_than_count_and_wait_is_not_an_error(api, kernel):
    comm_id = await open_rest(api, kernel, "flood")
    url = ("POST", "kernels", kernel.id, "comms", comm_id)
    flood = {"count": 5, "size": 1}

    three = await api(*url, body={"data": flood, "count": 3})
    assert [r["i"] for r in three.json["replies"]] == [0, 1, 2]

    everything = await api(*url, body={"data": {"count": 2, "size": 1}, "count": 10, "wait": 0.3})
    assert everything.status == 200
    assert [r["i"] for r in everything.json["replies"]] == [0, 1]

    fire_and_forget = await api(*url, body={"data": flood, "count": 0})
    assert fire_and_forget.json == {"replies": []}


@pytest.mark.parametrize("transports_config", [{"client_buffer_bytes": 4096}])
async def test_replies_held_for_a_call_are_bounded(api, kernel):
    comm_id = await open_rest(api, kernel, "flood")
    flood = {"data": {"count": 20, "size": 1000}, "count": 20}
    replies = (await api("POST", "kernels", kernel.id, "comms", comm_id, body=flood)).json[
        "replies"
    ]
    assert 4 <= len(replies) < 20  # stopped once they held client_buffer_bytes
    assert [r["i"] for r in replies] == list(range(len(replies)))


async def test_call_whose_client_went_away_stops_waiting(api, kernel, server_url, token):
    comm_id = await open_rest(api, kernel)  # the bridge closes after the call: nobody uses it
    url = urlsplit(server_url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    body = json.dumps({"data": "once", "count": 2, "wait": 3 * TIMEOUT}).encode()
    writer.write(
        f"POST {url.path.rstrip('/')}{API}/kernels/{kernel.id}/comms/{comm_id} HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\nAuthorization: token {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    async with asyncio.timeout(TIMEOUT):  # the call holds the bridge while it waits...
        while (await status_of(api, kernel))["comms"] == 0:
            await asyncio.sleep(0.02)
        writer.close()
        while (await status_of(api, kernel))["comms"]:  # ...and lets go once its client left
            await asyncio.sleep(0.02)


async def test_delete_closes_attached_sockets_with_1000(api, kernel, attach):
    comm_id = await open_rest(api, kernel)
    sockets = [await attach(comm_id) for _ in range(2)]
    assert (await api("GET", "kernels", kernel.id, "comms")).json["comms"][comm_id] == {
        "target_name": "echo",
        "clients": 2,
    }

    answer = await api("DELETE", "kernels", kernel.id, "comms", comm_id)
    assert answer.status == 204
    for socket in sockets:
        code, reason = await closed(socket)
        assert code == CloseCode.COMM_CLOSED
        assert "request" in reason
    assert await kernel.comm_ids("echo") == []
    assert (await api("DELETE", "kernels", kernel.id, "comms", comm_id)).status == 404


async def test_list_merges_kernel_view_with_sockets(api, kernel, open_comm, attach):
    await kernel.execute(WIDGET)
    widget_id = await kernel.evaluate("widget.comm_id")
    owner = await open_comm("whoami")
    socket_comm = (await recv(owner))["comm_id"]
    await attach(socket_comm)

    comms = (await api("GET", "kernels", kernel.id, "comms")).json["comms"]
    assert comms == {
        widget_id: {"target_name": "test.widget", "clients": 0},
        socket_comm: {"target_name": "whoami", "clients": 2},
    }


async def test_rest_and_sockets_share_one_bridge(api, kernel, open_comm, jp_serverapp):
    await open_comm("echo")
    app = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_transports"]))
    bridge = app.bridges.bridges[kernel.id]
    await open_rest(api, kernel)
    assert app.bridges.bridges[kernel.id] is bridge


# -- Server-Sent Events ----------------------------------------------------------------------


async def test_events_see_rest_sends_and_end_on_close(api, kernel, events):
    comm_id = await open_rest(api, kernel)
    status, stream = await events(comm_id)
    assert status == 200
    assert await stream.next() == ("open", {"comm_id": comm_id})

    sent = await api("POST", "kernels", kernel.id, "comms", comm_id, body={"data": {"n": 1}})
    assert sent.json["replies"] == [{"n": 1}]
    assert await stream.next() == ("message", {"n": 1})

    await kernel.execute(
        f"from comm import get_comm_manager\nget_comm_manager().get_comm({comm_id!r}).close()"
    )
    name, data = await stream.next()
    assert name == "close" and data["code"] == CloseCode.COMM_CLOSED
    assert await stream.next() is None


@pytest.mark.parametrize("transports_config", [{"sse_keepalive_interval": 0.05}])
async def test_events_keep_alive_and_leave_nothing_behind(api, kernel, events):
    comm_id = await open_rest(api, kernel)
    _, stream = await events(comm_id)
    assert (await stream.next())[0] == "open"
    while stream.comments < 2:  # two keep-alive comments in a quiet stream
        stream.buffer += await asyncio.wait_for(stream._chunk(), TIMEOUT)
        await _drain_comments(stream)
    assert (await status_of(api, kernel))["clients"] == 1

    stream.close()
    async with asyncio.timeout(TIMEOUT):  # the server notices the client went away
        while (await status_of(api, kernel))["clients"]:
            await asyncio.sleep(0.02)
    # and the comm goes on
    sent = await api("POST", "kernels", kernel.id, "comms", comm_id, body={"data": 1})
    assert sent.json["replies"] == [1]


@pytest.mark.parametrize("transports_config", [{"client_buffer_bytes": 256 * 1024}])
async def test_events_slow_client_is_dropped(api, kernel, events):
    comm_id = await open_rest(api, kernel, "flood")
    _, _stream = await events(comm_id)  # and never read again
    flood = {"data": {"count": 200, "size": 128 * 1024}, "count": 0}
    assert (await api("POST", "kernels", kernel.id, "comms", comm_id, body=flood)).status == 200
    async with asyncio.timeout(TIMEOUT):  # the server gave up on the stream, not on the comm
        while (status := await status_of(api, kernel))["drops"] == 0 or status["clients"]:
            await asyncio.sleep(0.05)
    assert status["drops"] == 1
    sent = await api(
        "POST", "kernels", kernel.id, "comms", comm_id, body={"data": {"count": 1, "size": 1}}
    )
    assert [r["i"] for r in sent.json["replies"]] == [0]


async def _drain_comments(stream: EventStream) -> None:
    while "\n\n" in stream.buffer:
        block, stream.buffer = stream.buffer.split("\n\n", 1)
        stream.comments += block.startswith(":")


async def test_events_unknown_comm_and_kernel_are_404(api, kernel, events):
    assert (await events("no-such-comm"))[0] == 404
    assert (await events("c", kernel_id=str(uuid.uuid4())))[0] == 404
    answer = await api("GET", "kernels", kernel.id, "comms", "no-such-comm", "events")
    assert answer.status == 404


# -- who may do what -------------------------------------------------------------------------


class ReadOnlyAuthorizer(Authorizer):
    """May read kernels, nothing more, and is asked only about kernels and the spec."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        assert resource in ("kernels", "api"), resource
        assert action in ("read", "execute"), action
        return action == "read"


@pytest.fixture
def authorizer_class() -> type[Authorizer] | None:
    return None


@pytest.fixture
def jp_server_config(jp_server_config: Any, authorizer_class: type[Authorizer] | None) -> Any:
    if authorizer_class is not None:
        jp_server_config["ServerApp"]["authorizer_class"] = authorizer_class
    return jp_server_config


@pytest.mark.parametrize("authorizer_class", [ReadOnlyAuthorizer])
async def test_read_only_user_lists_and_observes_but_may_not_send(api, kernel, events):
    await kernel.execute(WIDGET)
    widget_id = await kernel.evaluate("widget.comm_id")

    listed = await api("GET", "kernels", kernel.id, "comms")
    assert listed.status == 200 and widget_id in listed.json["comms"]
    _, stream = await events(widget_id)
    assert await stream.next() == ("open", {"comm_id": widget_id})
    await kernel.execute("widget.send({'seen': True})")
    assert await stream.next() == ("message", {"seen": True})
    assert (await api("GET", "status")).status == 200

    for method, path, body in [
        ("POST", ("targets", "echo"), {}),
        ("POST", ("comms", widget_id), {"data": 1}),
        ("DELETE", ("comms", widget_id), None),
    ]:
        answer = await api(method, "kernels", kernel.id, *path, body=body)
        assert answer.status == 403, (method, path)
        assert "execute" in answer.json["message"]
    assert widget_id in await kernel.comm_ids("test.widget")


async def test_no_credentials_is_403(api, kernel, events):
    for method, path in [
        ("GET", ("comms",)),
        ("POST", ("targets", "echo")),
        ("POST", ("comms", "x")),
        ("DELETE", ("comms", "x")),
    ]:
        assert (await api(method, "kernels", kernel.id, *path, token=None)).status == 403
    assert (await api("GET", "status", token=None)).status == 403
    assert (await events("x", token=None))[0] == 403


@pytest.mark.parametrize("transports_config", [{"allowed_targets": ["echo"]}])
async def test_target_not_allowed_is_403(api, kernel):
    assert (await api("POST", "kernels", kernel.id, "targets", "echo")).status == 201
    answer = await api("POST", "kernels", kernel.id, "targets", "whoami")
    assert answer.status == 403
    assert "not allowed" in answer.json["message"]


async def test_cookie_auth_needs_xsrf_token_auth_does_not(api, kernel):
    logged_in = await api("GET", "status")  # token-authenticated: the server sets its login cookie
    login = "; ".join(c.split(";")[0] for c in logged_in.headers.get_list("Set-Cookie"))
    assert login
    xsrf = uuid.uuid4().hex
    with_xsrf = {"Cookie": f"{login}; _xsrf={xsrf}", "X-XSRFToken": xsrf}

    assert (
        await api("GET", "kernels", kernel.id, "comms", token=None, headers={"Cookie": login})
    ).status == 200
    refused = await api(
        "POST", "kernels", kernel.id, "targets", "echo", token=None, headers={"Cookie": login}
    )
    assert refused.status == 403
    assert "_xsrf" in refused.json["message"]
    opened = await api(
        "POST", "kernels", kernel.id, "targets", "echo", token=None, headers=with_xsrf
    )
    assert opened.status == 201
    comm_id = opened.json["comm_id"]
    assert (
        await api(
            "DELETE", "kernels", kernel.id, "comms", comm_id, token=None, headers={"Cookie": login}
        )
    ).status == 403
    assert (
        await api("DELETE", "kernels", kernel.id, "comms", comm_id, token=None, headers=with_xsrf)
    ).status == 204


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"data": 1, "wait": -1}',
        b'{"data": 1, "wait": "soon"}',
        b'{"data": 1, "count": true}',
        b'{"data": 1, "count": 1.5}',
        b'{"data": 1, "colour": "blue"}',
        b'{"wait": 1}',
    ],
)
async def test_malformed_send_is_400(api, kernel, body):
    comm_id = await open_rest(api, kernel)
    answer = await api("POST", "kernels", kernel.id, "comms", comm_id, raw=body)
    assert answer.status == 400
    assert answer.json["message"]


async def test_malformed_open_is_400(api, kernel):
    for body in (b'{"data": [1]}', b'{"wait": -0.5}', b"nope"):
        answer = await api("POST", "kernels", kernel.id, "targets", "echo", raw=body)
        assert answer.status == 400, body
    assert await kernel.comm_ids("echo") == []


async def test_unknown_kernel_and_comm_are_404(api, kernel):
    nowhere = str(uuid.uuid4())
    for method, path, body in [
        ("GET", ("comms",), None),
        ("POST", ("targets", "echo"), {}),
        ("POST", ("comms", "c"), {"data": 1}),
        ("DELETE", ("comms", "c"), None),
    ]:
        assert (await api(method, "kernels", nowhere, *path, body=body)).status == 404
    assert (
        await api("POST", "kernels", kernel.id, "comms", "no-such-comm", body={"data": 1})
    ).status == 404
    assert (await api("DELETE", "kernels", kernel.id, "comms", "no-such-comm")).status == 404


@pytest.mark.parametrize("transports_config", [{"max_message_bytes": 1024}])
async def test_body_over_limit_is_413(api, kernel):
    comm_id = await open_rest(api, kernel)
    url = ("POST", "kernels", kernel.id, "comms", comm_id)
    assert (await api(*url, body={"data": "x" * 900})).json["replies"] == ["x" * 900]
    assert (await api(*url, body={"data": "x" * 2000})).status == 413
    big_open = await api(
        "POST", "kernels", kernel.id, "targets", "echo", body={"data": {"x": "y" * 2000}}
    )
    assert big_open.status == 413


@pytest.mark.parametrize("transports_config", [{"kernel_timeout": 0.5}])
async def test_busy_kernel_is_504_and_leaves_no_comm(api, kernel, open_comm, events):
    await open_comm("echo")  # keeps the bridge up, so the calls below wait on the kernel itself
    await start_cell(kernel, "import time; time.sleep(2)")
    # each needs the kernel's answer: the comm_open handled, or (for a comm the server has not
    # seen) the kernel's list of comms
    answers = await asyncio.gather(
        api("POST", "kernels", kernel.id, "targets", "echo"),
        api("GET", "kernels", kernel.id, "comms"),
        api("POST", "kernels", kernel.id, "comms", "unseen", body={"data": 1}),
        api("DELETE", "kernels", kernel.id, "comms", "unseen"),
        events("unseen"),
    )
    assert [a.status for a in answers[:4]] == [504] * 4
    assert answers[4][0] == 504
    await kernel.execute("pass")  # the kernel is free again, and handled what was queued
    assert len(await kernel.comm_ids("echo")) == 1  # only the socket's


# -- status, metrics, spec -------------------------------------------------------------------


async def test_status_and_metrics_count_traffic(api, kernel, open_comm, jp_fetch):
    socket = await open_comm("echo", session=False)  # bytes counted are the v1 frame's
    await socket.send("1234")
    assert await recv(socket) == "1234"
    comm_id = await open_rest(api, kernel)
    await api("POST", "kernels", kernel.id, "comms", comm_id, body={"data": "abc"})

    status = await status_of(api, kernel)
    assert status["comms"] == 2
    assert status["clients"] == 1
    assert status["messages_to_kernel"] == 2
    assert status["messages_from_kernel"] == 2
    assert status["bytes_to_kernel"] == len(b'"1234"') + len(b'{"data": "abc"}')
    assert status["bytes_from_kernel"] == len(b'"1234"') + len(b'"abc"')
    assert status["drops"] == 0

    metrics = (await jp_fetch("metrics")).body.decode()
    for name, value in status.items():
        suffix = "" if name in ("comms", "clients") else "_total"  # gauges, then counters
        sample = f'jupyter_transports_{name}{suffix}{{kernel_id="{kernel.id}"}} {float(value)}'
        assert sample in metrics, name


async def test_spec_is_served(api):
    answer = await api("GET", "spec.yaml")
    assert answer.status == 200
    assert answer.body.decode() == SPEC_TEXT


# -- pure parts -------------------------------------------------------------------------------


def test_parse_body_defaults_and_limits():
    assert rest.parse_body(b"", rest.OPEN_DEFAULTS, max_bytes=10) == {"data": {}, "wait": 0}
    assert rest.parse_body(b'{"data": null, "count": 0}', rest.SEND_DEFAULTS, max_bytes=100) == {
        "data": None,
        "wait": 5,
        "count": 0,
    }
    with pytest.raises(TooLarge):
        rest.parse_body(b'{"data": 12345}', rest.SEND_DEFAULTS, max_bytes=10)
    for bad in (
        b'{"data": 1, "wait": NaN}',
        b'{"data": 1, "wait": Infinity}',
        b'{"data": 1, "count": -1}',
        b'{"data": 1, "wait": ' + b"1" * 400 + b"}",  # was an OverflowError: 500
        b'{"data": 1, "wait": 1e300}',
        b'{"data": [1e999]}',
        b'{"data": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # was a RecursionError: 500
    ):
        with pytest.raises(BadRequest):
            rest.parse_body(bad, rest.SEND_DEFAULTS, max_bytes=10_000)


def test_sse_event_format():
    assert sse.event('{"a":1}') == b'data: {"a":1}\n\n'
    assert sse.event("x", sse.CLOSE) == b"event: close\ndata: x\n\n"
    assert sse.event("one\r\ntwo\nthree") == b"data: one\ndata: two\ndata: three\n\n"


async def test_unknown_comms_cost_a_busy_kernel_one_question(api, kernel, jp_serverapp):
    """Calls on comms the bridge does not know, while a cell runs, share one comm_info_request
    (ten of them: the test's HTTP client sends ten at a time); the kernel's "no such comm" then
    holds for a moment without asking again."""
    await open_rest(api, kernel)
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    channels = app.bridges.bridges[kernel.id].channels
    asked: list[str] = []
    request = channels.request

    async def counted(msg_type: str, content: dict[str, Any], timeout: float) -> Any:
        asked.append(msg_type)
        return await request(msg_type, content, timeout)

    channels.request = counted
    await start_cell(kernel, "import time; time.sleep(1)")
    unknown = [uuid.uuid4().hex for _ in range(10)]
    answers = await asyncio.gather(
        *(api("POST", "kernels", kernel.id, "comms", c, body={"data": 1}) for c in unknown)
    )
    assert [a.status for a in answers] == [404] * 10
    assert asked == ["comm_info_request"]
    assert (await api("DELETE", "kernels", kernel.id, "comms", unknown[0])).status == 404
    assert asked == ["comm_info_request"]


@pytest.mark.parametrize("transports_config", [{"bridge_idle_timeout": 0.1}])
async def test_comms_opened_over_rest_outlive_their_bridge(api, kernel, jp_serverapp):
    """A comm opened over REST keeps no socket on its kernel's bridge, which closes when idle;
    the next bridge is told of the comm, so that a message to it while a cell runs needs no
    answer from the kernel (nor does the bridge's start: it nudges on control). One that closed in the kernel meanwhile is dropped at the kernel's next
    answer."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    kept, gone = await open_rest(api, kernel), await open_rest(api, kernel)
    await until(lambda: kernel.id not in app.bridges.bridges)
    await kernel.execute(f"get_comm_manager().get_comm({gone!r}).close()")  # no bridge sees it
    await start_cell(kernel, "import time; time.sleep(2)")
    loop = asyncio.get_running_loop()
    began = loop.time()
    sent = await api("POST", "kernels", kernel.id, "comms", kept, body={"data": 1, "count": 0})
    assert sent.status == 200
    assert loop.time() - began < 1  # not after the cell
    assert (await api("DELETE", "kernels", kernel.id, "comms", kept)).status == 204
    await until(lambda: gone not in app.bridges.bridges[kernel.id].router.comms)
    body = {"data": 1, "count": 0}
    assert (await api("POST", "kernels", kernel.id, "comms", gone, body=body)).status == 404


async def until(condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        assert loop.time() < deadline
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("server_config", [{"KernelManager": {"autorestart": False}}])
async def test_a_kernel_dead_for_good_closes_1011_and_is_refused_503(
    api, kernel, open_comm, events, server_url, token
):
    """With no restarter (autorestart off), a kernel's death still reaches its sockets and
    streams (1011, within two kernel_check_interval), and every later call is a 503."""
    comm = await open_comm("echo")
    comm_id = await open_rest(api, kernel)
    status, stream = await events(comm_id)
    assert status == 200
    assert (await stream.next())[0] == "open"

    kernel.client.execute("import os; os._exit(1)")
    start = asyncio.get_running_loop().time()
    assert (await closed(comm))[0] == CloseCode.BRIDGE_FAILED
    assert asyncio.get_running_loop().time() - start < 5
    name, data = await stream.next()
    assert name == "close" and data["code"] == CloseCode.BRIDGE_FAILED

    for method, *path in [
        ("GET", "comms"),
        ("POST", "targets", "echo"),
        ("POST", "comms", comm_id),
        ("DELETE", "comms", comm_id),
    ]:
        answer = await api(method, "kernels", kernel.id, *path, body={"data": 1})
        assert answer.status == 503, (method, path, answer.body)
        assert "not running" in answer.json["message"]
    assert (await events(comm_id))[0] == 503
    with pytest.raises(Refused) as refused:
        await CommClient.open(server_url, kernel.id, "echo", token=token)
    assert refused.value.status == 503


GATEWAY_ONLY = {502}  # a gateway's refusal: checked in tests/test_gateway_servers.py


def test_every_operation_and_status_was_checked_against_the_spec(spec_seen, request):
    """Runs last in this module: the answers above covered every response the spec documents."""
    module_tests = {name for name in dir(request.module) if name.startswith("test_")}
    selected = {
        item.originalname for item in request.session.items if item.module is request.module
    }
    if module_tests - selected:
        pytest.skip("needs every test of the module")
    documented = {
        (path, method.upper(), int(status))
        for path, item in yaml.safe_load(SPEC_TEXT)["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        for status in operation["responses"]
        if int(status) not in GATEWAY_ONLY
    }
    assert documented - spec_seen == set()
