"""``python -m benchmarks.soak``: many durable sessions for minutes, through cuts and restarts.

Not a test and not part of ``make bench``: a long run that looks for what short tests miss
(messages lost or repeated across resumes, memory or file descriptors that grow, a socket that
hangs). It starts a real Jupyter server with the extension and one ipykernel
(:class:`benchmarks.server.Server`), registers the comm target ``soak.echo`` in the kernel (it
echoes every message and sends its comm a numbered tick every second), and opens ``--sockets``
durable sessions (``CommClient.open(..., session=True)``) to it through a TCP proxy that can cut
connections (``tests/proxies.py``), at most ``CONNECT_BATCH`` handshakes at a time. Then, for
``--seconds``:

* every socket sends one numbered message a second and checks its echoes: each arrives once and
  in order (per socket, across resumes); its round trip (send → echo) is timed;
* every socket checks the kernel's ticks on its comm: consecutive from 0, none repeated;
* every ``--cut-every`` seconds the proxy aborts a random few connections (``--cut-count``), with
  no close frame and no FIN, as a dead network does: the sessions must resume;
* every ``--restart-every`` seconds the kernel is restarted (``POST api/kernels/{id}/restart``):
  sockets are closed with 1012 and their sessions end (contract v2), a session that was away
  gets ``reset`` / ``kernel_restarted`` and a new comm (refused with 4404 if it comes back
  before the target is registered again); the soak registers the target in the new kernel and
  reopens the closed sockets. Messages in flight then are *lost to restarts*: expected (the
  kernel and its comms went away), counted apart, as are the sessions the restart ended;
* every ``SAMPLE_EVERY`` seconds a line to stderr: the server's RSS, open file descriptors and
  CPU, the sockets connected, the comms and clients the bridge knows (``/api/transports/status``),
  the messages so far, and sockets with a message unanswered for ``STUCK_AFTER`` seconds.

How to read the summary (Markdown, on stdout): *lost*, *duplicated* and *out of order* are
echoes outside restarts and must be 0; so must the tick anomalies, the resets for any reason but
``kernel_restarted`` and the sessions that ended outside restarts (a session must resume). A
message whose echo never came is lost to a restart only if nothing sent after it was echoed before
the session ended or was reset by the restart; a hole before a later echo is a loss. RSS and file
descriptors are sampled with every socket open: "start" once all are open, "end" after the last
cut and restart, once all are open again; the run fails if the end exceeds the start by more than
``RSS_SLACK`` (plus a full log window, ``WINDOW_BYTES``, per comm: the server runs with that
``session_window_bytes``) / ``FD_SLACK``. "fds after closing" is read once every socket is closed, beside
"fds before opening" (read once one socket has been opened and closed, so that the bridge to the
kernel exists in both). Round trips include this process's own load (the clients and the proxy
share one event loop): read them as an upper bound. Exit status: 0 if all holds, 1 if not, 130
on Ctrl-C (the summary of what ran is printed all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import textwrap
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from jupyter_transports.client import CommClient, CommClosed, Refused
from tests.proxies import CuttingProxy

from .server import Server

TARGET = "soak.echo"
TICK_EVERY = 1.0  # seconds between the kernel's ticks on each comm
SEND_EVERY = 1.0  # seconds between one socket's messages
CONNECT_BATCH = 50  # handshakes at a time
OPEN_TIMEOUT = 60.0  # seconds for one socket's handshake and hello
OPEN_BACKOFF = 0.5  # seconds before trying a failed open again
SEND_TIMEOUT = 30.0  # seconds for one send to be written
SAMPLE_EVERY = 10.0  # seconds between samples
STUCK_AFTER = 30.0  # seconds a message may wait for its echo before its socket counts as stuck
ALL_OPEN_TIMEOUT = 120.0  # seconds for every socket to be connected (at the start, at the end)
SETTLE = 2.0  # seconds between all sockets open and the first sample
READY_TIMEOUT = 180.0  # seconds a socket waits for a restarted kernel to have the target again
RESTART_TIMEOUT = 120.0  # seconds for the restart request and the new kernel's registration
RESTART_GRACE = 10.0  # seconds after a restart in which a session that ends is its casualty
REGISTER_TIMEOUT = 30.0  # seconds for one attempt at registering the target
REGISTER_TRIES = 3
DRAIN_TIMEOUT = 15.0  # seconds for the last echoes once sending stops
CLOSE_TIMEOUT = 30.0  # seconds for every socket to close
TASK_TIMEOUT = 10.0  # seconds for a background task to finish once told to stop
RSS_SLACK = 10 * 1024 * 1024  # bytes the server's RSS may grow from start to end, besides:
# each comm's log of its latest messages, which fills up to its window by design (contract v2,
# Window); a small window, so that the logs fill early in the run and a leak stands out
WINDOW_BYTES = 64 * 1024
FD_SLACK = 50  # file descriptors the server may gain from start to end
KERNEL_RESTARTED = "kernel_restarted"
RESTART_CODE = 1012
MiB = 1024 * 1024

# Runs in the kernel, at the start and after every restart: the echo target, and a thread that
# sends each open comm of that target a numbered tick every TICK_EVERY seconds.
KERNEL_CODE = textwrap.dedent(
    f"""
    import threading as _threading
    import time as _time
    from comm import get_comm_manager as _get_comm_manager

    _soak_comms = {{}}  # comm_id -> [comm, next tick]

    def _soak_open(comm, open_msg):
        _soak_comms[comm.comm_id] = [comm, 0]
        comm.on_msg(lambda msg: comm.send(msg["content"]["data"]))
        comm.on_close(lambda msg: _soak_comms.pop(comm.comm_id, None))

    def _soak_ticks():
        while True:
            _time.sleep({TICK_EVERY!r})
            for comm_id, entry in list(_soak_comms.items()):
                entry[0].send({{"tick": entry[1], "comm": comm_id}})
                entry[1] += 1

    _get_comm_manager().register_target({TARGET!r}, _soak_open)
    if not any(t.name == "soak-ticks" for t in _threading.enumerate()):
        _threading.Thread(target=_soak_ticks, name="soak-ticks", daemon=True).start()
    """
)


# -- what is counted ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Everything the soak counts, over all sockets."""

    sent: int = 0
    echoed: int = 0
    lost: int = 0  # outside restarts
    lost_to_restarts: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    stray: int = 0  # an echo of a message never sent, or already written off
    unanswered: int = 0  # still waiting for their echoes when the soak was cut short
    ticks: int = 0
    ticks_lost: int = 0
    ticks_repeated: int = 0
    connections_cut: int = 0
    reconnects: int = 0  # of clients that have ended; live ones are added when read
    resets: Counter[str] = field(default_factory=Counter)  # by reason
    restart_ends: Counter[str] = field(default_factory=Counter)  # sessions ended by a restart
    other_ends: Counter[str] = field(default_factory=Counter)  # sessions ended otherwise
    open_failures: Counter[str] = field(default_factory=Counter)  # handshakes tried again
    slow_sends: int = 0  # sends not written within SEND_TIMEOUT
    restarts: int = 0
    restart_seconds: list[float] = field(default_factory=list)  # request to target registered
    round_trips: list[float] = field(default_factory=list)  # seconds


