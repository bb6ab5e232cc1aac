"""One end of one RPC conversation on asyncio: the outbox that batches, the pending calls."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any

from ..protocol import Buffer
from .codec import (
    ECHO,
    ID_KEY,
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MESSAGES_KEY,
    PIPE,
    REPLIES,
    REQUESTS,
    RPC_KEY,
    Message,
    ProtocolError,
    decode,
    pack_batch,
    raised,
    request,
    returned,
    unpack_batch,
)

DEFAULT_TIMEOUT = 3.0  # seconds, as in jupyter-jchannel

Send = Callable[[dict[str, Any], list[bytes]], "Awaitable[None] | None"]
OnError = Callable[[BaseException], None]
Queued = tuple[dict[str, Any], list[bytes], OnError]  # a message waiting for its turn to end


# -- sending ---------------------------------------------------------------------------------


class Outbox:
    """The RPC messages one end produces during a turn of its event loop, sent as one message.

    The first message of a turn schedules a flush with ``loop.call_soon``, so a lone call leaves
    at the end of the turn that made it: batching adds no timer and no wait. A batch that
    reaches ``max_messages`` messages or ``max_bytes`` of buffers leaves at once. With ``batch``
    false every message leaves at once as a comm message of its own. ``on_error`` of a message
    learns that it could not be sent; an unencodable message fails alone, not its whole batch.

    In a kernel, a cell (main thread) and a handler served by a subshell (another thread, its
    own loop) may send on the same comm: the queue is locked, and every loop that queues a
    message flushes at the end of its own turn, so a busy main loop never holds a subshell's
    answers.
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
        self.fail_pending(error)
        for task in self._tasks:
            task.cancel()

    def fail_pending(self, error: BaseException) -> None:
        """Fail every pending call with ``error`` (their answers may be lost); the
        conversation goes on."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

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
    if handler is None:  # the caller reads this text: it names the public Channel, as JS does
        raise LookupError("this channel has no handler")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private")
    method = handler.get(name) if isinstance(handler, Mapping) else getattr(handler, name, None)
    if method is None:
        raise AttributeError(f"the handler has no method {name!r}")
    if not callable(method):
        raise TypeError(f"the handler's {name!r} is not callable")
    return method  # type: ignore[no-any-return]
