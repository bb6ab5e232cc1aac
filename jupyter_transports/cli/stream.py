"""``tail`` and ``open``: a comm's messages printed as they arrive until it ends, lines of stdin
sent to it, Ctrl-C ending it cleanly.

Both go over a durable session (contract v2, :class:`~jupyter_transports.client.CommClient`'s
default) rather than a plain socket: a connection that drops (a laptop's sleep, a proxy's idle
timeout) resumes with nothing lost or repeated, the server's count of lost kernel messages is
shown, and the session's first frame tells ``open`` its new comm's id. Ctrl-C or SIGTERM sends
a close frame with 1000, which detaches ``tail`` and closes the comm ``open`` opened; a second
Ctrl-C stops waiting for the server's answer to it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ..client import CommClient, CommClosed, Refused
from ..errors import CloseCode
from .arguments import parse_data
from .errors import EXIT_ABNORMAL_CLOSE, EXIT_OK, CliError, NotFound, http_error
from .output import Printer, closed_event, lost_event, message_event, plural, reset_event
from .server import NO_RESPONSE, Server

ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STDIN = 0  # its file descriptor
READ_BYTES = 64 * 1024
LINES_AHEAD = 64  # lines of stdin read before the comm has taken them


class CommStream:
    """One comm's messages to the printer, until the comm ends or the user ends the stream."""

    def __init__(self, printer: Printer, *, owns_comm: bool, count: int | None = None) -> None:
        self.printer = printer
        self.owns_comm = owns_comm  # open: ending the stream closes the comm; tail: detaches
        self.count = count  # end after this many messages (None: no limit)
        self.comm: CommClient | None = None
        self.ended_by: str | None = None  # why this end closed the socket, once it did

    # -- connecting ----------------------------------------------------------------------------

    async def open(
        self, server: Server, kernel_id: str, target_name: str, data: dict[str, Any] | None
    ) -> CommClient:
        """Open a new comm to ``target_name`` over a session."""
        try:
            with handshake_errors(f"opening a comm to {target_name!r}"):
                self.comm = await CommClient.open(
                    server.url,
                    kernel_id,
                    target_name,
                    token=server.token,
                    data=data,
                    **self.callbacks,
                )
        except NotFound as e:
            raise CliError(f"{e}: no kernel {kernel_id} on {server.url}") from None
        return self.comm

    async def attach(self, server: Server, kernel_id: str, comm_id: str) -> CommClient:
        """Attach to the existing comm ``comm_id`` over a session."""
        with handshake_errors(f"attaching to comm {comm_id}"):
            self.comm = await CommClient.attach(
                server.url, kernel_id, comm_id, token=server.token, **self.callbacks
            )
        return self.comm

    @property
    def callbacks(self) -> dict[str, Any]:
        return {"on_reset": self.on_reset, "on_lost": self.on_lost}

    def on_reset(self, reason: str) -> None:
        self.printer.event(reset_event(reason, self.comm.comm_id if self.comm else None))

    def on_lost(self, count: int) -> None:
        self.printer.event(lost_event(count))

    # -- streaming -----------------------------------------------------------------------------

    async def run(
        self, announcement: dict[str, Any], lines: StdinLines | None = None, linger: float = 0.0
    ) -> int:
        """Print ``announcement``, then messages until the comm ends, sending ``lines``
        meanwhile (once they end, the stream lasts ``linger`` seconds more, for the answers);
        the exit status. Ctrl-C ends the stream from the announcement on."""
        assert self.comm is not None
        with self._ending_on_signals():
            self.printer.event(announcement)
            sender = asyncio.ensure_future(self._send(lines, linger)) if lines else None
            try:
                closed = await self._receive()
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
        self.printer.event(closed_event(closed.code, closed.reason or self.ended_by))
        if self.ended_by is not None or closed.code == CloseCode.COMM_CLOSED:
            return EXIT_OK
        return EXIT_ABNORMAL_CLOSE

    async def _receive(self) -> CommClosed:
        assert self.comm is not None
        received = 0
        while True:
            try:
                message = await self.comm.recv()
            except CommClosed as closed:
                return closed
            if self.count is not None and received >= self.count:
                continue  # arrived while closing
            self.printer.event(message_event(message.data, [b.nbytes for b in message.buffers]))
            received += 1
            if received == self.count:
                self.end(f"after {plural(received, 'message')}")
            elif self.printer.gone:
                self.end("stdout closed")

    async def _send(self, lines: StdinLines, linger: float) -> None:
        assert self.comm is not None
        try:
            async for line in lines:
                if line.strip():  # blank lines are skipped
                    await self.comm.send(parse_data(line))
        except CommClosed:
            return  # the receiver reports it
        await asyncio.sleep(linger)
        self.end("stdin ended")

    def end(self, why: str) -> None:
        """Close the socket with 1000 (and so the comm, if this end opened it)."""
        assert self.comm is not None
        if self.ended_by is None:
            self.ended_by = f"{'closed' if self.owns_comm else 'detached'} by this client: {why}"
            self.comm.start_closing(CloseCode.COMM_CLOSED)

    @contextlib.contextmanager
    def _ending_on_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in ENDING_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        if self.ended_by is not None:  # a second Ctrl-C: stop waiting for the close
            raise KeyboardInterrupt
        self.end("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)


@contextlib.contextmanager
def handshake_errors(doing: str) -> Iterator[None]:
    """A refused or failed handshake as a :class:`CliError` (404 as ``NotFound``)."""
    try:
        yield
    except Refused as e:
        if e.status == NO_RESPONSE:
            raise CliError(f"{doing}: no answer from the server ({e})") from None
        raise http_error(e.status, doing=doing) from None
    except CommClosed as e:
        raise CliError(f"{doing}: the server closed the socket ({e.code}): {e.reason}") from None
    except OSError as e:
        raise CliError(f"{doing}: cannot reach the server: {e.strerror or e}") from None


class StdinLines:
    """The lines of standard input, read in a thread: a pipe, a terminal and a regular file
    alike (event loops cannot wait on a regular file), and at most ``LINES_AHEAD`` ahead of
    their reader, so that a large file is not read into memory at once."""

    def __init__(self, fd: int = STDIN) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.room = threading.Semaphore(LINES_AHEAD)
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        line = await self.lines.get()
        if line is None:
            self.lines.put_nowait(None)
            raise StopAsyncIteration
        self.room.release()
        return line

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while True:
            try:
                chunk = os.read(self.fd, READ_BYTES)
            except OSError:  # a terminal that went away
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *lines, pending = pending.split("\n")
            if not chunk and pending:
                lines.append(pending)
            for line in lines:
                self.room.acquire()
                if not self._put(line.removesuffix("\r")):
                    return
            if not chunk:
                self._put(None)
                return

    def _put(self, line: str | None) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.lines.put_nowait, line)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return False
        return True