@dataclass
class Sample:
    """The server at one moment."""

    at: float  # seconds since the start of the soak
    rss: int
    fds: int
    cpu_percent: float
    connected: int


def _brief(counter: Counter[str]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in counter.most_common()) or "none"


def _end_key(closed: CommClosed) -> str:
    return f"{closed.code} {closed.reason or ''}".strip()


# -- one socket -----------------------------------------------------------------------------------


class Probe:
    """One socket of the soak: a durable session to the echo target, opened again whenever a
    restart ends it; sends a numbered message every second and checks what comes back."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.tally = soak.tally
        self.index = index
        self.client: CommClient | None = None
        self.next_n = 1  # the number of the next message (across sessions)
        self.pending: dict[int, float] = {}  # sent, not echoed: number -> perf_counter at send
        self.written_off: set[int] = set()  # lost (to restarts or not), for strays
        self.highest_echoed = 0
        self.reset_marks: list[tuple[int, str]] = []  # (last number sent before it, reason)
        self.ticks_next: dict[str, int] = {}  # comm id -> the tick expected next

    async def run(self) -> None:
        """Open, exchange until the session ends, and open again, until the soak stops."""
        while not self.soak.stopping:
            opened = await self._open()
            if opened is None:
                return
            client, epoch = opened
            self.client = client
            sender = asyncio.create_task(self._send_every_second(client))
            try:
                closed = await self._receive(client)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                self.client = None
                self.tally.reconnects += client.reconnects
            by_restart = closed.code == RESTART_CODE or (
                epoch < self.soak.epoch and self.soak.in_restart_window()
            )
            self._ended(closed, by_restart=by_restart and not self.soak.stopping)

    async def _open(self) -> tuple[CommClient, int] | None:
        """A new session (None if the soak stops first), tried again until it opens; with the
        restart epoch it was opened in."""
        soak = self.soak
        while not soak.stopping:
            async with asyncio.timeout(READY_TIMEOUT):
                await soak.ready.wait()  # the kernel has the target
            async with soak.handshakes:
                if soak.stopping:
                    return None
                epoch = soak.epoch
                try:
                    client = await asyncio.wait_for(
                        CommClient.open(
                            soak.proxied_url,
                            soak.server.kernel_id,
                            TARGET,
                            token=soak.server.token,
                            session=True,
                            on_reset=self._on_reset,
                        ),
                        OPEN_TIMEOUT,
                    )
                    return client, epoch
                except Refused as e:
                    self.tally.open_failures[f"refused {e.status}"] += 1
                except CommClosed as e:
                    self.tally.open_failures[f"closed {e.code}"] += 1
                except (OSError, StreamClosedError, WebSocketClosedError, TimeoutError) as e:
                    self.tally.open_failures[type(e).__name__] += 1
            await asyncio.sleep(OPEN_BACKOFF)
        return None

    def _on_reset(self, reason: str) -> None:
        """A reconnection could not resume: what was sent so far and not echoed by the time
        a later message's echo comes is written off (see :meth:`_settle_resets`)."""
        self.tally.resets[reason] += 1
        self.reset_marks.append((self.next_n - 1, reason))

    async def _send_every_second(self, client: CommClient) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.soak.rng.random() * SEND_EVERY  # spread over the second
        while not self.soak.draining:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + SEND_EVERY, loop.time())
            if self.soak.draining:
                return
            n = self.next_n
            # Recorded before sending: send numbers the message before its first await, so a
            # reset seen meanwhile (on_reset) knows whether this message went before it.
            self.next_n += 1
            self.pending[n] = time.perf_counter()
            self.tally.sent += 1
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await client.send({"n": n})
            except CommClosed:  # raised before numbering: this message was never sent
                del self.pending[n]
                self.next_n -= 1
                self.tally.sent -= 1
                return
            except TimeoutError:
                self.tally.slow_sends += 1

    async def _receive(self, client: CommClient) -> CommClosed:
        """Check every message until the session ends; how it ended."""
        while True:
            try:
                message = await client.recv()
            except CommClosed as closed:
                return closed
            data = message.data
            if isinstance(data, dict) and "tick" in data:
                self._tick(str(data.get("comm")), data["tick"])
            elif isinstance(data, dict) and isinstance(data.get("n"), int):
                self._echo(data["n"])
            else:
                self.tally.stray += 1

    def _echo(self, n: int) -> None:
        tally = self.tally
        self._settle_resets(below=n)
        sent_at = self.pending.pop(n, None)
        if sent_at is not None:
            tally.echoed += 1
            tally.round_trips.append(time.perf_counter() - sent_at)
            if n < self.highest_echoed:
                tally.out_of_order += 1
            self.highest_echoed = max(self.highest_echoed, n)
        elif n < self.next_n and n not in self.written_off:
            tally.duplicated += 1
        else:
            tally.stray += 1

    def _tick(self, comm_id: str, tick: int) -> None:
        expected = self.ticks_next.get(comm_id, 0)
        self.tally.ticks += 1
        if tick < expected:
            self.tally.ticks_repeated += 1
            return
        self.tally.ticks_lost += tick - expected
        self.ticks_next[comm_id] = tick + 1

    def _settle_resets(self, below: int) -> None:
        """Write off what was pending at each reset before message ``below`` was sent: its
        echo is here, so theirs are not coming (the reset's new comm never had them)."""
        while self.reset_marks and self.reset_marks[0][0] < below:
            last, reason = self.reset_marks.pop(0)
            self._write_off(up_to=last, by_restart=reason == KERNEL_RESTARTED)

    def give_up(self) -> None:
        """The soak was cut short (or this socket would not close): what is still pending
        is counted as unanswered."""
        self.tally.unanswered += len(self.pending)
        self.pending.clear()

    def _write_off(self, up_to: int, by_restart: bool) -> None:
        """Pending messages up to ``up_to`` will not be echoed: lost to a restart if nothing
        sent after them was echoed, lost otherwise."""
        for n in [n for n in self.pending if n <= up_to]:
            del self.pending[n]
            self.written_off.add(n)
            if by_restart and n > self.highest_echoed:
                self.tally.lost_to_restarts += 1
            else:
                self.tally.lost += 1

    def _ended(self, closed: CommClosed, *, by_restart: bool) -> None:
        """The session ended: nothing pending will be echoed."""
        self._settle_resets(below=self.next_n)
        self._write_off(up_to=self.next_n, by_restart=by_restart)
        if self.soak.stopping:
            return
        ends = self.tally.restart_ends if by_restart else self.tally.other_ends
        ends[_end_key(closed)] += 1

    def connected(self) -> bool:
        """Whether this socket's current connection is open."""
        client = self.client
        if client is None or client.resumable is None or client.resumable.socket is None:
            return False
        protocol = client.connection.protocol
        return protocol is not None and not protocol.is_closing()

    def oldest_pending(self) -> float:
        """Seconds the oldest unanswered message has waited (0 if none)."""
        if not self.pending:
            return 0.0
        return time.perf_counter() - next(iter(self.pending.values()))


