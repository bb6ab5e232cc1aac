"""JupyterLab and the demo page on one kernel, as ``make demo`` serves them (``demo/serve.py``).

The server has the extension and JupyterLab; the demo kernel is started and the notebook tied to
it by serve.py's own functions. In Chromium, JupyterLab opens ``kernel_side.ipynb`` on the demo
kernel (no second kernel), its cells change what the demo page shows, and a click in the page is
what the notebook reads next: the bridge and JupyterLab share the kernel without disturbing each
other.

Skipped without Playwright for Python, ``chromium`` or JupyterLab (the ``demo`` extra, which
``make test`` installs).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from traitlets.config import Config

from . import test_browser
from .test_browser import DEMO_PAGE, chromium, live, new_page, text_becomes
from .test_snippets import load_demo_server

pytestmark = [
    *test_browser.pytestmark,
    pytest.mark.skipif(
        importlib.util.find_spec("jupyterlab") is None, reason="JupyterLab is not installed"
    ),
]

IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"  # the kernel, as JupyterLab shows it
INSERT_BELOW = ".jp-NotebookPanel-toolbar [data-command='notebook:insert-cell-below']"
# What JupyterLab logs when it meets a comm it has no target for (and closes it in the kernel)
LAB_COMM_ERRORS = re.compile(r"Exception opening new comm|Comm not found")


@pytest.fixture
def jp_server_config() -> Config:
    """The demo's server: the extension and JupyterLab. Not jupyter_lsp, which JupyterLab's
    install enables too: it fails to import under this suite's warnings-as-errors (a traitlets
    deprecation), and JupyterLab does without it."""
    extensions = {"jupyter_transports": True, "jupyterlab": True}
    return Config({"ServerApp": {"jpserver_extensions": extensions}})


@pytest.fixture
def demo(jp_serverapp: Any, jp_asyncio_loop: Any) -> Iterator[tuple[str, str]]:
    """The demo kernel, and the notebook tied to it, as ``make demo`` makes them: (kernel id,
    the notebook's path under the server's root)."""
    serve = load_demo_server()
    ipython_dir = serve.startup_dir()
    kernel_id = jp_asyncio_loop.run_until_complete(serve.start_kernel(jp_serverapp, ipython_dir))
    path = jp_asyncio_loop.run_until_complete(serve.open_notebook_on(jp_serverapp, kernel_id))
    yield kernel_id, path
    shutil.rmtree(ipython_dir, ignore_errors=True)


async def open_lab(context: Any, server_url: str, token: str, path: str) -> Any:
    """JupyterLab's tab, once its notebook is on an idle kernel."""
    lab = await new_page(context, f"{server_url}lab/tree/{quote(path)}?token={token}")
    await lab.wait_for_selector(IDLE)
    return lab


async def run_cell(lab: Any, containing: str, prints: str) -> str:
    """Run the notebook's code cell that contains ``containing``; its output, once it has
    ``prints``."""
    cell = lab.locator(".jp-Notebook .jp-CodeCell", has_text=containing)
    await cell.locator(".cm-content").click()
    await lab.keyboard.press("Control+Enter")  # run it, stay on it
    output = cell.locator(".jp-OutputArea-output", has_text=prints)
    await output.wait_for()
    return await output.inner_text()


async def run_new_cell(lab: Any, code: str, prints: str) -> str:
    """Add a code cell below the active one, run ``code`` in it; its output, once it has
    ``prints``."""
    cells = lab.locator(".jp-Notebook .jp-Cell")
    count = await cells.count()
    await lab.click(INSERT_BELOW)
    await lab.wait_for_function(
        "count => document.querySelectorAll('.jp-Notebook .jp-Cell').length === count + 1",
        arg=count,
    )
    cell = lab.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    await cell.locator(".cm-content").click()
    await lab.keyboard.insert_text(code)
    await lab.keyboard.press("Control+Enter")
    output = cell.locator(".jp-OutputArea-output", has_text=prints)
    await output.wait_for()
    return await output.inner_text()


async def test_the_notebook_and_the_page_share_the_demo_kernel(
    jp_serverapp: Any, server_url: str, token: str, demo: tuple[str, str]
) -> None:
    kernel_id, path = demo
    demo_url = f"{server_url}{DEMO_PAGE}?{urlencode({'kernel': kernel_id, 'token': token})}"
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await new_page(context, demo_url)
        await live(page)
        await text_becomes(page, "counter", "0")

        # JupyterLab opens the notebook on the demo kernel: no kernel of its own
        lab = await open_lab(context, server_url, token, path)
        assert jp_serverapp.kernel_manager.list_kernel_ids() == [kernel_id]
        [session] = await jp_serverapp.session_manager.list_sessions()
        assert (session["path"], session["kernel"]["id"]) == (path, kernel_id)

        # the notebook's cells call the page (a toast) and change what it shows (the counter)
        assert "1 tab(s) answered" in await run_cell(lab, 'channel.call("toast"', "answered")
        await page.wait_for_selector(".toast:has-text('Hello from the notebook')")
        assert "counter 10" in await run_cell(lab, 'shared.state["counter"] += 10', "counter")
        await text_becomes(page, "counter", "10")

        # a click in the page is what the kernel has, as the notebook reads it next
        await page.click("#increment")
        await text_becomes(page, "counter", "11")
        state = await run_new_cell(lab, 'print("state", shared.state)', "state")
        assert "'counter': 11" in state, state

        # and neither disturbed the other: the page is still live, the notebook's kernel idle
        assert await page.get_attribute("#status", "data-state") == "open"
        await lab.wait_for_selector(IDLE)
        assert not [text for text in lab.console_messages if LAB_COMM_ERRORS.search(text)]


async def test_a_comm_the_notebook_opens_stays_open(
    server_url: str, token: str, demo: tuple[str, str]
) -> None:
    _, path = demo
    async with chromium() as browser:
        lab = await open_lab(await browser.new_context(), server_url, token, path)
        await run_cell(lab, "from jupyter_transports.shared import SharedComm", "attach to comm")
        # JupyterLab sends its comm_close, if any, as it handles the comm_open, before it shows
        # the cell's output: on its socket, ahead of the next cell's execute_request
        alive = await run_new_cell(
            lab,
            "from comm import get_comm_manager\n"
            "print('open:', get_comm_manager().get_comm(news.comm_id) is not None)",
            "open:",
        )
        assert "open: True" in alive, lab.console_messages
