"""Durable sessions in the browser: transports.js in a real headless Chromium (Debian's), driven
by Playwright, against the real server and kernels.

The tests cut the page's sockets from the server's side: they close the TCP stream under a
session's current connection, so the server sees no close frame (the session waits for its
client) and the page sees an abnormal closure (1006) and reconnects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from .conftest import KERNEL_TARGETS
from .test_browser import DEMO_KERNEL, DEMO_PAGE, MODULE, chromium, live, new_page
from .test_browser import pytestmark as browser_marks
from .test_rpc import KERNEL_CHANNEL

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = browser_marks  # skipped without Playwright or Chromium

CUTS = 10
MESSAGES = 300  # each way, in the cut test

# A comm target that counts both ways: the page sends {"n": 1..}, which the kernel records and
# echoes (with its buffers); {"start": total} makes the kernel send {"k": 1..total} on its own.
NUMBERS_TARGET = """
import asyncio
from comm import get_comm_manager

numbers = {"comms": [], "received": [], "tasks": []}

def numbers_target(comm, open_msg):
    numbers["comms"].append(comm.comm_id)

    async def count(total, every):
        for k in range(1, total + 1):
            comm.send({"k": k})
            await asyncio.sleep(every)

    def on_msg(msg):
        data = msg["content"]["data"]
        if "start" in data:
            numbers["tasks"].append(asyncio.ensure_future(count(data["start"], data["every"])))
        else:
            numbers["received"].append(data["n"])
            comm.send({"echo": data["n"]}, buffers=msg["buffers"])

    comm.on_msg(on_msg)

get_comm_manager().register_target("numbers", numbers_target)
"""

# An RPC channel whose `hold` waits until the test releases it; every method counts its calls.
HELD_CHANNEL = """
import asyncio
from jupyter_transports.kernel import Channel

held = {"calls": {}, "release": asyncio.Event()}

class HeldHandler:
    async def hold(self, key):
        held["calls"][key] = held["calls"].get(key, 0) + 1
        await held_channel.call("started", key, to=held_channel.caller, timeout=10)
        await held["release"].wait()
        return f"{key} done"

    def count(self, key):
        held["calls"][key] = held["calls"].get(key, 0) + 1
        return key

held_channel = Channel("held", HeldHandler())
"""


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def startup_code(jp_environ: Any, jp_home_dir: Any, monkeypatch: Any) -> Any:
    """``startup_code(text)``: code that every kernel (re)started from then on runs at its start
    (an IPython startup file), so a restarted kernel has the test's targets again. Request it
    before ``kernel``: the kernel must start without $IPYTHONDIR."""
    monkeypatch.delenv("IPYTHONDIR", raising=False)  # the kernels read $HOME/.ipython, a temp dir
    startup = Path(jp_home_dir) / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)

    def write(text: str) -> None:
        (startup / "00-transports-tests.py").write_text(text)

    return write


@pytest.fixture
def transports_app(jp_serverapp: Any) -> Any:
    return next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_transports"]))


@pytest.fixture
def blank_url(server_url: str) -> str:
    """A page on the server's origin that does nothing by itself (the demo without a kernel)."""
    return f"{server_url}{DEMO_PAGE}"


@pytest.fixture
def module_url(server_url: str) -> str:
    return f"{server_url}{MODULE}"


def cut(app: Any, kernel_id: str) -> int:
    """Drop the TCP connection of every connected session on the kernel, without a close frame;
    how many there were."""
    connections = [
        session.connection
        for (kernel, _), session in app.sessions.live.items()
        if kernel == kernel_id and session.connection is not None
    ]
    for connection in connections:
        connection.ws_connection.stream.close()
    return len(connections)


async def until(page: Page, predicate: str, arg: Any = None) -> None:
    """Wait (bounded by the page's default timeout) until ``predicate`` holds in the page."""
    await page.wait_for_function(predicate, arg=arg)


def repeats(page: Page) -> list[str]:
    return [m for m in page.console_messages if "received already" in m]  # type: ignore[attr-defined]


