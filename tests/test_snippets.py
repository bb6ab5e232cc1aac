"""Every snippet of the README and the docs runs, as a user would run it, against the demo.

The snippets are a story: a reader runs them in the order of the pages, against one server and
one kernel (the one ``make demo`` starts, with what it runs at start-up), so they run so here:
the first test case that needs them runs them all, in order, and each test case reports its own
snippet's outcome. A snippet that drifts from the code fails its own case, named after its page
and the heading above it (``docs/howto/rpc.md#in-a-page``).

How a fence says what it is and how it runs is documented in ``docs/contributing.md``
("Snippets that run"): ``python`` (one asyncio REPL per page), ``python script``, ``python
kernel``, ``python config``, ``js`` (a module in a page), ``html`` (a page), ``bash``; ``norun``
after any of them, or another language, shows a block without running it.

``examples/kernel_side.ipynb`` runs at the end, with nbclient, on a kernel that a Python client
talks to meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from .conftest import TIMEOUT
from .test_browser import CHROMIUM, CHROMIUM_ARGS, async_playwright

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
REPL = Path(__file__).with_name("snippet_repl.py")
NOTEBOOK = ROOT / "examples" / "kernel_side.ipynb"
SNIPPET_TIMEOUT = TIMEOUT  # seconds, for each snippet (a page: until its expected output)

# -- what a fence is ---------------------------------------------------------------------------

# (language, word after it) -> how the snippet runs; "norun" after any language shows it only
RUNS = {
    ("python", None): "repl",
    ("python", "script"): "script",
    ("python", "kernel"): "kernel",
    ("python", "config"): "config",
    ("js", None): "module",
    ("html", None): "page",
    ("bash", None): "bash",
}
NORUN = "norun"
SHOWN = {"console", "text", "json", "typescript", "yaml", ""}  # languages that never run

# What some snippets must print (their output: a page's console, a program's or cell's stdout).
EXPECTED: dict[str, list[str]] = {
    "README.md#quick-start-3": [
        "greeting: {'hello':",
        "'data': {'n': 1}}",
        "echo: {'ping': 1} 1024 bytes",
    ],
    "README.md#quick-start-5": ['received {"hello":', 'received {"ping":1}'],
    "docs/quickstart.md#talk-to-the-demos-echo-target-2": ["'data': {'n': 1}}", "{'ping': 1}"],
    "docs/quickstart.md#talk-to-the-demos-echo-target-3": ['"comm_id"', '"data":{"n":1}'],
    "docs/quickstart.md#talk-to-the-demos-echo-target-4": ["echo"],
    "docs/tutorial.md#a-page": [
        'tally says {"welcome":',
        '"count":1,"shout":"HELLO"',
        '"count":2,"shout":"AGAIN"',
        "closed 1000",
    ],
    "docs/tutorial.md#a-python-client": ["'data': {'from': 'alice'}}", "HI [b'\\x89PNG']"],
    "docs/tutorial.md#two-clients-on-one-comm": ["BOTH OF YOU BOTH OF YOU"],
    "docs/tutorial.md#one-client-only": ["'shout': 'PSST'", "True"],
    "docs/tutorial.md#the-end-of-a-comm": ["bob's comm closed: 1000"],
    "docs/howto/sessions.md#in-python": ["new ", "{'after': 'the cut'} 1 resumed"],
    "docs/howto/widgets.md#in-the-page": ["status: open", "rendered true"],
    "docs/howto/widgets.md#any-app-with-many-comms": [
        "[('first', 'first'), ('first', 'greeting'), ('second', 'greeting'), ('second', 'second')]"
    ],
    "docs/howto/sessions.md#in-python-2": ["None True"],
    "docs/howto/sessions.md#in-a-page": ["durable true comm", "plain durable false"],
    "docs/howto/rest-sse.md#with-curl": ['{"replies":["ping"]}', "204"],
    "docs/howto/rest-sse.md#with-curl-2": ["event: open", 'data: "ping"', '"code":1000'],
    "docs/howto/rest-sse.md#from-a-page": ["event: hi"],
    "docs/howto/rpc.md#in-a-page": [
        "add: 3",
        'digest: {"bytes":10,"sha256":',
        "and your title is 'calculator page'",
        "remote error: TypeError",
    ],
    "docs/howto/rpc.md#from-python": ["5", "{'bytes': 10, 'md5':", "remote error: TypeError"],
    "docs/howto/rpc.md#the-kernel-calls-its-clients": [
        "shown",
        "['a Python script', 'calculator page']",
        "[70, 70]",
        "{",  # echo's results, by client
    ],
    "docs/howto/collaboration.md#in-the-kernel-a-shared-comm": ["board "],
    "docs/howto/collaboration.md#clients-attach": [
        "ann got {'text': ''}",
        "ben sees ['Anonymous",
        "{'text': 'hello, board'} from ann: True",
    ],
    "docs/howto/collaboration.md#clients-attach-2": [
        'the board says {"text":"hello, board"}',
        "on the board: Anonymous",
    ],
    "docs/howto/collaboration.md#clients-attach-3": ["3 members: ['editor', 'editor', 'editor']"],
    "docs/howto/cli.md#see-what-a-kernel-has-open": ["jupyter_transports.demo.model"],
    "docs/howto/cli.md#open-a-comm-and-talk-to-it": [
        '"event": "opened"',
        '"data": "hello"',
        '"code": 1000',
    ],
    "docs/howto/cli.md#watch-a-comm-while-something-changes-it": ['"counter": 1'],
    "docs/reference/websocket.md#a-socket-without-the-client-library": [
        'frame {"ping":1}',
        "closed 1000",
    ],
    "docs/reference/browser-client.md#the-browser-client-transportsjs": [
        'message {"hello":',
        'the other socket got {"to":"both sockets"}',
        "close 1000",
    ],
}


@dataclass(frozen=True)
class Snippet:
    page: str  # relative to the repository: README.md, docs/howto/rpc.md
    heading: str  # the heading's anchor
    number: int  # 1, 2… under the same heading
    language: str
    word: str | None  # the info string's word after the language
    code: str
    line: int

    @property
    def name(self) -> str:
        suffix = "" if self.number == 1 else f"-{self.number}"
        return f"{self.page}#{self.heading}{suffix}"

    @property
    def runs(self) -> str | None:
        """How it runs (a key of RUNS' values), or None for a block only shown."""
        if self.word == NORUN or self.language in SHOWN or self.language.startswith("{"):
            return None
        return RUNS.get((self.language, self.word))


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^(#{1,6}) +(?P<title>.+?) *#*$")


def anchor(title: str) -> str:
    """A heading's anchor, as MyST (myst_heading_anchors) and GitHub make it."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def fences(path: Path) -> Iterator[Snippet]:
    """The fenced code blocks of a Markdown file, with the heading each is under."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    heading, counts = "", {}
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            if match := HEADING.match(lines[i]):
                heading = anchor(match["title"])
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        words = opened["info"].split()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        i += 1
        counts[heading] = counts.get(heading, 0) + 1
        yield Snippet(
            page=page,
            heading=heading,
            number=counts[heading],
            language=words[0] if words else "",
            word=words[1] if len(words) > 1 else None,
            code="\n".join(body) + "\n",
            line=start,
        )


def toctree_order(index: Path) -> list[Path]:
    """The docs' pages in reading order: the toctrees from index.md down, depth first."""
    order: list[Path] = []

    def visit(page: Path) -> None:
        if page in order or not page.exists():
            return
        order.append(page)
        for block in fences(page):
            if block.language == "{toctree}":
                for entry in block.code.splitlines():
                    if entry.strip() and not entry.startswith(":"):
                        visit((page.parent / f"{entry.strip()}.md").resolve())

    visit(index.resolve())
    rest = sorted(p.resolve() for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    return order + [p for p in rest if p not in order]


def all_snippets() -> list[Snippet]:
    pages = [ROOT / "README.md", *toctree_order(DOCS / "index.md")]
    return [snippet for page in pages for snippet in fences(page)]


SNIPPETS = all_snippets()
RUNNABLE = [snippet for snippet in SNIPPETS if snippet.runs is not None]


# -- the pure checks -----------------------------------------------------------------------------


def test_every_code_block_is_marked_as_the_conventions_say() -> None:
    runnable_languages = {language for language, _ in RUNS}
    unmarked = [
        f"{s.name} (line {s.line}): ```{s.language} {s.word or ''}"
        for s in SNIPPETS
        if s.language in runnable_languages and s.word != NORUN and s.runs is None
    ]
    unknown = [
        f"{s.name} (line {s.line}): ```{s.language}"
        for s in SNIPPETS
        if s.language not in runnable_languages | SHOWN and not s.language.startswith("{")
    ]
    assert not unmarked, f"fences with an unknown word after the language: {unmarked}"
    assert not unknown, f"fences of a language that docs/contributing.md does not name: {unknown}"


def test_expected_outputs_name_snippets_that_exist() -> None:
    names = {s.name for s in RUNNABLE}
    assert not set(EXPECTED) - names, f"EXPECTED names no such snippet: {set(EXPECTED) - names}"
    pages = [s.name for s in RUNNABLE if s.runs == "page" and s.name not in EXPECTED]
    assert not pages, f"a whole page needs its expected output in EXPECTED: {pages}"


def test_no_snippet_names_a_port() -> None:
    connecting = [s for s in RUNNABLE if s.runs != "config"]  # config may name a page's origin
    with_ports = [s.name for s in connecting if re.search(r"localhost:\d+", s.code)]
    assert not with_ports, (
        f"snippets that run must read the server's URL, not name it: {with_ports}"
    )


def test_the_names_are_unique_and_stable() -> None:
    names = [s.name for s in SNIPPETS]
    assert len(names) == len(set(names))
    assert anchor("Talk to the demo's `echo` target") == "talk-to-the-demos-echo-target"


LINK = re.compile(r"\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]*))?\)")


def test_the_readme_links_resolve() -> None:
    """Every link of the README to a file of the repository (docs pages, the contract) reaches
    that file, and the heading it names."""
    broken = []
    for match in LINK.finditer((ROOT / "README.md").read_text()):
        target, wanted = match["target"], match["anchor"]
        if not target or "://" in target:
            continue
        path = ROOT / target
        if not path.exists():
            broken.append(target)
        elif wanted and path.suffix == ".md":
            headings = {
                anchor(m["title"]) for m in map(HEADING.match, path.read_text().splitlines()) if m
            }
            if wanted not in headings:
                broken.append(f"{target}#{wanted}")
    assert not broken, f"README links to nothing: {broken}"


def test_the_benchmark_tables_have_their_place_in_the_docs(tmp_path: Path) -> None:
    """``python -m benchmarks --docs`` rewrites only what is between the performance page's
    markers."""
    from benchmarks import run

    page = tmp_path / "performance.md"
    page.write_text((DOCS / "performance.md").read_text())
    original = page.read_text()
    run.PERFORMANCE_PAGE, saved = page, run.PERFORMANCE_PAGE
    try:
        run.update_docs("| new | table |", "make bench", "now", 3)
    finally:
        run.PERFORMANCE_PAGE = saved
    updated = page.read_text()
    assert "| new | table |" in updated and "medians of 3 interleaved rounds" in updated
    before, after = original.split(run.DOCS_BEGIN)[0], original.split(run.DOCS_END)[1]
    assert updated.startswith(before + run.DOCS_BEGIN) and updated.endswith(run.DOCS_END + after)


# -- running the story -------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool | None  # None: could not run here (no Chromium)
    output: str = ""
    seconds: float = 0.0
    why: str = ""


OUTCOMES: dict[str, Outcome] = {}  # filled once, by the first test case that needs them


@pytest.fixture
def origin() -> Iterator[tuple[Any, str]]:
    """A listening socket for the pages' web server: another origin than the Jupyter server's."""
    sock, port = bind_unused_port()
    yield sock, f"http://localhost:{port}"
    sock.close()


@pytest.fixture
def jp_server_config(origin: tuple[Any, str]) -> Config:
    """The demo's server (the extension, default traits), allowing the pages' origin."""
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_transports": True},
                "allow_origin": origin[1],
            }
        }
    )


