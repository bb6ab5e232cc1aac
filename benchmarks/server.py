"""A real Jupyter server (with the extension) and one ipykernel, as subprocesses on loopback.

The server runs in its own process so that its CPU time and memory can be read apart from the
benchmark's clients (``psutil``), and the kernel is the server's child as in real use.

For debugging a run: ``BENCH_LOG_LEVEL=DEBUG`` sets the server's log level, and
``BENCH_KEEP_LOG=/some/file`` keeps its log there when it stops.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.asynchronous.client import AsyncKernelClient

START_TIMEOUT = 60.0  # seconds for the server, then the kernel, to come up
EXECUTE_TIMEOUT = 120.0
ECHO = "echo"
ECHO_SUBSHELL = "echo_subshell"  # the same handler, opted in to a kernel subshell
FAN_TARGET = "bench.fan"
RPC_TARGET = "bench.rpc"  # an RPC channel that batches (the default)
RPC_TARGET_SINGLE = "bench.rpc.single"  # the same, one comm message per call and per answer
NODELAY_PARAM = "nodelay"
LOG_LINES = 20  # of the server's error log, printed when it stops

# Runs in the kernel: echo targets (no greeting, so every path sees only its echoes), a comm
# opened by the kernel that bursts messages to every socket attached to it, and RPC channels.
KERNEL_CODE = textwrap.dedent(
    f"""
    import time
    from comm import create_comm, get_comm_manager

    def _echo(comm, open_msg):
        comm.on_msg(lambda msg: comm.send(msg["content"]["data"], buffers=msg["buffers"]))

    for _name in ({ECHO!r}, {ECHO_SUBSHELL!r}):
        get_comm_manager().register_target(_name, _echo)

    fan = create_comm(target_name={FAN_TARGET!r}, data={{}})

    from jupyter_transports.kernel import Channel

    class _Calc:
        def add(self, a, b):
            return a + b

    rpc_channels = [
        Channel({RPC_TARGET!r}, _Calc()),
        Channel({RPC_TARGET_SINGLE!r}, _Calc(), batch=False),
    ]

    def burst(count, size):
        pad = "x" * size
        for i in range(count):
            fan.send({{"i": i, "pad": pad}})
    """
)


# Anchor "B nodelay": jupyter_server's own kernel socket with TCP_NODELAY, which Tornado leaves
# off, on the connections that ask for it with ?nodelay=1 (loaded into the server's config file).
NODELAY_PATCH = textwrap.dedent(
    f"""
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

    _open = KernelWebsocketHandler.open

    def _open_nodelay(self, *args, **kwargs):
        if self.get_argument({NODELAY_PARAM!r}, None):
            self.set_nodelay(True)
        return _open(self, *args, **kwargs)

    KernelWebsocketHandler.open = _open_nodelay
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of one process, in seconds: the sum of its threads' run times in nanoseconds
    where Linux's schedstat offers them (psutil's user + system times count 10 ms ticks)."""
    tasks = Path(f"/proc/{process.pid}/task")
    if not tasks.is_dir():
        times = process.cpu_times()
        return float(times.user + times.system)
    total = 0
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@dataclass
class Server:
    """The server subprocess, its kernel, and a plain kernel client to run code there."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str]
    kernel_id: str = ""
    connection_file: str = ""
    code_client: AsyncKernelClient | None = None
    server_ps: psutil.Process = field(init=False)
    kernel_ps: psutil.Process | None = None

    def __post_init__(self) -> None:
        self.server_ps = psutil.Process(self.process.pid)

    @classmethod
    async def start(
        cls,
        config: dict[str, Any],
        source: str | None = None,
        kernel_argv: list[str] | None = None,
    ) -> Server:
        """Start ``jupyter server`` with ``config`` (a config-file dict) and one kernel; with
        ``source``, the extension is imported from that checkout instead (``--before``); with
        ``kernel_argv``, the kernel is started by that command line (a kernelspec's ``argv``)
        instead of ipykernel's."""
        workdir = tempfile.TemporaryDirectory(prefix="transports-bench-")
        root = Path(workdir.name)
        token, port = secrets.token_hex(16), _free_port()
        config = {
            **config,
            "ServerApp": {
                "jpserver_extensions": {"jupyter_transports": True},
                "port": port,
                "ip": "127.0.0.1",
                "open_browser": False,
                "root_dir": str(root),
                **config.get("ServerApp", {}),
            },
            "IdentityProvider": {"token": token},
            # Once B's last /channels socket closes, jupyter_server would buffer every later
            # kernel message (unbounded) for that session's return: CPU and memory charged to
            # whatever path is measured next.
            "MappingKernelManager": {
                "buffer_offline_messages": False,
                **config.get("MappingKernelManager", {}),
            },
        }
        config_file = root / "jupyter_server_config.py"
        config_file.write_text(
            f"from traitlets.config import Config\nc.merge(Config({config!r}))\n{NODELAY_PATCH}"
        )
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
        kernel_name = "python3"
        if kernel_argv is not None:
            kernel_name = "bench"
            spec = root / "share" / "kernels" / kernel_name
            spec.mkdir(parents=True)
            (spec / "kernel.json").write_text(
                json.dumps({"argv": kernel_argv, "display_name": "bench", "language": "python"})
            )
            env["JUPYTER_PATH"] = os.pathsep.join(
                filter(None, [str(root / "share"), env.get("JUPYTER_PATH")])
            )
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "jupyter_server", f"--config={config_file}"]
        argv += [f"--ServerApp.log_level={os.environ.get('BENCH_LOG_LEVEL', 'WARN')}"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        log = open(root / "server.log", "wb")  # noqa: SIM115 (closed with the directory)
        # in its own directory: python -m puts the working directory first on sys.path, which
        # would shadow ``source`` from a checkout's root
        process = subprocess.Popen(argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        server = cls(f"http://127.0.0.1:{port}/", token, process, workdir)
        try:
            await server._wait_ready()
            await server._start_kernel(root / "runtime", kernel_name)
        except BaseException:
            server.stop()
            raise
        return server

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=START_TIMEOUT) as response:
            text = response.read()
        return json.loads(text) if text else None

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.workdir.name}/server.log")
            try:
                await asyncio.to_thread(self._api, "GET", "api/status")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _start_kernel(self, runtime: Path, name: str) -> None:
        model = await asyncio.to_thread(self._api, "POST", "api/kernels", {"name": name})
        self.kernel_id = model["id"]
        self.connection_file = str(runtime / f"kernel-{self.kernel_id}.json")
        client = AsyncKernelClient(connection_file=self.connection_file)
        client.load_connection_file()
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self.code_client = client
        await self.execute(KERNEL_CODE)
        for child in self.server_ps.children(recursive=True):
            if any("ipykernel" in part for part in child.cmdline()):
                self.kernel_ps = child

    def send_execute(self, code: str) -> str:
        """Start running ``code`` in the kernel; its msg_id."""
        assert self.code_client is not None
        return self.code_client.execute(code, store_history=False)

    async def wait_execute(self, msg_id: str) -> None:
        """Wait for the reply of :meth:`send_execute`'s request; fail if the code raised."""
        assert self.code_client is not None
        while True:
            reply = await self.code_client.get_shell_msg(timeout=EXECUTE_TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                content = reply["content"]
                if content["status"] != "ok":
                    raise RuntimeError("\n".join(content.get("traceback", [])))
                return

    async def execute(self, code: str) -> None:
        await self.wait_execute(self.send_execute(code))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JSON-able expression in the kernel."""
        assert self.code_client is not None
        msg_id = self.code_client.execute(
            "",
            store_history=False,
            user_expressions={"v": f"__import__('json').dumps({expression})"},
        )
        while True:
            reply = await self.code_client.get_shell_msg(timeout=EXECUTE_TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                value = reply["content"]["user_expressions"]["v"]
                return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    def transports_status(self) -> dict[str, Any]:
        """The bridge's status of this server's kernel (``GET /api/transports/status``); empty
        until the kernel is first bridged."""
        kernels = self._api("GET", "api/transports/status")["kernels"]
        return dict(kernels.get(self.kernel_id, {}))

    def server_cpu(self) -> float:
        return cpu_seconds(self.server_ps)

    def kernel_cpu(self) -> float:
        return cpu_seconds(self.kernel_ps) if self.kernel_ps is not None else float("nan")

    def server_rss(self) -> int:
        return int(self.server_ps.memory_info().rss)

    def stop(self) -> None:
        if self.code_client is not None:
            self.code_client.stop_channels()
        if self.kernel_id:
            with contextlib.suppress(OSError):
                self._api("DELETE", f"api/kernels/{self.kernel_id}")
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log = Path(self.workdir.name) / "server.log"
        if os.environ.get("BENCH_KEEP_LOG"):
            shutil.copy(log, os.environ["BENCH_KEEP_LOG"])
        errors = [
            line for line in log.read_text(errors="replace").splitlines() if " E " in line[:40]
        ]
        if errors:
            print("server errors:", *errors[-LOG_LINES:], sep="\n", file=sys.stderr)
        self.workdir.cleanup()
