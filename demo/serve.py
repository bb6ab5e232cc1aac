"""`make demo`: a Jupyter server with jupyter_transports, a kernel running the demo, and its page.

Starts the server and a kernel that runs ``demo/demo_kernel.py`` at start-up (a shared counter
and slider, and an RPC channel), then prints the URL of the demo page (served by the extension at
``static/jupyter_transports/demo/``) and serves until Ctrl-C. Open the URL in two tabs. The demo
code is an IPython start-up file of the kernel's, so a restarted kernel runs it again and the page
comes back by itself.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import textwrap
from pathlib import Path
from urllib.parse import urlencode

from jupyter_server.serverapp import ServerApp

KERNEL_CODE = Path(__file__).with_name("demo_kernel.py")
WIDGETS_CODE = Path(__file__).with_name("widgets_kernel.py")  # the widgets page's dashboard
# The README's example target, for raw WebSockets: it greets, then echoes every message.
ECHO_CODE = textwrap.dedent(
    """
    from comm import get_comm_manager

    def echo(comm, open_msg):
        who = open_msg["metadata"]["transports"]
        opened_with = open_msg["content"]["data"]
        comm.send({"hello": who["user"], "you_are": who["client"], "data": opened_with})
        comm.on_msg(lambda msg: comm.send(msg["content"]["data"], buffers=msg["buffers"]))

    get_comm_manager().register_target("echo", echo)
    """
)
DEMO_PAGE = "static/jupyter_transports/demo/index.html"
WIDGETS_PAGE = "static/jupyter_transports/demo/widgets.html"
DEFAULT_PORT = 8888
TIMEOUT = 60  # seconds for the kernel to start and run the demo code


def startup_dir() -> str:
    """An IPython directory whose start-up file runs the demo in every kernel that uses it."""
    ipython_dir = tempfile.mkdtemp(prefix="jupyter_transports-demo-")
    startup = Path(ipython_dir, "profile_default", "startup")
    startup.mkdir(parents=True)
    run_demo = "".join(
        f"exec(compile(open({str(code)!r}).read(), {code.name!r}, 'exec'))\n"
        for code in (KERNEL_CODE, WIDGETS_CODE)
    )
    (startup / "00-demo.py").write_text(run_demo + ECHO_CODE)
    return ipython_dir


async def start_kernel(app: ServerApp) -> str:
    """A new kernel with the demo running in it (and again after each restart)."""
    env = {**os.environ, "IPYTHONDIR": startup_dir()}
    kernel_id = await app.kernel_manager.start_kernel(kernel_name="python3", env=env)
    client = app.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=TIMEOUT)
        reply = await client.execute_interactive(
            "channel, shared, dashboard", timeout=TIMEOUT, output_hook=lambda msg: None
        )
        if reply["content"]["status"] != "ok":
            sys.exit("the demo failed to start in the kernel: see the kernel's log above")
    finally:
        client.stop_channels()
    return kernel_id


def main() -> None:
    token = secrets.token_hex(16)
    app = ServerApp.instance()
    extra = sys.argv[1:]  # e.g. --ServerApp.port=9999
    argv = ["--no-browser", f"--IdentityProvider.token={token}"]
    if not any(arg.startswith(("--port", "--ServerApp.port")) for arg in extra):
        argv.append(f"--ServerApp.port={DEFAULT_PORT}")
    if os.geteuid() == 0:  # containers and CI machines
        argv.append("--allow-root")
    app.initialize(argv=[*argv, *extra])
    kernel_id = app.io_loop.asyncio_loop.run_until_complete(start_kernel(app))
    query = urlencode({"kernel": kernel_id, "token": token})
    page = f"{app.connection_url}{DEMO_PAGE}?{query}"
    widgets = f"{app.connection_url}{WIDGETS_PAGE}?{query}"
    echo = (
        f"{app.connection_url.replace('http', 'ws', 1)}api/transports/kernels/{kernel_id}"
        f"/targets/echo?token={token}"
    )
    print(
        textwrap.dedent(
            f"""
            ┌─ jupyter_transports demo ─────────────────────────────────────────────
            │ Open this page in two browser tabs (or two browsers):
            │
            │   {page}
            │
            │ and the kernel's ipywidgets, live (demo/widgets_kernel.py):
            │
            │   {widgets}
            │
            │ kernel {kernel_id} runs demo/demo_kernel.py: a shared counter and
            │ slider on one comm, and the RPC channel "jupyter_transports.demo".
            │ Jupyter itself: {app.connection_url}?token={token}
            │ A raw WebSocket to the kernel's "echo" target:
            │   {echo}
            └─ Ctrl-C to stop ───────────────────────────────────────────────────────
            """
        ),
        flush=True,
    )
    app.start()


if __name__ == "__main__":
    main()