# -- the soak -------------------------------------------------------------------------------------


class CuttingFewProxy(CuttingProxy):
    """A :class:`CuttingProxy` that can also cut a random few of its connections."""

    def cut_some(self, count: int, rng: random.Random) -> int:
        """Abort ``count`` connections picked at random, both sides; how many it cut."""
        links = rng.sample(list(self.links), min(count, len(self.links)))
        for link in links:
            for end in link:
                end.transport.abort()
        return len(links)


class Soak:
    """The server, the proxy, the sockets and the timers of one soak run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.fds_before_open: int | None = None
        self.fds_after_close: int | None = None
        self.duration = 0.0
        self.cut_short = ""  # why the soak ended early, if it did
        self.log_errors = self.log_tracebacks = 0
        self.server: Server
        self.proxy: CuttingFewProxy | None = None
        self.proxied_url = ""
        self.probes: list[Probe] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()  # the kernel has the target
        self.handshakes = asyncio.Semaphore(CONNECT_BATCH)
        self.epoch = 0  # restarts begun
        self.ready_at = 0.0  # monotonic time the kernel last had the target
        self.stopping = False  # no more opening
        self.draining = False  # no more sending
        self.started_at = 0.0
        self._cpu = (0.0, 0.0)  # (server CPU seconds, monotonic) at the latest sample

    async def run(self) -> None:
        """The whole soak; cleans up whatever happens."""
        args = self.args
        self.server = await Server.start(
            {"TransportsExtension": {"session_window_bytes": WINDOW_BYTES}}
        )
        try:
            await self._register()
            self.ready.set()
            self.proxy = CuttingFewProxy("127.0.0.1", urlsplit(self.server.url).port or 80)
            port = await self.proxy.start()
            self.proxied_url = urlunsplit(
                urlsplit(self.server.url)._replace(netloc=f"127.0.0.1:{port}")
            )
            _say(f"server {self.server.url} (proxy :{port}), kernel {self.server.kernel_id}")
            await self._warm_up()
            self.fds_before_open = self.server.server_ps.num_fds()
            self.probes = [Probe(self, i) for i in range(args.sockets)]
            self.tasks = [asyncio.create_task(probe.run()) for probe in self.probes]
            began = time.monotonic()
            await self._all_connected("opening")
            _say(f"{args.sockets} sockets open in {time.monotonic() - began:.1f} s")
            await asyncio.sleep(SETTLE)
            self.started_at = time.monotonic()
            self._cpu = (self.server.server_cpu(), self.started_at)
            await self._sample()
            timers = [
                asyncio.create_task(self._every(args.cut_every, self._cut)),
                asyncio.create_task(self._every(args.restart_every, self._restart)),
                asyncio.create_task(self._every(SAMPLE_EVERY, self._sample)),
            ]
            try:
                await self._watch([*timers, *self.tasks], args.seconds)
            finally:
                await self._stop(timers)
            self.duration = time.monotonic() - self.started_at
            await self._all_connected("the end")
            await self._sample()
            await self._drain()
            await self._close_all()
            await asyncio.sleep(1.0)  # let the server release the closed sockets
            self.fds_after_close = self.server.server_ps.num_fds()
            _say(f"fds after closing every socket: {self.fds_after_close}")
        finally:
            await self._clean_up()

    # -- the kernel ------------------------------------------------------------------------------

    async def _register(self) -> None:
        """Register the echo target (and the tick thread) in the kernel."""
        for attempt in range(REGISTER_TRIES):
            try:
                async with asyncio.timeout(REGISTER_TIMEOUT):
                    await self.server.execute(KERNEL_CODE)
                return
            except TimeoutError:
                if attempt == REGISTER_TRIES - 1:
                    raise
                _say("registering the target timed out; trying again")

    async def _warm_up(self) -> None:
        """One session opened, echoed and closed, so that the bridge to the kernel exists
        before "fds before opening" is read."""
        async with asyncio.timeout(OPEN_TIMEOUT):
            client = await CommClient.open(
                self.proxied_url, self.server.kernel_id, TARGET, token=self.server.token
            )
            try:
                await client.send({"n": 0})
                while "n" not in (await client.recv()).data:
                    pass  # a tick
            finally:
                await client.close()
        await asyncio.sleep(1.0)  # let the server release it

    async def _restart(self) -> None:
        """Restart the kernel through the REST API, then register the target in the new one."""
        self.ready.clear()
        self.epoch += 1
        began = time.monotonic()
        async with asyncio.timeout(RESTART_TIMEOUT):
            await asyncio.to_thread(
                self.server._api, "POST", f"api/kernels/{self.server.kernel_id}/restart"
            )
            await self._register()
        self.ready.set()
        self.ready_at = time.monotonic()
        seconds = self.ready_at - began
        self.tally.restarts += 1
        self.tally.restart_seconds.append(seconds)
        _say(f"{self._at()} restart {self.epoch}: kernel ready with the target in {seconds:.1f} s")

    def in_restart_window(self) -> bool:
        """Whether a restart is under way or ended within ``RESTART_GRACE`` seconds."""
        return not self.ready.is_set() or time.monotonic() - self.ready_at < RESTART_GRACE

    # -- timers ------------------------------------------------------------------------------------

    async def _every(self, seconds: float, action: Any) -> None:
        """Run ``action`` every ``seconds`` until cancelled (an action is never cut short:
        :meth:`_stop` waits for it)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + seconds
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += seconds
            await asyncio.shield(action())

    async def _cut(self) -> None:
        assert self.proxy is not None
        self.tally.connections_cut += self.proxy.cut_some(self.args.cut_count, self.rng)

    async def _watch(self, tasks: list[asyncio.Task[None]], seconds: float) -> None:
        """Wait ``seconds``; raise at once what a timer or a socket failed with."""
        done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _stop(self, timers: list[asyncio.Task[None]]) -> None:
        """Stop the timers; a restart under way is let finish (the kernel needs its target)."""
        for timer in timers:
            timer.cancel()
        await asyncio.wait(timers, timeout=TASK_TIMEOUT)
        async with asyncio.timeout(RESTART_TIMEOUT):
            await self.ready.wait()

    # -- samples -----------------------------------------------------------------------------------

    async def _sample(self) -> None:
        """Read the server's RSS, fds and CPU; print them with the counts so far."""
        server, tally = self.server, self.tally
        now, cpu = time.monotonic(), server.server_cpu()
        cpu_percent = (cpu - self._cpu[0]) / max(now - self._cpu[1], 1e-9) * 100
        self._cpu = (cpu, now)
        sample = Sample(
            at=now - self.started_at,
            rss=server.server_rss(),
            fds=server.server_ps.num_fds(),
            cpu_percent=cpu_percent,
            connected=sum(probe.connected() for probe in self.probes),
        )
        self.samples.append(sample)
        stuck = sum(probe.oldest_pending() > STUCK_AFTER for probe in self.probes)
        bridge = await asyncio.to_thread(self._bridge_status)
        _say(
            f"{self._at()} rss {sample.rss / MiB:.1f} MiB  fds {sample.fds}  "
            f"cpu {sample.cpu_percent:.0f}%  connected {sample.connected}/{len(self.probes)}  "
            f"{bridge}  sent {tally.sent}  echoed {tally.echoed}  "
            f"lost {tally.lost}  lost to restarts {tally.lost_to_restarts}  "
            f"cut {tally.connections_cut}  resumed {self.reconnects()}  stuck {stuck}"
        )

    def _bridge_status(self) -> str:
        """The bridge's own count of comms and clients on the kernel."""
        try:
            status = self.server.transports_status()
        except OSError as e:
            return f"status: {e}"
        return f"comms {status.get('comms', '-')}  clients {status.get('clients', '-')}"

    def _at(self) -> str:
        return f"t={time.monotonic() - self.started_at:6.1f}s" if self.started_at else "t=  -"

    def reconnects(self) -> int:
        return self.tally.reconnects + sum(
            probe.client.reconnects for probe in self.probes if probe.client is not None
        )

    # -- the end -----------------------------------------------------------------------------------

    async def _all_connected(self, when: str) -> None:
        """Wait until every socket is connected (bounded; a shortfall is reported)."""
        deadline = time.monotonic() + ALL_OPEN_TIMEOUT
        while time.monotonic() < deadline:
            if all(probe.connected() for probe in self.probes):
                return
            for task in self.tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.sleep(0.1)
        missing = sum(not probe.connected() for probe in self.probes)
        _say(f"at {when}, {missing} sockets still not connected after {ALL_OPEN_TIMEOUT:.0f} s")

    async def _drain(self) -> None:
        """Stop sending and wait (bounded) for the echoes still on their way."""
        self.draining = True
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(probe.pending for probe in self.probes) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _close_all(self) -> None:
        """Close every session (a close frame ends it in the server) and end the probes."""
        self.stopping = True
        clients = [probe.client for probe in self.probes if probe.client is not None]
        closing = [asyncio.create_task(client.close()) for client in clients]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_TIMEOUT)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=CLOSE_TIMEOUT)

    async def _clean_up(self) -> None:
        """Whatever happened: end the probes, close the proxy, read the log, stop the server."""
        self.stopping = self.draining = True
        self.ready.set()  # no probe waits for a kernel any more
        if self.started_at and not self.duration:  # cut short
            self.duration = time.monotonic() - self.started_at
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=TASK_TIMEOUT)
        for probe in self.probes:
            probe.give_up()
        if self.proxy is not None:
            self.proxy.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TASK_TIMEOUT):
                    await self.proxy.server.wait_closed()
        log = Path(self.server.workdir.name) / "server.log"
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
            self.log_errors = sum(line.startswith("[E ") or " E " in line[:40] for line in lines)
            self.log_tracebacks = sum("Traceback" in line for line in lines)
        await asyncio.to_thread(self.server.stop)

    # -- the report --------------------------------------------------------------------------------

    def failures(self) -> list[str]:
        """What went wrong, in words; empty if all held."""
        tally = self.tally
        checks = {
            "messages lost": tally.lost,
            "messages duplicated": tally.duplicated,
            "messages out of order": tally.out_of_order,
            "stray echoes": tally.stray,
            "messages unanswered when the soak stopped": tally.unanswered,
            "ticks lost": tally.ticks_lost,
            "ticks repeated": tally.ticks_repeated,
            "resets not by a restart": sum(
                n for reason, n in tally.resets.items() if reason != KERNEL_RESTARTED
            ),
            "sessions ended outside restarts": sum(tally.other_ends.values()),
        }
        failures = [f"{what}: {n}" for what, n in checks.items() if n]
        if len(self.samples) >= 2:
            start, end = self.samples[0], self.samples[-1]
            if end.rss - start.rss > RSS_SLACK + self.args.sockets * WINDOW_BYTES:
                failures.append(f"RSS grew by {(end.rss - start.rss) / MiB:.1f} MiB")
            if end.fds - start.fds > FD_SLACK:
                failures.append(f"fds grew by {end.fds - start.fds}")
        return failures

    def summary(self) -> str:
        """The Markdown table of the run."""
        args, tally, samples = self.args, self.tally, self.samples
        rts = sorted(tally.round_trips)
        rows: list[tuple[str, str]] = [
            ("sockets", f"{args.sockets}"),
            ("duration", f"{self.duration:.0f} s (asked {args.seconds:g} s; seed {args.seed})"),
            ("messages sent / echoed", f"{tally.sent:,} / {tally.echoed:,}"),
            ("lost (outside restarts)", f"{tally.lost}"),
            ("lost to restarts (expected)", f"{tally.lost_to_restarts}"),
            ("duplicated", f"{tally.duplicated}"),
            ("out of order", f"{tally.out_of_order}"),
            ("stray echoes", f"{tally.stray}"),
            ("unanswered when the soak stopped", f"{tally.unanswered}"),
            (
                "ticks received / lost / repeated",
                f"{tally.ticks:,} / {tally.ticks_lost} / {tally.ticks_repeated}",
            ),
            (
                "cuts",
                f"{tally.connections_cut} connections "
                f"({args.cut_count} every {args.cut_every:g} s)",
            ),
            ("resumes (reconnects)", f"{self.reconnects()}"),
            ("resets by reason", _brief(tally.resets)),
            ("restarts", self._restarts()),
            ("sessions ended by restarts", _brief(tally.restart_ends)),
            ("sessions ended otherwise", _brief(tally.other_ends)),
            ("handshakes tried again", _brief(tally.open_failures)),
            (f"sends slower than {SEND_TIMEOUT:g} s", f"{tally.slow_sends}"),
            (
                "round trip p50 / p99 / max",
                " / ".join(f"{_quantile(rts, q) * 1e3:.1f}" for q in (0.5, 0.99, 1.0)) + " ms"
                if rts
                else "—",
            ),
        ]
        if samples:
            start, end = samples[0], samples[-1]
            rows += [
                (
                    "server RSS start / max / end",
                    f"{start.rss / MiB:.1f} / {max(s.rss for s in samples) / MiB:.1f} / "
                    f"{end.rss / MiB:.1f} MiB",
                ),
                (
                    "server fds start / max / end",
                    f"{start.fds} / {max(s.fds for s in samples)} / {end.fds}",
                ),
                (
                    "server fds before opening / after closing",
                    f"{self.fds_before_open} / {_or_dash(self.fds_after_close)}",
                ),
                (
                    "server CPU mean / max",
                    f"{_mean([s.cpu_percent for s in samples[1:]]):.0f} / "
                    f"{max((s.cpu_percent for s in samples[1:]), default=0):.0f} %",
                ),
                ("sockets connected, min over samples", f"{min(s.connected for s in samples)}"),
            ]
        rows.append(
            ("server log: error lines / tracebacks", f"{self.log_errors} / {self.log_tracebacks}")
        )
        failures = self.failures()
        verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
        if self.cut_short:
            verdict = f"CUT SHORT ({self.cut_short}); until then: {verdict}"
        rows.append(("verdict", verdict))
        lines = ["| soak | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
        return "\n".join(lines)

    def _restarts(self) -> str:
        seconds = self.tally.restart_seconds
        if not seconds:
            return f"{self.tally.restarts}"
        return (
            f"{self.tally.restarts} (every {self.args.restart_every:g} s; "
            f"{_mean(seconds):.1f} s mean, {max(seconds):.1f} s max to the target again)"
        )


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _or_dash(value: int | None) -> str:
    return "—" if value is None else f"{value}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sockets", type=int, default=500, help="durable sessions (500)")
    parser.add_argument("--seconds", type=float, default=600, help="length of the soak (600)")
    parser.add_argument("--cut-every", type=float, default=5, help="seconds between cuts (5)")
    parser.add_argument(
        "--cut-count", type=int, default=None, help="connections per cut (sockets / 20, ≥ 1)"
    )
    parser.add_argument(
        "--restart-every", type=float, default=120, help="seconds between kernel restarts (120)"
    )
    parser.add_argument("--seed", type=int, default=None, help="for the cuts and send phases")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.cut_count is None:
        args.cut_count = max(1, args.sockets // 20)
    soak = Soak(args)
    status = 0
    try:
        asyncio.run(soak.run())
    except KeyboardInterrupt:
        soak.cut_short = "interrupted"
        status = 130
    except Exception as e:
        traceback.print_exc()
        soak.cut_short = f"failed: {e!r}"
        status = 1
    print(soak.summary())
    if status == 0 and soak.failures():
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