# Record every WebSocket URL the page opens, and the comm events of `watch(name, comm)`.
RECORDER = """
() => {
  window.urls = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, ...rest) { window.urls.push(url); super(url, ...rest); }
  };
  window.events = {};
  window.watch = (name, comm) => {
    const events = (window.events[name] = []);
    comm.addEventListener("open", (e) => events.push(
      ["open", e.reconnected, e.resumed, e.reason, comm.commId, comm.clientId]));
    comm.addEventListener("close", (e) => events.push(["close", e.code, e.reconnecting]));
    return comm;
  };
}
"""


# -- a comm survives drops: nothing lost, nothing repeated, in order both ways -----------------


async def test_a_comm_survives_cuts_with_nothing_lost_or_repeated(
    kernel, transports_app, blank_url, module_url, token
):
    await kernel.execute(NUMBERS_TARGET)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), blank_url)
        await page.evaluate(RECORDER)
        first = await page.evaluate(
            """async ([module, kernelId, token, total]) => {
                 const { Comm } = await import(module);
                 const comm = await Comm.open({ kernelId, token, target: "numbers",
                                                reconnect: { initialDelay: 50 } });
                 watch("numbers", comm);
                 const t = (window.t = { comm, counted: [], echoes: [], sent: 0, sentAway: 0 });
                 comm.addEventListener("message", ({ data, buffers }) => {
                   if ("k" in data) t.counted.push(data.k);
                   else t.echoes.push([data.echo, buffers.map((b) => Array.from(b))]);
                 });
                 comm.send({ start: total, every: 0.01 });
                 // the page's numbered messages, one every 10 ms whatever the socket's state
                 // (every 10th with a buffer)
                 const timer = setInterval(() => {
                   if (t.sent === total) return clearInterval(timer);
                   const n = ++t.sent;
                   if (comm.state !== "open") t.sentAway += 1;
                   comm.send({ n }, n % 10 === 0 ? [new Uint8Array([n % 256, 7])] : []);
                 }, 10);
                 return [comm.commId, comm.clientId, comm.durable];
               }""",
            [module_url, kernel.id, token, MESSAGES],
        )
        comm_id, client_id, durable = first
        assert durable and comm_id and client_id

        for i in range(1, CUTS + 1):
            # cut while messages flow both ways: after some progress since the last return
            await until(
                page,
                "([i, n]) => t.comm.state === 'open' && events.numbers.length === 2 * (i - 1)"
                " && t.counted.length >= n",
                [i, i * MESSAGES // (CUTS + 2)],
            )
            assert cut(transports_app, kernel.id) == 1
            await until(page, "(i) => events.numbers.length === 2 * i", i)  # a close, an open

        await until(page, "(n) => t.counted.length >= n && t.echoes.length >= n", MESSAGES)
        counted, echoes, events, sent_away, urls = await page.evaluate(
            "[t.counted, t.echoes, events.numbers, t.sentAway, urls]"
        )

    everything = list(range(1, MESSAGES + 1))
    assert counted == everything  # kernel -> page
    assert [n for n, _ in echoes] == everything  # page -> kernel -> page
    assert [b for n, b in echoes] == [[[n % 256, 7]] if n % 10 == 0 else [] for n in everything]
    assert await kernel.evaluate("numbers['received']") == everything  # once each, in order
    assert await kernel.evaluate("numbers['comms']") == [comm_id]  # the kernel saw one client
    assert sent_away > 0  # some messages were sent while reconnecting, and arrived
    assert events == [
        e
        for _ in range(CUTS)
        for e in (["close", 1006, True], ["open", True, True, None, comm_id, client_id])
    ]
    assert repeats(page) == []

    # one session id, 22 characters of URL-safe base64; `last` on every reconnect
    queries = [parse_qs(urlsplit(url).query) for url in urls]
    sessions = {q["session_key"][0] for q in queries}
    assert len(queries) == CUTS + 1 and len(sessions) == 1
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sessions.pop())
    assert "last" not in queries[0]
    lasts = [int(q["last"][0]) for q in queries[1:]]
    assert lasts == sorted(lasts) and lasts[0] > 0


# -- what the "open" event says: resumed after a drop, reset after a kernel restart -------------


