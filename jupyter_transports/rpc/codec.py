"""RPC messages as comm ``data`` and buffers, and back (pure: no I/O, no event loop).

The wire format is described in the docstring of the package (:mod:`jupyter_transports.rpc`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Buffer

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

MAX_BATCH_MESSAGES = 1000  # bounds a batch's latency and frame size
MAX_BATCH_BYTES = 1024 * 1024  # of buffers; a batch that reaches this is sent at once

Encoded = tuple[dict[str, Any], list[bytes]]  # one comm message: its data and its buffers
BINARY_TYPES = (bytes, bytearray, memoryview)


class RpcError(Exception):
    """Base of the faults of an RPC conversation."""


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


def encode(fields: dict[str, Any]) -> Encoded:
    """An RPC message as comm ``data`` and buffers."""
    data, paths, buffers = remove_buffers(fields)
    if paths:
        data[BUFFER_PATHS_KEY] = paths
    return data, buffers


def request(kind: str, call_id: int, name: str | None, args: Iterable[Any]) -> Encoded:
    """A ``call``, ``echo`` or ``pipe`` (only a call names a method)."""
    fields: dict[str, Any] = {RPC_KEY: kind, ID_KEY: call_id, ARGS_KEY: list(args)}
    if name is not None:
        fields[NAME_KEY] = name
    return encode(fields)


def returned(call_id: int | str, result: Any) -> Encoded:
    """The answer to request ``call_id``: its result."""
    return encode({RPC_KEY: RETURN, ID_KEY: call_id, RESULT_KEY: result})


def raised(call_id: int | str, error: BaseException) -> Encoded:
    """The answer to request ``call_id``: the error it raised, by type name and message."""
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


# -- batches ---------------------------------------------------------------------------------


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


# -- binary arguments ------------------------------------------------------------------------


def join_stream(stream: Any) -> bytes:
    """A binary argument from bytes, or from an iterable of bytes-like chunks."""
    if isinstance(stream, BINARY_TYPES):
        return bytes(stream)
    try:
        return b"".join(bytes(chunk) for chunk in stream)
    except TypeError:
        raise TypeError("a stream must be bytes-like or an iterable of bytes-like chunks") from None


async def join_async_stream(stream: Any) -> bytes:
    """Like :func:`join_stream`, also accepting an async iterable of chunks.

    Async syntax only: it awaits nothing but the stream, so it runs under any event loop.
    """
    if hasattr(stream, "__aiter__"):
        return b"".join([bytes(chunk) async for chunk in stream])
    return join_stream(stream)
