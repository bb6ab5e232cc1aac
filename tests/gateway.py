"""A real Jupyter Kernel Gateway for the tests, its kernels, and a second Jupyter server on it.

Fixtures: ``gateway`` (a :class:`KernelGateway` of the test's own), ``gateway_server_config``
(the test server on that gateway), ``gateway_kernel`` (a :class:`GatewayKernel` started through
the test server, in place of conftest's ``kernel``), ``second_server`` (a :class:`JupyterServer`
subprocess on the same gateway).

A test module brings them in as a plugin, and points the test server at the gateway by
overriding ``server_config`` (conftest's ``server_config`` is more specific than a plugin's
fixture of the same name, so the override has to live in the module itself)::

    pytest_plugins = ["tests.gateway"]


    @pytest.fixture
    def server_config(gateway_server_config: dict[str, Any]) -> dict[str, Any]:
        return gateway_server_config

Importing the fixtures by name works for pytest too, but then ruff reports every test argument
that uses one as a redefinition of the import (F811). Importing this module's classes is fine:
the marker PYTEST_DONT_REWRITE in this docstring stops pytest from warning (an error, in this
project) that a plugin was imported before it could rewrite its asserts.

Every process runs in a directory of its own under pytest's temporary directory (its log is
``gateway.log`` / ``server.log`` there), and is stopped, with every kernel it started, at teardown.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayMappingKernelManager
from jupyter_server.serverapp import ServerApp
from jupyter_server.services.kernels.connection.base import deserialize_binary_message
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.server import cpu_seconds as _cpu_seconds

from .conftest import KERNEL_TARGETS, TIMEOUT

START_TIMEOUT = 60.0  # seconds for a process to answer its first request
STOP_TIMEOUT = 10.0  # seconds for a process to stop (and stop its kernels) after SIGTERM
POLL_INTERVAL = 0.02  # seconds between readiness probes
LOG_TAIL = 30  # lines of a process's log printed when it stops (pytest shows them on failure)

GATEWAY_OPTIONS: dict[str, Any] = {
    # not KernelGatewayApp.list_kernels, which KG 3 only warns about: the personality's
    "JupyterWebsocketPersonality.list_kernels": True,
    # KG gives its kernel sockets no config of their own (no "config" in its web app's
    # settings), so they take the app's through their parent, the kernel: this does apply
    "ZMQChannelsWebsocketConnection.limit_rate": False,
    # a kernel started with an env (GatewayClient always sends one) gets only PATH, KERNEL_*
    # and these: HOME keeps IPython's profile in the tmp dir
    "KernelGatewayApp.env_process_whitelist": ["HOME", "PYTHONPATH"],
}


_running: weakref.WeakSet[_Service] = weakref.WeakSet()  # for the atexit backstop


def free_port() -> int:
    """A TCP port on loopback that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(process: psutil.Process | subprocess.Popen[bytes] | int) -> float:
    """CPU seconds of one process (the gateway's ``process``, a kernel's, or a pid)."""
    pid = process if isinstance(process, int) else process.pid
    return _cpu_seconds(psutil.Process(pid))