def load_demo_server() -> Any:
    """``demo/serve.py``, whose kernel start-up the story reproduces."""
    spec = importlib.util.spec_from_file_location("demo_serve", ROOT / "demo" / "serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def start_demo_kernel(app: Any) -> tuple[str, Any, Path]:
    """A kernel that runs what ``make demo``'s runs at start-up; its id, a client, its IPython dir."""
    serve = load_demo_server()
    ipython_dir = Path(serve.startup_dir())
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    kernel_id = await app.kernel_manager.start_kernel(kernel_name="python3", env=env)
    client = app.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    await client.wait_for_ready(timeout=TIMEOUT)
    reply = await client.execute_interactive(
        "channel, shared, echo", timeout=TIMEOUT, output_hook=lambda msg: None
    )
    assert reply["content"]["status"] == "ok", "the demo did not start in the kernel"
    return kernel_id, client, ipython_dir


class Pages(web.RequestHandler):
    """The pages of the snippets, on the other origin: ``/{n}.html``."""

    def initialize(self, pages: dict[str, str]) -> None:
        self.pages = pages

    def get(self, name: str) -> None:
        if name == "favicon.ico":  # a browser asks; a 404 would be an error in the console
            self.set_status(204)
            return
        if name not in self.pages:
            raise web.HTTPError(404)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.pages[name])