async def test_open_says_resumed_after_a_drop_and_kernel_restarted_after_a_restart(
    startup_code, kernel, transports_app, jp_serverapp, blank_url, module_url, token
):
    startup_code(KERNEL_TARGETS + KERNEL_CHANNEL)  # the restarted kernel has them again
    await kernel.execute(KERNEL_CHANNEL)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), blank_url)
        await page.evaluate(RECORDER)
        before = await page.evaluate(
            """async ([module, kernelId, token]) => {
                 const { Channel, Comm } = await import(module);
                 const options = { kernelId, token, reconnect: { initialDelay: 50 } };
                 const echo = watch("echo", await Comm.open({ ...options, target: "echo" }));
                 const watcher = watch("watcher", await Comm.attach({ ...options, commId: echo.commId }));
                 const calc = await Channel.open({ ...options, name: "calc" });
                 watch("calc", calc.comm);
                 const next = (comm) => new Promise((r) => comm.addEventListener("message", r, { once: true }));
                 window.ask = async (data) => {
                   const answer = next(echo);
                   echo.send(data);
                   return (await answer).data;
                 };
                 Object.assign(window, { echo, watcher, calc });
                 return [echo.commId, echo.clientId, await ask("before"), await calc.call("add", 1, 2)];
               }""",
            [module_url, kernel.id, token],
        )
        comm_id, client_id, *answers = before
        assert answers == ["before", 3]

        # a drop: the same session, the same comm
        assert cut(transports_app, kernel.id) == 3
        await until(page, "() => ['echo', 'watcher', 'calc'].every((n) => events[n].length === 2)")
        assert await page.evaluate("ask('after the drop')") == "after the drop"
        events = await page.evaluate("events")
        assert events["echo"] == [
            ["close", 1006, True],
            ["open", True, True, None, comm_id, client_id],
        ]
        assert events["watcher"][1][:5] == ["open", True, True, None, comm_id]

        # a kernel restart: the session is reset; the Comm.open comm reopens to its target
        await page.evaluate(
            "() => { window.pending = calc.call('slow', 30).then(() => 'answered', (e) => e.name); }"
        )
        await page.evaluate("calc.echo()")  # the slow call has reached the kernel
        await jp_serverapp.kernel_manager.restart_kernel(kernel.id)
        await until(page, "() => events.echo.length >= 4 && events.calc.length >= 4")
        await until(page, "() => events.watcher.length >= 4")
        events = await page.evaluate("events")
        assert events["echo"][2] == ["close", 1012, True]
        kind, reconnected, resumed, reason, new_comm_id, new_client_id = events["echo"][3]
        assert (kind, reconnected, resumed, reason) == ("open", True, False, "kernel_restarted")
        assert new_comm_id not in (None, comm_id) and new_client_id not in (None, client_id)
        assert events["calc"][3][:4] == ["open", True, False, "kernel_restarted"]
        # an attached comm cannot come back: its comm died with the kernel
        assert events["watcher"][2:] == [["close", 1012, True], ["close", 4404, False]]
        assert await page.evaluate("watcher.state") == "closed"
        # the call in flight was lost with the kernel, and says so; the channel works again
        assert await page.evaluate("window.pending") == "ConnectionLost"
        assert await page.evaluate("calc.call('add', 20, 22)") == 42

        assert await page.evaluate("ask('after the restart')") == "after the restart"
        assert await page.evaluate("echo.commId") == new_comm_id
        assert await kernel.comm_ids("echo") == [new_comm_id]
        assert len(events["echo"]) == 4  # no further drop or reset
        assert repeats(page) == []


# -- RPC: a call in flight across a cut completes exactly once ---------------------------------


