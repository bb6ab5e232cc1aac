"""``jupyter transports``, run as a user runs it: a subprocess against a real server and kernel.

The server runs in the test's event loop, so the command runs under asyncio's subprocesses and
every read of its output is bounded. The pure helpers (what the user typed, what is printed)
are tested without a server at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_transports.cli.arguments import (
    check_arguments,
    parse_data,
    parse_open_data,
    resolve_prefix,
    same_server,
    split_server_url,
)
from jupyter_transports.cli.errors import EXIT_ABNORMAL_CLOSE, CliError, NotFound, http_error
from jupyter_transports.cli.output import (
    closed_event,
    event_text,
    human_bytes,
    kernels_text,
    message_event,
)

from .conftest import TIMEOUT, Kernel

COMMAND = (sys.executable, "-m", "jupyter_transports.cli")


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Running:
    """A command that runs on: its output read line by line, each read bounded."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, stream: asyncio.StreamReader | None = None) -> str:
        """The next line of stdout (or of ``stream``)."""
        stream = stream or self.process.stdout
        assert stream is not None
        line = await asyncio.wait_for(stream.readline(), TIMEOUT)
        assert line, f"the command ended: {await self.finish()}"
        return line.decode().rstrip("\n")

    async def event(self) -> dict[str, Any]:
        """The next JSON line of stdout (``--json``)."""
        event: dict[str, Any] = json.loads(await self.line())
        return event

    async def write(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        await self.process.stdin.drain()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    async def finish(self) -> Result:
        """Wait for the command to end: its status and the rest of its output."""
        out, err = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        assert self.process.returncode is not None
        return Result(self.process.returncode, out.decode(), err.decode())

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


Start = Callable[..., Awaitable[Running]]
Run = Callable[..., Awaitable[Result]]


@pytest.fixture
def start(server_url: str, token: str, jp_asyncio_loop: Any):
    """Start ``jupyter transports ARGS…`` on the test server (``server=False``: let it find the
    server itself); killed at the end of the test if it still runs."""
    running: list[Running] = []

    async def inner(*args: str, server: bool = True, stdin: bool = False, **env: str) -> Running:
        options = ("--url", server_url, "--token", token) if server else ()
        process = await asyncio.create_subprocess_exec(
            *COMMAND,
            *args,
            *options,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        running.append(Running(process))
        return running[-1]

    yield inner

    async def stop_all() -> None:
        for command in running:
            command.stop()
            await asyncio.wait_for(command.process.wait(), TIMEOUT)

    jp_asyncio_loop.run_until_complete(stop_all())


@pytest.fixture
def run(start: Start) -> Run:
    """Run ``jupyter transports ARGS…`` to its end: ``await run("list", "--json")``."""

    async def inner(*args: str, **options: Any) -> Result:
        return await (await start(*args, **options)).finish()

    return inner


async def echo_comm(kernel: Kernel, open_comm: Any) -> str:
    """The id of a new echo comm, once the kernel has it; the test's client stays attached."""
    client = await open_comm("echo")
    await kernel.opened_comm("echo")
    comm_id: str = client.comm_id
    return comm_id


async def until_closed(kernel: Kernel, comm_id: str) -> None:
    """Wait until the kernel no longer has ``comm_id``: its comm_close may come after the
    command's socket closed."""
    async with asyncio.timeout(TIMEOUT):
        while comm_id in await kernel.comm_ids("echo"):
            await asyncio.sleep(0.01)


def no_traceback(result: Result) -> None:
    assert result.status == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


# -- list and send ------------------------------------------------------------------------------


async def test_list_shows_kernels_comms_and_clients(run: Run, kernel: Kernel, open_comm: Any):
    comm_id = await echo_comm(kernel, open_comm)

    text = await run("list")
    assert text.status == 0, text
    assert f"kernel {kernel.id}  python3" in text.stdout
    [row] = [line.split() for line in text.stdout.splitlines() if comm_id in line]
    assert row == [comm_id, "echo", "1"]

    listed = await run("list", kernel.id[:8], "--json")
    assert listed.status == 0, listed
    [model] = listed.json["kernels"]
    assert model["id"] == kernel.id
    assert model["comms"] == {comm_id: {"target_name": "echo", "clients": 1}}
    assert model["transports"]["comms"] == 1
    assert model["transports"]["clients"] == 1


async def test_send_prints_the_replies(run: Run, kernel: Kernel, open_comm: Any):
    comm_id = await echo_comm(kernel, open_comm)

    text = await run("send", kernel.id[:6], comm_id[:6], '{"hello": "kernel"}')
    assert text.status == 0, text
    assert text.stdout == '{"hello": "kernel"}\n'

    document = await run("send", kernel.id, comm_id, "ping", "--json", "--wait", "10")
    assert document.status == 0, document
    assert document.json == {"kernel_id": kernel.id, "comm_id": comm_id, "replies": ["ping"]}

    unanswered = await run("send", kernel.id, comm_id, "42", "--count", "0")
    assert (unanswered.status, unanswered.stdout) == (0, ""), unanswered
    assert "no reply" not in unanswered.stderr


# -- tail and open ------------------------------------------------------------------------------

SEND_AND_CLOSE = """
from comm import get_comm_manager
comm = get_comm_manager().get_comm({comm_id!r})
comm.send({{"n": 1}})
comm.send({{"n": 2}}, buffers=[b"abc", b"x" * 2048])
comm.close()
"""


async def test_tail_prints_the_kernels_messages_until_the_comm_closes(
    start: Start, kernel: Kernel, open_comm: Any
):
    comm_id = await echo_comm(kernel, open_comm)
    text = await start("tail", kernel.id[:8], comm_id[:8])
    as_json = await start("tail", kernel.id, comm_id, "--json")
    assert (
        await text.line(text.process.stderr) == f"attached to comm {comm_id} of kernel {kernel.id}"
    )
    assert await as_json.event() == {
        "event": "attached",
        "kernel_id": kernel.id,
        "comm_id": comm_id,
    }

    await kernel.execute(SEND_AND_CLOSE.format(comm_id=comm_id))

    assert await text.line() == '{"n": 1}'
    assert await text.line() == '{"n": 2}  [2 buffers: 3 B, 2.0 KiB]'
    ended = await text.finish()
    assert (ended.status, ended.stdout) == (0, ""), ended
    assert ended.stderr == "closed: 1000: comm closed by the kernel\n"

    assert await as_json.event() == {"event": "message", "data": {"n": 1}, "buffers": []}
    assert await as_json.event() == {"event": "message", "data": {"n": 2}, "buffers": [3, 2048]}
    closing = await as_json.event()
    assert (closing["event"], closing["code"]) == ("closed", 1000)
    assert (await as_json.finish()).status == 0


async def test_tail_exits_non_zero_when_the_kernel_restarts(
    start: Start, kernel: Kernel, open_comm: Any, jp_serverapp: Any
):
    comm_id = await echo_comm(kernel, open_comm)
    tail = await start("tail", kernel.id, comm_id, "--json")
    assert (await tail.event())["event"] == "attached"

    await jp_serverapp.kernel_manager.restart_kernel(kernel.id)

    closing = await tail.event()
    assert (closing["event"], closing["code"]) == ("closed", 1012)
    assert (await tail.finish()).status == EXIT_ABNORMAL_CLOSE


async def test_open_sends_lines_of_stdin_and_closes_when_it_ends(start: Start, kernel: Kernel):
    command = await start("open", kernel.id[:8], "echo", "--json", stdin=True)
    opened = await command.event()
    assert opened == {**opened, "event": "opened", "kernel_id": kernel.id, "target_name": "echo"}
    comm_id = opened["comm_id"]

    await command.write('{"hello": "kernel"}\n')
    assert await command.event() == {"event": "message", "data": {"hello": "kernel"}, "buffers": []}
    await command.write("ping\n\n42\n")  # a blank line is skipped
    assert (await command.event())["data"] == "ping"
    assert (await command.event())["data"] == 42
    assert comm_id in await kernel.comm_ids("echo")

    command.close_stdin()
    closing = await command.event()
    assert closing == {
        "event": "closed",
        "code": 1000,
        "reason": "closed by this client: stdin ended",
    }
    assert (await command.finish()).status == 0
    await until_closed(kernel, comm_id)


async def test_ctrl_c_detaches_tail_and_closes_the_comm_open_opened(start: Start, kernel: Kernel):
    opener = await start("open", kernel.id, "echo", "--data", '{"a": 1}', "--no-stdin")
    notice = await opener.line(opener.process.stderr)
    assert notice.startswith("opened comm "), notice
    comm_id = notice.split()[2]
    tail = await start("tail", kernel.id, comm_id)
    assert (await tail.line(tail.process.stderr)).startswith("attached to comm")

    tail.process.send_signal(signal.SIGINT)
    detached = await tail.finish()
    assert detached.status == 0, detached
    assert detached.stderr == "closed: 1000: detached by this client: Ctrl-C\n"
    assert comm_id in await kernel.comm_ids("echo")  # a tail leaves the comm open

    opener.process.send_signal(signal.SIGINT)
    closed = await opener.finish()
    assert closed.status == 0, closed
    assert closed.stderr == "closed: 1000: closed by this client: Ctrl-C\n"
    await until_closed(kernel, comm_id)


# -- finding the server, and failures -----------------------------------------------------------


async def test_finds_the_server_from_its_runtime_file(
    run: Run, kernel: Kernel, server_url: str, jp_runtime_dir: Any
):
    found = await run("list", "--json", server=False, JUPYTER_RUNTIME_DIR=str(jp_runtime_dir))
    assert found.status == 0, found
    assert found.json["url"] == server_url
    assert kernel.id in [model["id"] for model in found.json["kernels"]]

    # another server's runtime file (this process lives, so it counts as running)
    other = {"url": "http://localhost:1/", "token": "", "pid": os.getpid(), "root_dir": "/"}
    (jp_runtime_dir / "jpserver-other.json").write_text(json.dumps(other))
    several = await run("list", server=False, JUPYTER_RUNTIME_DIR=str(jp_runtime_dir))
    no_traceback(several)
    assert "several Jupyter servers are running; choose one with --url" in several.stderr

    # --url chooses; the token is that server's runtime file's
    chosen = await run("list", "--url", server_url, "--json", server=False)
    assert chosen.status == 0, chosen
    assert kernel.id in [model["id"] for model in chosen.json["kernels"]]


async def test_a_bad_token_is_a_403_in_one_line(run: Run, server_url: str, kernel: Kernel):
    refused = await run("list", "--url", server_url, "--token", "wrong", server=False)
    no_traceback(refused)
    assert refused.stderr.startswith("jupyter transports: error: listing kernels: 403 Forbidden")
    assert len(refused.stderr.splitlines()) == 1


async def test_unknown_kernels_and_comms_are_named(run: Run, kernel: Kernel, open_comm: Any):
    unknown = await run("send", "nosuchkernel", "c0ffee", "1")
    no_traceback(unknown)
    assert "no kernel 'nosuchkernel'" in unknown.stderr

    no_comm = await run("tail", kernel.id, "nosuchcomm")
    no_traceback(no_comm)
    assert f"no comm 'nosuchcomm' in kernel {kernel.id}" in no_comm.stderr

    refused = await run("open", kernel.id, "nosuchtarget", "--no-stdin", "--json")
    assert refused.status == EXIT_ABNORMAL_CLOSE, refused
    closing = json.loads(refused.stdout.splitlines()[-1])
    assert (closing["event"], closing["code"]) == ("closed", 4404)


async def test_no_running_server_is_said_plainly(run: Run, tmp_path: Any):
    none = await run("list", server=False, JUPYTER_RUNTIME_DIR=str(tmp_path / "nothing"))
    no_traceback(none)
    assert "no running Jupyter server found" in none.stderr


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("42", 42),
        ("-1.5", -1.5),
        ("null", None),
        ("true", True),
        ('"42"', "42"),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ("{not json", "{not json"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("", ""),
    ],
)
def test_data_is_json_if_it_parses_else_a_string(text: str, data: Any):
    assert parse_data(text) == data


def test_open_data_must_be_a_json_object():
    assert parse_open_data('{"mode": "fast"}') == {"mode": "fast"}
    for text in ("[1]", "1", '"s"', "{", "NaN"):
        with pytest.raises(CliError):
            parse_open_data(text)


def test_ids_by_unique_prefix():
    ids = ["5b7f0e2a", "5b7f9999", "c01d"]
    assert resolve_prefix("c", ids, "kernel") == "c01d"
    assert resolve_prefix("5b7f0", ids, "kernel") == "5b7f0e2a"
    assert resolve_prefix("ab", ["ab", "abc"], "comm") == "ab"  # a whole id wins
    with pytest.raises(CliError, match="kernel id '5b7f' is ambiguous: 5b7f0e2a, 5b7f9999"):
        resolve_prefix("5b7f", ids, "kernel")
    with pytest.raises(CliError, match="no comm 'x'"):
        resolve_prefix("x", ids, "comm")
    with pytest.raises(CliError, match="empty"):
        resolve_prefix("", ids, "comm")


def test_positional_arguments_are_checked():
    check_arguments(("KERNEL_ID", "COMM_ID"), ["k", "c"], "usage")
    check_arguments(("KERNEL_ID...",), [], "usage")
    check_arguments(("KERNEL_ID...",), ["a", "b"], "usage")
    for given in (["k"], ["k", "c", "x"]):
        with pytest.raises(CliError, match="expected KERNEL_ID COMM_ID"):
            check_arguments(("KERNEL_ID", "COMM_ID"), given, "usage")


def test_server_urls_as_users_paste_them():
    assert split_server_url("localhost:8888") == ("http://localhost:8888/", None)
    assert split_server_url("http://h:1/base?token=abc") == ("http://h:1/base/", "abc")
    assert same_server("http://127.0.0.1:8888/", "http://localhost:8888")
    assert same_server("https://h/", "https://h:443/")
    assert not same_server("http://localhost:8888/", "http://localhost:8889/")
    assert not same_server("http://localhost:8888/a/", "http://localhost:8888/b/")
    with pytest.raises(CliError):
        split_server_url("http://")


def test_http_errors_in_one_line():
    error = http_error(404, b'{"message": "Kernel does not exist: k", "reason": null}', "listing")
    assert isinstance(error, NotFound)
    assert str(error) == "listing: 404 Not Found: Kernel does not exist: k"
    assert "403 Forbidden: check --token" in str(http_error(403, b'{"message": "Forbidden"}'))
    assert "extension enabled?" in str(http_error(404, b"<html>not found</html>"))
    assert str(http_error(404)) == "404 Not Found"  # a refused handshake: no body


def test_what_is_printed():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    assert event_text(message_event({"é": 1})) == '{"é": 1}'
    assert event_text(message_event("s", [3, 2048])) == '"s"  [2 buffers: 3 B, 2.0 KiB]'
    assert event_text(closed_event(1012, "kernel restarting")) == "closed: 1012: kernel restarting"
    assert event_text(closed_event(1000, None)) == "closed: 1000 (comm closed)"
    assert event_text(closed_event(None, "no connection within 60 s")).startswith("closed: the")
    assert kernels_text("http://h/", []) == "no kernels on http://h/"
    listing = kernels_text(
        "http://h/",
        [
            {"id": "k1", "name": "python3", "execution_state": "idle", "comms": {}},
            {"id": "k2", "comms": None, "error": "504 Gateway Timeout"},
            {"id": "k3", "comms": {"c1": {"target_name": "echo", "clients": 12}}},
        ],
    )
    assert listing.splitlines() == [
        "http://h/: 3 kernels",
        "",
        "kernel k1  python3  idle",
        "  no comms",
        "",
        "kernel k2",
        "  comms: 504 Gateway Timeout",
        "",
        "kernel k3",
        "  COMM  TARGET  CLIENTS",
        "  c1    echo         12",
    ]