class _Service:
    """A Jupyter process of the tests' own: started in a session of its own (so that a signal
    to its group reaches nobody else), logging to a file, ready once ``ready_path`` answers."""

    name = "service"
    ready_path = "api/status"

    def __init__(self, workdir: Path, *, port: int | None = None, token: str | None = None):
        self.workdir = workdir
        self.token = token or secrets.token_hex(16)
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.log_path = workdir / f"{self.name}.log"
        self._children: dict[int, psutil.Process] = {}  # every descendant seen, to reap them all
        for sub in ("home", "config", "data", "runtime"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The environment, without the test process's Jupyter and gateway settings."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("JUPYTER_", "KERNEL_", "JPY_", "KG_"))
        }
        env.update(
            HOME=str(self.workdir / "home"),  # IPython writes its profile there
            JUPYTER_CONFIG_DIR=str(self.workdir / "config"),
            JUPYTER_DATA_DIR=str(self.workdir / "data"),
            JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),  # kernels' connection files
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"the {self.name} was never started"
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU seconds of the process itself (not its kernels') so far."""
        return cpu_seconds(self.pid)

    async def start(self) -> None:
        """Start the process and wait until it answers; a port taken meanwhile is tried again
        with another one, unless the port was given (as for :meth:`KernelGateway.restart`)."""
        assert not self.running, f"the {self.name} is already running"
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                log.write(f"---- {self.name} start on port {self.port}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    self.argv(),
                    env=self.env(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _running.add(self)
            self.paused = False
            try:
                await self._wait_ready()
                return
            except _PortTaken:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()
            except BaseException:
                self.stop()
                raise

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                if "no available port" in self.log_text():
                    raise _PortTaken(self.port)
                raise RuntimeError(
                    f"the {self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                await self.api("GET", self.ready_path, timeout=2)
                return
            except OSError as error:  # refused, or not listening yet
                if asyncio.get_running_loop().time() > deadline:
                    message = f"the {self.name} did not answer:\n{self.log_tail()}"
                    raise TimeoutError(message) from error
                await asyncio.sleep(POLL_INTERVAL)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        token: str | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        """A REST call (blocking): its JSON answer; raises ``urllib.error.HTTPError`` for an
        error status, ``TimeoutError`` when no answer comes in ``timeout`` seconds."""
        headers = {"Authorization": f"token {token or self.token}"} if auth else {}
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/{path.lstrip('/')}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            error.close()  # its open response would be a ResourceWarning (an error here)
            raise
        return json.loads(text) if text else None

    async def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """:meth:`request` in a thread, so that the test's event loop (and the in-process test
        server on it) runs meanwhile."""
        return await asyncio.to_thread(self.request, method, path, body, **kwargs)

    def descendants(self) -> list[psutil.Process]:
        """The process's children (kernels among them), each remembered for :meth:`stop`."""
        if not self.running:
            return []
        assert self.process is not None
        try:
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(
                recursive=True
            )
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self._children.setdefault(child.pid, child)
        return children

    def pause(self) -> None:
        """SIGSTOP the process itself (not its kernels), and wait until it is stopped: its
        sockets stay open and say nothing; the OS still accepts connections for it."""
        assert self.process is not None and self.running
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        self._wait_status(stopped=True)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`, and wait until the process runs again."""
        if self.paused and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self._wait_status(stopped=False)
        self.paused = False

    def _wait_status(self, stopped: bool) -> None:
        """Signals are delivered asynchronously: wait (briefly) until the process is seen to
        be stopped, or not."""
        assert self.process is not None
        process = psutil.Process(self.process.pid)
        for _ in range(500):  # 1 s at most
            with contextlib.suppress(psutil.NoSuchProcess):
                if (process.status() == psutil.STATUS_STOPPED) == stopped:
                    return
            time.sleep(0.002)
        raise TimeoutError(f"the {self.name} is not {'stopped' if stopped else 'running'}")

    def kill(self) -> None:
        """SIGKILL the process, as a crash would: its kernels (remembered first, for
        :meth:`stop`) see their parent gone and exit on their own within about a second
        (ipykernel's parent poller)."""
        self.descendants()
        if self.process is not None and self.process.returncode is None:
            # not reaped yet, so the group id is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)
        self.paused = False

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and every process it started (blocking)."""
        if self.running:
            assert self.process is not None
            self.descendants()
            self.resume()  # a stopped process acts on SIGTERM only once continued
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        left = [child for child in self._children.values() if child.is_running()]
        for child in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(left, timeout=STOP_TIMEOUT)
        self._children.clear()
        self.paused = False
        _running.discard(self)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class _PortTaken(RuntimeError):
    pass


@atexit.register
def _stop_all() -> None:
    """A backstop for a run that ends without its fixtures' teardown."""
    for service in list(_running):
        service.stop()


class KernelGateway(_Service):
    """``python -m kernel_gateway`` on loopback, with its own token, kernel listing on, and
    jupyter_server's IOPub rate limit off; its ``python3`` kernels run ``sys.executable``.

    ``options`` are ``{"Class.trait": value}`` on top of :data:`GATEWAY_OPTIONS` (a list value
    is given once per item). Each option must appear once on the command line: traitlets
    keeps both values of a trait given twice and, for a class the app does not declare (as
    ``ZMQChannelsWebsocketConnection``), fails only when the trait is read (each WebSocket
    to a kernel is then a 500).
    """

    name = "gateway"
    ready_path = "api/kernelspecs"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        token: str | None = None,
        options: dict[str, Any] | None = None,
    ):
        super().__init__(workdir, port=port, token=token)
        self.options = {**GATEWAY_OPTIONS, **(options or {})}
        # A python3 kernelspec of the tests' own, first on JUPYTER_PATH: the venv's says
        # "python", which jupyter_client also maps to sys.executable, but a user's or the
        # system's kernelspec could say anything.
        spec_dir = workdir / "share" / "jupyter" / "kernels" / "python3"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tests)",
            "language": "python",
            "interrupt_mode": "signal",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # as GatewayClient.url is usually written

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        options = {
            **self.options,
            "KernelGatewayApp.ip": "127.0.0.1",
            "KernelGatewayApp.port": self.port,
            "KernelGatewayApp.port_retries": 0,  # this port or none: restart() keeps it
            "KernelGatewayApp.auth_token": self.token,
        }
        argv = [sys.executable, "-m", "kernel_gateway"]
        for name, value in options.items():
            for item in value if isinstance(value, list) else [value]:
                argv.append(f"--{name}={item}")
        return argv

    def env(self) -> dict[str, str]:
        return {**super().env(), "JUPYTER_PATH": str(self.workdir / "share" / "jupyter")}

    async def restart(self) -> None:
        """Start a new gateway process on the same port (killing the running one first): the
        old one's kernels are not the new one's."""
        if self.running:
            self.kill()
        self._fixed_port = True
        await self.start()

    def kernel_process(self, kernel_id: str) -> psutil.Process:
        """The process of one of the gateway's kernels (found by its connection file)."""
        connection_file = f"kernel-{kernel_id}.json"
        for child in self.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                if any(part.endswith(connection_file) for part in child.cmdline()):
                    return child
        raise LookupError(f"no process of kernel {kernel_id} under the gateway")


class JupyterServer(_Service):
    """``python -m jupyter_server`` with the extension, on a gateway: a second server, in a
    process of its own, in front of the same kernels as the test server."""

    name = "server"

    def __init__(
        self,
        workdir: Path,
        gateway: KernelGateway,
        *,
        config: dict[str, Any] | None = None,
        token: str | None = None,
    ):
        super().__init__(workdir, token=token)
        self.gateway = gateway
        self.config = config or {}
        (workdir / "root").mkdir(exist_ok=True)

    async def start(self) -> None:
        config = _merged(
            {
                "ServerApp": {
                    "jpserver_extensions": {"jupyter_transports": True},
                    "ip": "127.0.0.1",
                    "port_retries": 0,
                    "open_browser": False,
                    "root_dir": str(self.workdir / "root"),
                },
                "IdentityProvider": {"token": self.token},
                "GatewayClient": {"url": self.gateway.url, "auth_token": self.gateway.token},
            },
            self.config,
        )
        # read from JUPYTER_CONFIG_DIR: nested dicts are awkward on a command line
        (self.workdir / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        await super().start()

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "jupyter_server", f"--ServerApp.port={self.port}"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        return argv


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, config sections merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


class KernelSocket:
    """One WebSocket to a kernel's ``/channels`` on the gateway, speaking the kernel protocol
    in JSON (jupyter_server's default, "legacy" subprotocol), as a notebook frontend does."""

    def __init__(self, ws: ClientConnection, session: str):
        self.ws = ws
        self.session = session

    async def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        """Send a request; its msg_id."""
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "tests",
            "session": self.session,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        }
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        await self.ws.send(json.dumps({**msg, "channel": channel, "buffers": []}))
        return msg_id

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message, of any channel (its ``channel`` key says which)."""
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(frame, bytes):  # a message with buffers
            return deserialize_binary_message(frame)  # type: ignore[no-any-return]
        return json.loads(frame)  # type: ignore[no-any-return]

    async def reply(
        self, msg_ids: str | Sequence[str], channel: str = "shell", timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The reply to one of ``msg_ids`` on ``channel``; other messages are dropped."""
        wanted = {msg_ids} if isinstance(msg_ids, str) else set(msg_ids)
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv()
                if msg["channel"] == channel and msg["parent_header"].get("msg_id") in wanted:
                    return msg

    async def request(
        self, msg_type: str, content: dict[str, Any], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Send a shell request and wait for its reply."""
        return await self.reply(await self.send(msg_type, content), timeout=timeout)

    async def execute_request(self, code: str, **content: Any) -> str:
        """Send an execute_request for ``code``; its msg_id."""
        request = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
            **content,
        }
        return await self.send("execute_request", request)

    async def run(
        self, code: str, timeout: float = TIMEOUT, **content: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run a cell: its execute_reply, and its IOPub messages but status and
        execute_input (streams, results, comm messages...), up to its idle status."""
        msg_id = await self.execute_request(code, **content)
        reply: dict[str, Any] | None = None
        outputs: list[dict[str, Any]] = []
        idle = False
        async with asyncio.timeout(timeout):
            while reply is None or not idle:
                msg = await self.recv()
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["channel"] == "shell":
                    reply = msg
                elif msg["channel"] == "iopub":
                    if msg["msg_type"] == "status":
                        idle = msg["content"]["execution_state"] == "idle"
                    elif msg["msg_type"] != "execute_input":
                        outputs.append(msg)
        return reply, outputs


@dataclass
class GatewayKernel:
    """A kernel on the gateway, and a client of the tests' own to run code there, in place of
    conftest's ``Kernel``: jupyter_server's ``GatewayKernelClient`` opens its WebSocket
    without the gateway's token (401). Each call opens a socket of its own and closes it, so
    that no idle client of the tests' costs the gateway anything (every IOPub message goes to
    every socket of a kernel)."""

    id: str
    gateway: KernelGateway

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[KernelSocket]:
        """A socket to the kernel's channels, straight to the gateway with its token."""
        session = uuid.uuid4().hex
        url = f"{self.gateway.ws_url}/api/kernels/{self.id}/channels?session_id={session}"
        async with connect(
            url,
            additional_headers={"Authorization": f"token {self.gateway.token}"},
            max_size=None,
            open_timeout=TIMEOUT,
            close_timeout=2,
            ping_interval=None,
        ) as ws:
            yield KernelSocket(ws, session)

    async def wait_ready(self, timeout: float = TIMEOUT) -> None:
        """Wait for a kernel_info_reply, asking again every second as jupyter_client does."""
        async with asyncio.timeout(timeout), self.connect() as socket_:
            sent: list[str] = []
            while True:
                sent.append(await socket_.send("kernel_info_request", {}))
                with contextlib.suppress(TimeoutError):
                    await socket_.reply(sent, timeout=1)
                    return

    async def execute(self, code: str) -> None:
        """Run ``code``; fail the test if it raises."""
        async with self.connect() as socket_:
            reply, _ = await socket_.run(textwrap.dedent(code))
        content = reply["content"]
        assert content["status"] == "ok", "\n".join(content.get("traceback", []))

    async def outputs(self, code: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The IOPub messages of running ``code`` (see :meth:`KernelSocket.run`)."""
        async with self.connect() as socket_:
            _, outputs = await socket_.run(textwrap.dedent(code), timeout=timeout)
        return outputs

    async def evaluate(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """The value of a JSON-able Python expression in the kernel."""
        expressions = {"value": f"__import__('json').dumps({expression})"}
        async with self.connect() as socket_:
            reply, _ = await socket_.run("", timeout, user_expressions=expressions)
        value = reply["content"]["user_expressions"]["value"]
        assert value["status"] == "ok", value
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    async def comm_ids(self, target_name: str) -> list[str]:
        """The kernel's own view of its open comms to ``target_name``."""
        async with self.connect() as socket_:
            return await self._comm_ids(socket_, target_name)

    @staticmethod
    async def _comm_ids(socket_: KernelSocket, target_name: str) -> list[str]:
        reply = await socket_.request("comm_info_request", {"target_name": target_name})
        return list(reply["content"]["comms"])

    async def opened_comm(self, target_name: str) -> str:
        """The id of the one comm to ``target_name``, once the kernel has it."""
        async with asyncio.timeout(TIMEOUT), self.connect() as socket_:
            while not (ids := await self._comm_ids(socket_, target_name)):
                await asyncio.sleep(0.01)
        [comm_id] = ids
        return comm_id

    async def start_cell(self, code: str) -> str:
        """Start running ``code``; its msg id once the kernel has begun (its execute_input).
        The socket closes then: the cell runs on, its reply goes nowhere."""
        async with self.connect() as socket_:
            msg_id = await socket_.execute_request(textwrap.dedent(code))
            async with asyncio.timeout(TIMEOUT):
                while True:
                    msg = await socket_.recv()
                    if (
                        msg["msg_type"] == "execute_input"
                        and msg["parent_header"].get("msg_id") == msg_id
                    ):
                        return msg_id


def gateway_client_config(gateway: KernelGateway) -> dict[str, Any]:
    """Config sections that make a Jupyter server use ``gateway`` for its kernels."""
    return {"GatewayClient": {"url": gateway.url, "auth_token": gateway.token}}


@contextlib.contextmanager
def _stopping(service: _Service) -> Iterator[None]:
    try:
        yield
    finally:
        service.stop()
        print(f"{service.name} log ({service.log_path}), last lines:", file=sys.stderr)
        print(service.log_tail(), file=sys.stderr)


@pytest.fixture
def gateway(
    tmp_path_factory: pytest.TempPathFactory, jp_asyncio_loop: Any
) -> Iterator[KernelGateway]:
    """A running Kernel Gateway of this test's own (it starts in about 1.5 s), free to be
    paused, killed and restarted."""
    gateway = KernelGateway(tmp_path_factory.mktemp("gateway"))
    with _stopping(gateway):
        jp_asyncio_loop.run_until_complete(gateway.start())
        yield gateway


@pytest.fixture
def gateway_server_config(
    gateway: KernelGateway, monkeypatch: pytest.MonkeyPatch, jp_asyncio_loop: Any
) -> Iterator[dict[str, Any]]:
    """``server_config`` for a test server on the gateway (see the module's docstring).

    ``GatewayClient`` is a singleton that the server app only creates if there is none: a
    new one for each test, and none left over for the next. It also writes its launch timeout
    to ``os.environ["KERNEL_LAUNCH_TIMEOUT"]`` and to a class attribute: both are put back.

    pytest-jupyter shuts the test server's kernels down in an autouse fixture, after this
    one's teardown and so after the gateway's: the kernels are shut down here instead."""
    launch_timeout = os.environ.get("KERNEL_LAUNCH_TIMEOUT")
    monkeypatch.setattr(GatewayClient, "KERNEL_LAUNCH_TIMEOUT", GatewayClient.KERNEL_LAUNCH_TIMEOUT)
    GatewayClient.clear_instance()
    yield gateway_client_config(gateway)
    app = ServerApp.instance() if ServerApp.initialized() else None  # if the test started one
    manager = getattr(app, "kernel_manager", None)
    if isinstance(manager, GatewayMappingKernelManager):
        jp_asyncio_loop.run_until_complete(_release_kernels(manager, gateway))
    GatewayClient.clear_instance()
    if launch_timeout is None:
        os.environ.pop("KERNEL_LAUNCH_TIMEOUT", None)
    else:
        os.environ["KERNEL_LAUNCH_TIMEOUT"] = launch_timeout


async def _release_kernels(manager: GatewayMappingKernelManager, gateway: KernelGateway) -> None:
    """Shut the test server's kernels down on the gateway if it is there to ask (a gateway that
    is gone would be retried for many seconds), and forget them in any case."""
    gateway.resume()
    try:
        if gateway.running:
            await asyncio.wait_for(manager.shutdown_all(), TIMEOUT)
    finally:
        for kernel_id in manager.list_kernel_ids():
            manager.remove_kernel(kernel_id)


@pytest.fixture
def gateway_kernel(
    jp_serverapp: Any, gateway: KernelGateway, jp_asyncio_loop: Any
) -> GatewayKernel:
    """A new ipykernel on the gateway, started through the test server (whose
    ``server_config`` must be ``gateway_server_config``), with the test targets registered."""

    async def start() -> GatewayKernel:
        kernel_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name="python3")
        kernel = GatewayKernel(kernel_id, gateway)
        await kernel.wait_ready()
        await kernel.execute(KERNEL_TARGETS)
        return kernel

    return jp_asyncio_loop.run_until_complete(start())  # type: ignore[no-any-return]


@pytest.fixture
def second_server(
    gateway: KernelGateway, tmp_path_factory: pytest.TempPathFactory, jp_asyncio_loop: Any
) -> Iterator[JupyterServer]:
    """A second Jupyter server with the extension, as a subprocess, on the same gateway."""
    server = JupyterServer(tmp_path_factory.mktemp("server"), gateway)
    with _stopping(server):
        jp_asyncio_loop.run_until_complete(server.start())
        yield server