async def test_rpc_calls_across_a_cut_complete_exactly_once(
    kernel, transports_app, blank_url, module_url, token
):
    await kernel.execute(HELD_CHANNEL)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), blank_url)
        await page.evaluate(RECORDER)
        await page.evaluate(
            """async ([module, kernelId, token]) => {
                 const { Channel } = await import(module);
                 const started = {};
                 window.started = new Promise((resolve) => (started.a = resolve));
                 const handler = { started: (key) => started[key]?.(key) };
                 // a slow return after the cut: the kernel answers while the page is away
                 const held = await Channel.open({ kernelId, token, name: "held", handler,
                                                   timeout: 20000, reconnect: { initialDelay: 1000 } });
                 watch("held", held.comm);
                 window.returns = {};   // every answer the page receives, by call id
                 held.comm.addEventListener("message", ({ data }) => {
                   for (const m of data.rpc === "batch" ? data.messages : [data]) {
                     if (m.rpc === "return") window.returns[m.id] = (window.returns[m.id] ?? 0) + 1;
                   }
                 });
                 window.results = [];
                 const settle = (call) => call.then((v) => results.push(v), (e) => results.push(e.name));
                 Object.assign(window, { held, settle });
                 settle(held.call("hold", "a"));
               }""",
            [module_url, kernel.id, token],
        )
        assert await page.evaluate("started") == "a"  # the kernel is inside hold("a")

        assert cut(transports_app, kernel.id) == 1
        await until(page, "() => held.comm.state === 'reconnecting'")
        # a call made while away waits for the session's return
        await page.evaluate("settle(held.call('count', 'b'))")
        await kernel.execute("held['release'].set()")  # hold("a") returns while the page is away

        await until(page, "() => results.length === 2")
        results, returns, events = await page.evaluate("[results, returns, events.held]")

    assert sorted(results) == ["a done", "b"]
    assert await kernel.evaluate("held['calls']") == {"a": 1, "b": 1}  # each ran once
    assert sorted(returns.values()) == [1, 1]  # each answer came once
    assert events[1][:4] == ["open", True, True, None]
    assert repeats(page) == []


# -- opting out ----------------------------------------------------------------------------------


async def test_text_frames_and_session_false_use_plain_sockets(
    kernel, blank_url, module_url, token
):
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), blank_url)
        await page.evaluate(RECORDER)
        result = await page.evaluate(
            """async ([module, kernelId, token]) => {
                 const { Comm } = await import(module);
                 const next = (comm) => new Promise((r) => comm.addEventListener("message", r, { once: true }));
                 const out = [];
                 for (const options of [{ frames: "text" }, { session: false }, {}]) {
                   const comm = await Comm.open({ kernelId, token, target: "echo", ...options });
                   const answer = next(comm);
                   comm.send(options.frames ? "not { json" : { x: [1] }, [new Uint8Array([5])]);
                   const { data, buffers } = await answer;
                   out.push([comm.durable, comm.clientId !== null, data, buffers.map((b) => Array.from(b))]);
                   comm.close();
                 }
                 return out;
               }""",
            [module_url, kernel.id, token],
        )
        urls = await page.evaluate("urls")

    assert result == [
        [False, False, "not { json", [[5]]],
        [False, False, {"x": [1]}, [[5]]],
        [True, True, {"x": [1]}, [[5]]],
    ]
    sessions = [parse_qs(urlsplit(url).query).get("session_key") for url in urls]
    assert [s is None for s in sessions] == [True, True, False]


# -- the demo page recovers after a kernel restart ------------------------------------------------


@pytest.mark.parametrize("session", ["0", "1"])
async def test_demo_recovers_after_a_kernel_restart(
    startup_code, kernel, jp_serverapp, server_url, token, session
):
    startup_code(DEMO_KERNEL.read_text())
    await kernel.execute(DEMO_KERNEL.read_text())
    query = urlencode({"kernel": kernel.id, "token": token, "session": session})
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), f"{server_url}{DEMO_PAGE}?{query}")
        await live(page)
        await page.click("#increment")
        await page.wait_for_function("document.getElementById('counter').textContent === '1'")

        await jp_serverapp.kernel_manager.restart_kernel(kernel.id)
        await page.wait_for_function(
            "document.getElementById('notice').textContent === 'kernel restarted; reconnected'"
        )
        await live(page)
        # the restarted kernel's model, from 0 again, and it works both ways
        await page.wait_for_function("document.getElementById('counter').textContent === '0'")
        await page.click("#increment")
        await page.wait_for_function("document.getElementById('counter').textContent === '1'")
        assert await kernel.evaluate("shared.state['counter']") == 1
        assert await page.evaluate("demo.channel.call('divide', 1, 4)") == 0.25
        log = await page.inner_text("#log")
        assert "kernel restarting…" in log
