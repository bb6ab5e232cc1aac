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

**Batches.** A kernel pays about 1.7 ms of CPU per comm message, so one message per call caps a
channel near 1,000 calls/s. Each end therefore queues the messages it produces during one turn
of its event loop and sends them at the end of that turn as one comm message::

    {"rpc": "batch", "messages": [{"rpc": "call", "id": 1, ...}, {"rpc": "pipe", "id": 2,
     "args": [null], "buffer_paths": [["args", 0]]}, ...]}

Each inner message keeps its own ``buffer_paths``; the batch's buffers are those of its inner
messages concatenated in order (inner message *k* owns the next ``len(buffer_paths)`` of them).
A batch holds at least two messages (a lone message goes as itself, so an end that predates
batches still understands every lone call) and at most :data:`MAX_BATCH_MESSAGES` messages or
about :data:`MAX_BATCH_BYTES` of buffers. Batches do not nest.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

Buffer = bytes | memoryview  # a comm buffer, as received (a view of the message) or sent

RPC_KEY = "rpc"
ID_KEY = "id"
NAME_KEY = "name"
ARGS_KEY = "args"
RESULT_KEY = "result"
ERROR_KEY = "error"
BUFFER_PATHS_KEY = "buffer_paths"
ERROR_TYPE_KEY = "type"
ERROR_MESSAGE_KEY = "message"
MESSAGES_KEY = "messages"

CALL = "call"
ECHO = "echo"
PIPE = "pipe"
RETURN = "return"
RAISE = "raise"
BATCH = "batch"
REQUESTS = frozenset({CALL, ECHO, PIPE})
REPLIES = frozenset({RETURN, RAISE})

DEFAULT_TIMEOUT = 3.0  # seconds, as in jupyter-jchannel
MAX_BATCH_MESSAGES = 1000  # bounds a batch's latency and frame size
MAX_BATCH_BYTES = 1024 * 1024  # of buffers; a batch that reaches this is sent at once

Send = Callable[[dict[str, Any], list[bytes]], "Awaitable[None] | None"]
Encoded = tuple[dict[str, Any], list[bytes]]
OnError = Callable[[BaseException], None]
Queued = tuple[dict[str, Any], list[bytes], OnError]  # a message waiting for its turn to end
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


def put_buffers(value: Any, paths: Iterable[Iterable[Any]], buffers: Sequence[Buffer]) -> None:
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


def decode(data: Any, buffers: Iterable[Buffer] = ()) -> Message:
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


def pack_batch(messages: Sequence[Encoded]) -> Encoded:
    """Encoded messages as one comm message: a batch, or the message itself if it is alone."""
    if len(messages) == 1:
        return messages[0]
    if not messages:
        raise ValueError("an empty batch")
    buffers = [buffer for _, inner in messages for buffer in inner]
    return {RPC_KEY: BATCH, MESSAGES_KEY: [data for data, _ in messages]}, buffers


