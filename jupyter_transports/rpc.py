"""RPC over one comm: calls, ``echo`` and ``pipe`` both ways (stdlib only: kernels import it).

Both ends of a channel speak the same messages, each one comm message whose ``data`` is a JSON
object. Binary values anywhere in ``args`` or ``result`` travel as comm buffers, never as base64:
they are replaced by ``null`` in the JSON and their places listed in ``buffer_paths`` (the
layout ipywidgets uses), buffer *i* belonging at path *i*::

    {"rpc": "call",   "id": 7, "name": "add", "args": [1, 2]}
    {"rpc": "echo",   "id": 8, "args": [...]}             answered with the args themselves
    {"rpc": "pipe",   "id": 9, "args": [null], "buffer_paths": [["args", 0]]}  answered: the bytes
    {"rpc": "return", "id": 7, "result": 3}
    {"rpc": "raise",  "id": 7, "error": {"type": "ValueError", "message": "..."}}

Ids are chosen by the caller and are unique among its pending calls; each end keeps its own.
A request that cannot be answered (no handler, no such method, a malformed message) is answered
with ``raise``, so a caller never waits for its timeout because of a mistake on the other side.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RPC_KEY = "rpc"
ID_KEY = "id"
NAME_KEY = "name"
ARGS_KEY = "args"
RESULT_KEY = "result"
ERROR_KEY = "error"
BUFFER_PATHS_KEY = "buffer_paths"
ERROR_TYPE_KEY = "type"
ERROR_MESSAGE_KEY = "message"

CALL = "call"
ECHO = "echo"
PIPE = "pipe"
RETURN = "return"
RAISE = "raise"
REQUESTS = frozenset({CALL, ECHO, PIPE})
REPLIES = frozenset({RETURN, RAISE})

DEFAULT_TIMEOUT = 3.0  # seconds, as in jupyter-jchannel

Send = Callable[[dict[str, Any], list[bytes]], "Awaitable[None] | None"]
BINARY_TYPES = (bytes, bytearray, memoryview)


class RpcError(Exception):
    """Base of the faults of an RPC channel."""


class RemoteError(RpcError):
    """The other end raised (or threw) while handling a call; ``type`` is its exception's name."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message


class ProtocolError(RpcError):
    """A message that is not a valid RPC message."""


class ConnectionLost(RpcError, ConnectionError):
    """The conversation ended (the client left, the comm closed) before the answer came."""


class NoClient(RpcError, ConnectionError):
    """No client is there to answer a call."""


# -- binary values ---------------------------------------------------------------------------


def remove_buffers(
    value: Any, path: tuple[Any, ...] = ()
) -> tuple[Any, list[list[Any]], list[bytes]]:
    """``value`` with every binary part replaced by ``None``; their paths; the bytes."""
    paths: list[list[Any]] = []
    buffers: list[bytes] = []

    def walk(node: Any, at: tuple[Any, ...]) -> Any:
        if isinstance(node, BINARY_TYPES):
            paths.append(list(at))
            buffers.append(bytes(node))
            return None
        if isinstance(node, Mapping):
            return {key: walk(item, (*at, key)) for key, item in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(item, (*at, i)) for i, item in enumerate(node)]
        return node

    return walk(value, path), paths, buffers


