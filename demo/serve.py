"""`make demo`: a Jupyter server with jupyter_transports, a kernel running the demo, and its page.

Starts the server and a kernel that runs ``demo/demo_kernel.py`` at start-up (a shared counter
and slider, and an RPC channel), then prints the URL of the demo page (served by the extension at
``static/jupyter_transports/demo/``) and serves until Ctrl-C. Open the URL in two tabs. The demo
code is an IPython start-up file of the kernel's, so a restarted kernel runs it again and the page
comes back by itself.

The same server serves JupyterLab (the ``demo`` extra) with ``examples/kernel_side.ipynb`` in its
root, and a Jupyter session ties that notebook to the demo kernel: JupyterLab opens it on the
kernel the page talks to, not on a new one. The root is a temporary folder with a copy of the
notebook, so that what JupyterLab saves stays out of the repository.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from urllib.parse import quote, urlencode

from jupyter_server.serverapp import ServerApp

KERNEL_CODE = Path(__file__).with_name("demo_kernel.py")
WIDGETS_CODE = Path(__file__).with_name("widgets_kernel.py")  # the widgets page's dashboard
NOTEBOOK = Path(__file__).parent.parent / "examples" / "kernel_side.ipynb"  # opened in JupyterLab
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
RULE = 78  # the banner's width, in characters


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


def lab_installed() -> bool:
    """Whether JupyterLab is installed (the ``demo`` extra), to serve beside the demo page."""
    return importlib.util.find_spec("jupyterlab") is not None


def notebook_root() -> str:
    """A new folder for the server's root (JupyterLab's file browser), where
    ``open_notebook_on`` puts a copy of the notebook."""
    return tempfile.mkdtemp(prefix="jupyter_transports-demo-lab-")


async def open_notebook_on(app: ServerApp, kernel_id: str) -> str:
    """Tie the notebook to the demo kernel by a Jupyter session (what ``POST /api/sessions``
    makes); its path under the root. JupyterLab finds the session by the notebook's path and
    opens the notebook on that kernel. The notebook is copied into the root if it is not there
    (a root given with ``--ServerApp.root_dir``)."""
    path = NOTEBOOK.name
    if not Path(app.root_dir, path).exists():
        shutil.copy(NOTEBOOK, app.root_dir)
    await app.session_manager.create_session(
        path=path, name=path, type="notebook", kernel_id=kernel_id
    )
    return path


async def start_kernel(app: ServerApp, ipython_dir: str | None = None) -> str:
    """A new kernel with the demo running in it (and again after each restart); its IPython
    directory is ``startup_dir()``'s unless one made by it is given."""
    env = {**os.environ, "IPYTHONDIR": ipython_dir or startup_dir()}
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
    argv = [
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebook_root()}",  # extra's root_dir, if any, comes later and wins
    ]
    if lab_installed():  # enabled by its install already; here also where a config disables it
        argv.append("--ServerApp.jpserver_extensions=jupyterlab=True")
    if not any(arg.startswith(("--port", "--ServerApp.port")) for arg in extra):
        argv.append(f"--ServerApp.port={DEFAULT_PORT}")
    if os.geteuid() == 0:  # containers and CI machines
        argv.append("--allow-root")
    app.initialize(argv=[*argv, *extra])
    loop = app.io_loop.asyncio_loop
    kernel_id = loop.run_until_complete(start_kernel(app))
    notebook = loop.run_until_complete(open_notebook_on(app, kernel_id))
    query = urlencode({"kernel": kernel_id, "token": token})
    page = f"{app.connection_url}{DEMO_PAGE}?{query}"
    widgets = f"{app.connection_url}{WIDGETS_PAGE}?{query}"
    echo = (
        f"{app.connection_url.replace('http', 'ws', 1)}api/transports/kernels/{kernel_id}"
        f"/targets/echo?token={token}"
    )
    if lab_installed():
        lab = [
            f"and JupyterLab, with {notebook} open on this same kernel: run its cells",
            "and watch the page react:",
            "",
            f"  {app.connection_url}lab/tree/{quote(notebook)}?token={token}",
        ]
    else:
        lab = ["JupyterLab is not installed here: pip install -e '.[demo]' adds it."]
    box = [
        "Open this page in two browser tabs (or two browsers):",
        "",
        f"  {page}",
        "",
        "and the kernel's ipywidgets, live (demo/widgets_kernel.py):",
        "",
        f"  {widgets}",
        "",
        *lab,
        "",
        f"kernel {kernel_id} runs demo/demo_kernel.py: a shared counter and",
        'slider on one comm, and the RPC channel "jupyter_transports.demo".',
        'A raw WebSocket to the kernel\'s "echo" target:',
        f"  {echo}",
    ]
    print(
        "",
        "┌─ jupyter_transports demo ".ljust(RULE, "─"),
        *(f"│ {line}".rstrip() for line in box),
        "└─ Ctrl-C to stop ".ljust(RULE, "─"),
        "The docs' snippets and the CLI read these: paste this line into another terminal.",
        "",
        f"export JUPYTER_URL={app.connection_url} JUPYTER_TOKEN={token} KERNEL_ID={kernel_id}",
        "",
        sep="\n",
        flush=True,
    )
    app.start()


if __name__ == "__main__":
    main()