def is_batch(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get(RPC_KEY) == BATCH


def unpack_batch(data: Any, buffers: Iterable[Buffer] = ()) -> list[tuple[Any, list[Buffer]]]:
    """The (data, buffers) of each message in one comm message (a batch, or a lone message).

    :class:`ProtocolError` if a batch is malformed: not a list, or buffers that do not add up.
    """
    buffers = list(buffers)
    if not is_batch(data):
        return [(data, buffers)]
    inner = data.get(MESSAGES_KEY)
    if not isinstance(inner, list):
        raise ProtocolError("a batch needs a list of messages")
    unpacked: list[tuple[Any, list[Buffer]]] = []
    start = 0
    for message in inner:
        paths = message.get(BUFFER_PATHS_KEY) if isinstance(message, Mapping) else None
        end = start + (len(paths) if isinstance(paths, list) else 0)
        unpacked.append((message, buffers[start:end]))
        start = end
    if start != len(buffers):
        raise ProtocolError(f"a batch with {start} buffer paths and {len(buffers)} buffers")
    return unpacked


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


# -- sending ---------------------------------------------------------------------------------


class Outbox:
    """The RPC messages one end produces during a turn of its event loop, sent as one message.

    The first message of a turn schedules a flush with ``loop.call_soon``, so a lone call leaves
    at the end of the turn that made it: batching adds no timer and no wait. A batch that
    reaches ``max_messages`` messages or ``max_bytes`` of buffers leaves at once. With ``batch``
    false every message leaves on its own, as before batches existed. ``on_error`` of a message
    learns that it could not be sent; an unencodable message fails alone, not its whole batch.

    In a kernel, a cell (main thread) and a handler served by a subshell (another thread, its
    own loop) may share a channel: the queue is locked, and every loop that queues a message
    flushes at the end of its own turn, so a busy main loop never holds a subshell's answers.
    """

    def __init__(
        self,
        send: Send,
        *,
        batch: bool = True,
        max_messages: int = MAX_BATCH_MESSAGES,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._send = send
        self.batch = batch
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: list[Queued] = []
        self._bytes = 0
        self._flushing_on: set[asyncio.AbstractEventLoop] = set()  # loops with a flush due

    def post(self, data: dict[str, Any], buffers: list[bytes], on_error: OnError) -> None:
        """Send one encoded message at the end of this turn (or now, if unbatched or full)."""
        item = (data, buffers, on_error)
        if not self.batch:
            self._deliver([item])
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop whose turn could end: send now
            loop = None
        size = sum(len(buffer) for buffer in buffers)
        ready: list[list[Queued]] = []  # batches to send now
        with self._lock:
            if self._queue and self._bytes + size > self.max_bytes:
                ready.append(self._take())
            self._queue.append(item)
            self._bytes += size
            full_now = len(self._queue) >= self.max_messages or self._bytes >= self.max_bytes
            if loop is None or full_now:
                ready.append(self._take())
            elif loop not in self._flushing_on:
                self._flushing_on.add(loop)
                loop.call_soon(self._end_of_turn, loop)
        for items in ready:
            self._deliver(items)

    def flush(self) -> None:
        """Send what is queued now, as one comm message."""
        with self._lock:
            queued = self._take()
        if queued:
            self._deliver(queued)

    def _take(self) -> list[Queued]:
        queued, self._queue, self._bytes = self._queue, [], 0
        return queued

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._flushing_on.discard(loop)
        self.flush()

    def _deliver(self, items: list[Queued]) -> None:
        data, buffers = pack_batch([(data, buffers) for data, buffers, _ in items])
        try:
            sent = self._send(data, buffers)
        except Exception as e:
            self._failed(items, e)
            return
        if inspect.isawaitable(sent):
            task = asyncio.ensure_future(sent)
            task.add_done_callback(partial(self._sent_task, items))

    def _sent_task(self, items: list[Queued], task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            self._sent(items, task.exception())

    def _sent(self, items: list[Queued], error: BaseException | None) -> None:
        if error is not None:
            self._failed(items, error)

    def _failed(self, items: list[Queued], error: BaseException) -> None:
        if len(items) > 1 and isinstance(error, (TypeError, ValueError)):
            for item in items:  # one message is not JSON-able: find it, send the others
                self._deliver([item])
            return
        for _, _, on_error in items:
            on_error(error)


# -- one end of one conversation ---------------------------------------------------------------


class Endpoint:
    """One end of one RPC conversation (one comm): pending calls out, requests in.

    ``send`` puts one comm message on the wire; ``handler`` returns the object whose methods
    answer ``call`` requests (looked up on every call, so it may change); ``on_call`` runs in
    each answer's own context before its handler (the kernel uses it to tell the handler who is
    calling). Messages out go through an :class:`Outbox` (``batch=False``: one comm message
    each). A handler method that returns a plain value is answered at once, with no task, so
    the answers to a batch of calls leave as one batch.
    """

    def __init__(
        self,
        send: Send,
        handler: Callable[[], Any],
        *,
        on_call: Callable[[], object] | None = None,
        batch: bool = True,
    ) -> None:
        self._outbox = Outbox(send, batch=batch)
        self._handler = handler
        self._on_call = on_call
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
        data, buffers = request(kind, call_id, name, args)
        future = self._pending[call_id] = asyncio.get_running_loop().create_future()
        try:
            self._outbox.post(data, buffers, lambda error: _fail(future, error))
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            what = f"{name!r}" if name else kind
            raise TimeoutError(f"no answer to {what} within {timeout} s") from None
        finally:
            self._pending.pop(call_id, None)

    def receive(self, data: Any, buffers: Iterable[Buffer] = ()) -> None:
        """Feed one comm message (a batch or a lone message) from the other end."""
        try:
            messages = unpack_batch(data, buffers)
        except ProtocolError as e:
            inner = data.get(MESSAGES_KEY)
            for message in inner if isinstance(inner, list) else ():
                self._refuse(message, e)  # answer the requests that say who is waiting
            return
        for message_data, message_buffers in messages:
            self._receive_one(message_data, message_buffers)

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

    def _receive_one(self, data: Any, buffers: list[Buffer]) -> None:
        try:
            message = decode(data, buffers)
        except ProtocolError as e:
            self._refuse(data, e)
            return  # not ours, or a reply we cannot read: ignoring it is all we can do
        if message.kind in REPLIES:
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_exception(message.error)
                else:
                    future.set_result(message.result)
            return
        contextvars.copy_context().run(self._answer, message)

    def _refuse(self, data: Any, error: ProtocolError) -> None:
        """Answer a request we cannot read with ``raise``, if it says who is waiting."""
        if isinstance(data, Mapping) and data.get(RPC_KEY) in REQUESTS:
            call_id = data.get(ID_KEY)
            if isinstance(call_id, (int, str)) and not isinstance(call_id, bool):
                self._reply(call_id, error=error)

    def _answer(self, message: Message) -> None:
        """Run the handler (in a context of its own); await it in a task only if it is async."""
        try:
            if self._on_call is not None:
                self._on_call()
            result = self._dispatch(message)
        except Exception as e:
            self._reply(message.id, error=e)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._answer_later(message.id, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._reply(message.id, result=result)

    async def _answer_later(self, call_id: int | str, result: Awaitable[Any]) -> None:
        try:
            value = await result
        except Exception as e:
            self._reply(call_id, error=e)
        else:
            self._reply(call_id, result=value)

    def _dispatch(self, message: Message) -> Any:
        if message.kind == ECHO:
            return message.args
        if message.kind == PIPE:
            if len(message.args) != 1 or not isinstance(message.args[0], bytes):
                raise TypeError("pipe takes one binary argument")
            return message.args[0]
        return _method(self._handler(), message.name or "")(*message.args)

    def _reply(
        self, call_id: int | str, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        if self.closed is not None:
            return
        data, buffers = raised(call_id, error) if error is not None else returned(call_id, result)
        self._outbox.post(data, buffers, lambda e: self._unsendable(call_id, e))

    def _unsendable(self, call_id: int | str, error: BaseException) -> None:
        """A result that is not JSON-able: say so to the caller (other failures: it left)."""
        if isinstance(error, (TypeError, ValueError)) and self.closed is None:
            data, buffers = raised(call_id, error)
            self._outbox.post(data, buffers, _ignore)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _ignore(error: BaseException) -> None:
    """The other end cannot be told (its socket is gone): nothing is waiting on this end."""


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