def module_page(code: str) -> str:
    """A ``js`` snippet as the body of a module script, which says when it has run."""
    return textwrap.dedent(
        """\
        <!doctype html>
        <meta charset="utf-8" />
        <title>snippet</title>
        <script type="module">
        {code}
        window.snippetDone = true;
        </script>
        """
    ).format(code=code)


@dataclass
class Story:
    """What the snippets run against: one server, one demo kernel, one browser."""

    server_url: str
    token: str
    kernel_id: str
    kernel: Any  # a kernel client
    origin: str
    pages: dict[str, str]
    workdir: Path
    browser: Any = None
    context: Any = None
    open_pages: list[Any] = field(default_factory=list)
    repl: asyncio.subprocess.Process | None = None

    @property
    def env(self) -> dict[str, str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {
            **os.environ,
            "JUPYTER_URL": self.server_url,
            "JUPYTER_TOKEN": self.token,
            "KERNEL_ID": self.kernel_id,
            "PATH": path,
        }

    async def run(self, snippet: Snippet) -> Outcome:
        began = time.perf_counter()
        runner = getattr(self, f"run_{snippet.runs}")
        try:
            outcome: Outcome = await runner(snippet)
        except asyncio.TimeoutError:
            outcome = Outcome(False, why=f"no end within {SNIPPET_TIMEOUT} s")
        outcome.seconds = time.perf_counter() - began
        expected = [e for e in EXPECTED.get(snippet.name, []) if e not in outcome.output]
        if outcome.ok and expected:
            outcome.ok, outcome.why = False, f"its output lacks {expected}"
        return outcome

    async def end_of_page(self) -> None:
        """A reader leaves the page: its REPL ends, its pages close."""
        if self.repl is not None:
            assert self.repl.stdin is not None
            self.repl.stdin.close()
            try:
                await asyncio.wait_for(self.repl.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                self.repl.kill()
                await self.repl.wait()
            self.repl = None
        for page in self.open_pages:
            await page.close()
        self.open_pages.clear()

    # -- Python, outside the kernel

    async def run_repl(self, snippet: Snippet) -> Outcome:
        if self.repl is None:
            self.repl = await asyncio.create_subprocess_exec(
                sys.executable,
                str(REPL),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
                limit=2**24,
            )
        assert self.repl.stdin is not None and self.repl.stdout is not None
        request = {"name": snippet.name, "code": snippet.code, "timeout": SNIPPET_TIMEOUT}
        self.repl.stdin.write((json.dumps(request) + "\n").encode())
        await self.repl.stdin.drain()
        line = await asyncio.wait_for(self.repl.stdout.readline(), SNIPPET_TIMEOUT + 5)
        try:
            result = json.loads(line)
        except ValueError:
            return Outcome(False, line.decode(), why="the REPL failed")
        return Outcome(result["ok"], result["output"])

    async def run_script(self, snippet: Snippet) -> Outcome:
        path = self.workdir / "snippet.py"
        path.write_text(snippet.code)
        return await self.process(sys.executable, str(path))

    async def run_bash(self, snippet: Snippet) -> Outcome:
        path = self.workdir / "snippet.sh"
        path.write_text(snippet.code)
        return await self.process("bash", "-euo", "pipefail", str(path))

    async def process(self, *command: str) -> Outcome:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
            env=self.env,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), SNIPPET_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            return Outcome(False, output.decode(), why=f"no end within {SNIPPET_TIMEOUT} s")
        status = process.returncode
        return Outcome(status == 0, output.decode(), why=f"exit status {status}" if status else "")

    # -- Python, in the kernel or in the server's configuration

    async def run_kernel(self, snippet: Snippet) -> Outcome:
        output: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                output.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                output.append(content["data"].get("text/plain", "") + "\n")
            elif msg["msg_type"] == "error":
                output.append("\n".join(content["traceback"]))

        reply = await self.kernel.execute_interactive(
            snippet.code, timeout=SNIPPET_TIMEOUT, output_hook=hook
        )
        return Outcome(reply["content"]["status"] == "ok", "".join(output))

    async def run_config(self, snippet: Snippet) -> Outcome:
        return check_config(snippet.code)

    # -- in the browser

    async def run_module(self, snippet: Snippet) -> Outcome:
        return await self.open_page(snippet, module_page(snippet.code), done="window.snippetDone")

    async def run_page(self, snippet: Snippet) -> Outcome:
        return await self.open_page(snippet, snippet.code, done="true")

    async def open_page(self, snippet: Snippet, html: str, done: str) -> Outcome:
        if self.context is None:
            return Outcome(None, why=f"no Chromium at {CHROMIUM} (or no Playwright)")
        name = f"{len(self.pages)}.html"
        self.pages[name] = html
        page = await self.context.new_page()
        self.open_pages.append(page)
        console: list[str] = []
        errors: list[str] = []
        page.on("console", lambda m: (console if m.type != "error" else errors).append(m.text))
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        query = urlencode(
            {"server": self.server_url, "kernel": self.kernel_id, "token": self.token}
        )
        await page.goto(f"{self.origin}/{name}?{query}")
        deadline = time.monotonic() + SNIPPET_TIMEOUT
        expected = EXPECTED.get(snippet.name, [])
        while not errors and time.monotonic() < deadline:
            finished = await page.evaluate(f"Boolean({done})")
            text = "\n".join(console)
            if finished and all(e in text for e in expected):
                break
            await asyncio.sleep(0.02)
        else:
            if not errors:
                errors.append(f"not done within {SNIPPET_TIMEOUT} s")
        output = "\n".join(console)
        return Outcome(not errors, output + "".join(f"\nerror: {e}" for e in errors))


def check_config(code: str) -> Outcome:
    """Each ``c.Class.trait`` a configuration snippet sets must be a configurable trait."""
    from jupyter_server.gateway.gateway_client import GatewayClient
    from jupyter_server.serverapp import ServerApp

    from jupyter_transports.app import TransportsExtension

    classes = {cls.__name__: cls for cls in [TransportsExtension, ServerApp, GatewayClient]}
    config = Config()
    exec(code, {"c": config, "get_config": lambda: config})
    problems = []
    for section, values in config.items():
        cls = classes.get(section)
        if cls is None:
            problems.append(f"no known class {section}")
            continue
        traits = cls.class_traits(config=True)
        problems += [
            f"{section}.{name} is not configurable" for name in values if name not in traits
        ]
    return Outcome(not problems, "\n".join(problems))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium, or None where there is none."""
    if async_playwright is None or not os.access(CHROMIUM, os.X_OK):
        yield None
        return
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def tell_the_story(app: Any, server_url: str, origin: tuple[Any, str]) -> None:
    """Run every snippet, page by page, in order; record each one's outcome."""
    pages: dict[str, str] = {}
    site = HTTPServer(web.Application([(r"/([0-9]+\.html|favicon\.ico)", Pages, {"pages": pages})]))
    site.add_sockets([origin[0]])
    kernel_id, client, ipython_dir = await start_demo_kernel(app)
    workdir = Path(tempfile.mkdtemp(prefix="snippets-"))
    story = Story(
        server_url, app.identity_provider.token, kernel_id, client, origin[1], pages, workdir
    )
    try:
        async with chromium() as browser:
            if browser is not None:
                story.browser, story.context = browser, await browser.new_context()
            page = None
            for snippet in RUNNABLE:
                if snippet.page != page:
                    await story.end_of_page()
                    page = snippet.page
                OUTCOMES[snippet.name] = await story.run(snippet)
            await story.end_of_page()
    finally:
        client.stop_channels()
        site.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(ipython_dir, ignore_errors=True)


@pytest.fixture
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Every snippet's outcome: the first case that asks runs them all (see the module's doc)."""
    if not OUTCOMES:
        app = request.getfixturevalue("jp_serverapp")
        server_url = request.getfixturevalue("server_url")
        origin = request.getfixturevalue("origin")
        loop = request.getfixturevalue("jp_asyncio_loop")
        loop.run_until_complete(tell_the_story(app, server_url, origin))
        if report := os.environ.get("SNIPPETS_REPORT"):  # every snippet's output, to read
            Path(report).write_text(json.dumps({n: vars(o) for n, o in OUTCOMES.items()}, indent=1))
    return OUTCOMES


@pytest.mark.timeout(300)  # the first case runs every snippet
@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.name for s in RUNNABLE])
def test_snippet(snippet: Snippet, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[snippet.name]
    if outcome.ok is None:
        pytest.skip(outcome.why)
    if not outcome.ok:
        names = list(outcomes)
        before = names[: names.index(snippet.name)]
        earlier = next((name for name in before if outcomes[name].ok is False), None)
        note = f" (an earlier snippet failed too: {earlier})" if earlier else ""
        pytest.fail(
            f"{snippet.name} (line {snippet.line}) failed{note}: {outcome.why}\n"
            f"--- code\n{snippet.code}--- output\n{outcome.output}",
            pytrace=False,
        )


# -- the notebook ------------------------------------------------------------------------------


def cell_text(cell: Any) -> str:
    """What a code cell printed (its stream outputs)."""
    return "".join(output.get("text", "") for output in cell.get("outputs", []))


async def test_the_kernel_side_notebook(jp_serverapp: Any, server_url: str, token: str) -> None:
    """``examples/kernel_side.ipynb``, run by nbclient on the demo kernel, cell by cell, while a
    Python client plays the pages: it opens the notebook's target, attaches to the comm it opened,
    answers its RPC calls, and is the demo tab that the notebook makes react."""
    import nbformat
    from nbclient import NotebookClient

    from jupyter_transports.client import CommClient
    from jupyter_transports.rpc_client import Channel

    kernel_id, kc, ipython_dir = await start_demo_kernel(jp_serverapp)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    runner = NotebookClient(notebook, km=km, timeout=TIMEOUT)  # on the running kernel: no set-up
    runner.kc = kc
    runner.reset_execution_trackers()
    cells = {cell.metadata["tags"][0]: cell for cell in notebook.cells if cell.cell_type == "code"}
    clients: list[Any] = []

    async def run(tag: str) -> str:
        index = notebook.cells.index(cells[tag])
        await runner.async_execute_cell(cells[tag], index, execution_count=index)
        return cell_text(cells[tag])

    async def recv(comm: CommClient) -> Any:
        return (await asyncio.wait_for(comm.recv(), TIMEOUT)).data

    class Page:
        """What the demo page's handler answers, and what it was asked."""

        toasts: list[str] = []  # noqa: RUF012

        def title(self) -> str:
            return "a Python client"

        def toast(self, text: str) -> str:
            self.toasts.append(text)
            return "visible"

    try:
        # 1. a target: a client opens it, is greeted, is echoed; the kernel heard it
        assert "registered" in await run("register-target")
        echo = await CommClient.open(server_url, kernel_id, "notebook.echo", token=token)
        clients.append(echo)
        assert (await recv(echo))["from"] == "the notebook"
        await echo.send("hi")
        assert await recv(echo) == {"echo": "hi"}
        assert "['hi']" in await run("heard")

        # 2. a comm the kernel opened: a client attaches, is welcomed alone, then gets the news
        [news_id] = re.findall(r"attach to comm (\w+)", await run("open-comm"))
        reader = await CommClient.attach(server_url, kernel_id, news_id, token=token)
        clients.append(reader)
        assert "welcome" in await recv(reader)
        assert "1 client(s)" in await run("send-news")
        assert await recv(reader) == {"headline": "written in the notebook"}

        # 3. RPC: the client calls the kernel, and answers the kernel's call
        await run("rpc-channel")
        rpc = await Channel.open(server_url, kernel_id, "notebook.rpc", token=token, handler=Page())
        clients.append(rpc)
        assert await rpc.call("square", 7) == 49
        assert "its title: a Python client" in await run("rpc-call")

        # 4. the demo's page: its channel gets the toast, its model comm the new counter
        page = await Channel.open(
            server_url, kernel_id, "jupyter_transports.demo", token=token, handler=Page()
        )
        clients.append(page)
        model = await CommClient.attach(
            server_url, kernel_id, await page.call("model"), token=token
        )
        clients.append(model)
        before = (await recv(model))["state"]["counter"]  # the state, to a newcomer
        assert "1 tab(s) answered" in await run("demo-toast")
        assert Page.toasts == ["Hello from the notebook"]
        assert f"counter {before + 10}" in await run("demo-counter")
        changed = await recv(model)
        assert changed["state"]["counter"] == before + 10 and changed["by"] == "the notebook"
    finally:
        for client in reversed(clients):
            await asyncio.wait_for(client.close(), TIMEOUT)
        kc.stop_channels()
        shutil.rmtree(ipython_dir, ignore_errors=True)