def put_buffers(value: Any, paths: Iterable[Iterable[Any]], buffers: list[bytes]) -> None:
    """Put each buffer back at its path inside ``value`` (in place)."""
    paths = list(paths)
    if len(paths) != len(buffers):
        raise ProtocolError(f"{len(paths)} buffer paths for {len(buffers)} buffers")
    for path, buffer in zip(paths, buffers, strict=True):
        *parents, last = list(path) or [None]
        node = value
        try:
            for key in parents:
                node = node[key]
            node[last] = bytes(buffer)
        except (KeyError, IndexError, TypeError) as e:
            raise ProtocolError(f"buffer path {path} does not fit the message") from e


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One decoded RPC message (``kind`` is one of :data:`REQUESTS` or :data:`REPLIES`)."""

    kind: str
    id: int | str
    name: str | None = None
    args: list[Any] = field(default_factory=list)
    result: Any = None
    error: RemoteError | None = None


def encode(fields: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """An RPC message as comm ``data`` and buffers."""
    data, paths, buffers = remove_buffers(fields)
    if paths:
        data[BUFFER_PATHS_KEY] = paths
    return data, buffers


def request(
    kind: str, call_id: int, name: str | None, args: Iterable[Any]
) -> tuple[dict[str, Any], list[bytes]]:
    fields: dict[str, Any] = {RPC_KEY: kind, ID_KEY: call_id, ARGS_KEY: list(args)}
    if name is not None:
        fields[NAME_KEY] = name
    return encode(fields)


def returned(call_id: int | str, result: Any) -> tuple[dict[str, Any], list[bytes]]:
    return encode({RPC_KEY: RETURN, ID_KEY: call_id, RESULT_KEY: result})


def raised(call_id: int | str, error: BaseException) -> tuple[dict[str, Any], list[bytes]]:
    if isinstance(error, RemoteError):  # passing on another end's error keeps its type
        type_name, message = error.type, error.message
    else:
        type_name, message = type(error).__name__, str(error)
    info = {ERROR_TYPE_KEY: type_name, ERROR_MESSAGE_KEY: message}
    return encode({RPC_KEY: RAISE, ID_KEY: call_id, ERROR_KEY: info})


def decode(data: Any, buffers: Iterable[bytes] = ()) -> Message:
    """A comm message as an RPC :class:`Message`; :class:`ProtocolError` if it is not one."""
    if not isinstance(data, Mapping) or data.get(RPC_KEY) not in REQUESTS | REPLIES:
        raise ProtocolError("not an RPC message")
    call_id = data.get(ID_KEY)
    if not isinstance(call_id, (int, str)) or isinstance(call_id, bool):
        raise ProtocolError("an RPC message needs an integer or string id")
    fields = {key: value for key, value in data.items() if key != BUFFER_PATHS_KEY}
    put_buffers(fields, data.get(BUFFER_PATHS_KEY) or [], [bytes(b) for b in buffers])
    kind = fields[RPC_KEY]
    if kind in REQUESTS:
        args = fields.get(ARGS_KEY, [])
        name = fields.get(NAME_KEY)
        if not isinstance(args, list):
            raise ProtocolError("args must be a list")
        if kind == CALL and not isinstance(name, str):
            raise ProtocolError("a call needs a method name")
        return Message(kind, call_id, name=name, args=args)
    if kind == RAISE:
        info = fields.get(ERROR_KEY)
        info = info if isinstance(info, Mapping) else {}
        error = RemoteError(
            str(info.get(ERROR_TYPE_KEY, "Error")), str(info.get(ERROR_MESSAGE_KEY, ""))
        )
        return Message(kind, call_id, error=error)
    return Message(kind, call_id, result=fields.get(RESULT_KEY))


def join_stream(stream: Any) -> bytes:
    """A binary argument from bytes, or from an iterable of bytes-like chunks."""
    if isinstance(stream, BINARY_TYPES):
        return bytes(stream)
    try:
        return b"".join(bytes(chunk) for chunk in stream)
    except TypeError:
        raise TypeError("a stream must be bytes-like or an iterable of bytes-like chunks") from None


async def join_async_stream(stream: Any) -> bytes:
    """Like :func:`join_stream`, also accepting an async iterable of chunks."""
    if hasattr(stream, "__aiter__"):
        return b"".join([bytes(chunk) async for chunk in stream])
    return join_stream(stream)


# -- one end of one conversation ---------------------------------------------------------------


class Endpoint:
    """One end of one RPC conversation (one comm): pending calls out, requests in.

    ``send`` puts one comm message on the wire; ``handler`` returns the object whose methods
    answer ``call`` requests (looked up on every call, so it may change); ``around_call`` wraps
    each answer's task (the kernel uses it to tell the handler who is calling).
    """

    def __init__(
        self,
        send: Send,
        handler: Callable[[], Any],
        *,
        around_call: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        self._send = send
        self._handler = handler
        self._around_call = around_call
        self._ids = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed: BaseException | None = None

    async def request(
        self, kind: str, name: str | None, args: Iterable[Any], timeout: float | None
    ) -> Any:
        """Send a request and await its answer, at most ``timeout`` seconds (None: no limit)."""
        if self.closed is not None:
            raise self.closed
        call_id = next(self._ids)
        future = self._pending[call_id] = asyncio.get_running_loop().create_future()
        try:
            data, buffers = request(kind, call_id, name, args)
            await _maybe_await(self._send(data, buffers))
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            what = f"{name!r}" if name else kind
            raise TimeoutError(f"no answer to {what} within {timeout} s") from None
        finally:
            self._pending.pop(call_id, None)

    def receive(self, data: Any, buffers: Iterable[bytes] = ()) -> None:
        """Feed one comm message from the other end; requests are answered in the background."""
        try:
            message = decode(data, buffers)
        except ProtocolError as e:
            if isinstance(data, Mapping) and data.get(RPC_KEY) in REQUESTS and ID_KEY in data:
                self._spawn(self._reply(data[ID_KEY], error=e))
            return  # not ours, or a reply we cannot read: ignoring it is all we can do
        if message.kind in REPLIES:
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_exception(message.error)
                else:
                    future.set_result(message.result)
            return
        self._spawn(self._answer(message))

    def close(self, error: BaseException) -> None:
        """The conversation ended: fail every pending call with ``error``."""
        if self.closed is not None:
            return
        self.closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for task in self._tasks:
            task.cancel()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- answering -----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Message) -> None:
        try:
            if self._around_call is not None:
                result = await self._around_call(lambda: self._dispatch(message))
            else:
                result = await self._dispatch(message)
        except Exception as e:
            await self._reply(message.id, error=e)
        else:
            await self._reply(message.id, result=result)

    async def _dispatch(self, message: Message) -> Any:
        if message.kind == ECHO:
            return message.args
        if message.kind == PIPE:
            if len(message.args) != 1 or not isinstance(message.args[0], bytes):
                raise TypeError("pipe takes one binary argument")
            return message.args[0]
        method = _method(self._handler(), message.name or "")
        return await _maybe_await(method(*message.args))

    async def _reply(
        self, call_id: int | str, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        if self.closed is not None:
            return
        data, buffers = raised(call_id, error) if error is not None else returned(call_id, result)
        try:
            await _maybe_await(self._send(data, buffers))
        except (TypeError, ValueError) as e:  # the result is not JSON-able: say so to the caller
            data, buffers = raised(call_id, e)
            await _maybe_await(self._send(data, buffers))


def _method(handler: Any, name: str) -> Callable[..., Any]:
    if handler is None:
        raise LookupError("this channel has no handler")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private")
    method = handler.get(name) if isinstance(handler, Mapping) else getattr(handler, name, None)
    if method is None:
        raise AttributeError(f"the handler has no method {name!r}")
    if not callable(method):
        raise TypeError(f"the handler's {name!r} is not callable")
    return method  # type: ignore[no-any-return]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
