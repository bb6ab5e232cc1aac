"""Gateway kernels as users run them: a real ipywidget driven through two servers at once, and
comms served by a kernel subshell while a cell runs."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from jupyter_transports.client import CommClient

from .conftest import TIMEOUT, recv
from .gateway import GatewayKernel, JupyterServer
from .test_subshells import PROBE, THREADED, busy_cell

pytest_plugins = ["tests.gateway"]


@pytest.fixture
def server_config(gateway_server_config: dict[str, Any]) -> dict[str, Any]:
    return gateway_server_config


async def next_update(client: CommClient, method: str = "update") -> tuple[dict[str, Any], Any]:
    """The widget's next message of ``method`` (ipywidgets also echoes updates back)."""
    while True:
        message = await asyncio.wait_for(client.recv(), TIMEOUT)
        if message.data.get("method") == method:
            return message.data, message.buffers


async def eventually(kernel: GatewayKernel, expression: str, expected: Any) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while (value := await kernel.evaluate(expression)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{expression} = {value!r}"
        await asyncio.sleep(0.05)


async def test_a_widget_is_driven_from_two_servers_buffers_included(
    gateway_kernel: GatewayKernel, server_url: str, token: str, second_server: JupyterServer
) -> None:
    await gateway_kernel.execute(
        "import ipywidgets\n"
        "slider = ipywidgets.IntSlider(value=1)\n"
        "image = ipywidgets.Image(value=b'', format='png')\n"
    )
    slider_id = await gateway_kernel.evaluate("slider.comm.comm_id")
    image_id = await gateway_kernel.evaluate("image.comm.comm_id")
    kernel_id = gateway_kernel.id
    on_a = await CommClient.attach(server_url, kernel_id, slider_id, token=token, session=False)
    on_b = await CommClient.attach(
        second_server.url, kernel_id, slider_id, token=second_server.token, session=False
    )
    images = [
        await CommClient.attach(server_url, kernel_id, image_id, token=token, session=False),
        await CommClient.attach(
            second_server.url, kernel_id, image_id, token=second_server.token, session=False
        ),
    ]
    try:
        # a page moves the slider through server A: the kernel's widget follows
        await on_a.send({"method": "update", "state": {"value": 7}, "buffer_paths": []})
        await eventually(gateway_kernel, "slider.value", 7)
        # the kernel moves it: both servers' sockets see it
        await gateway_kernel.execute("slider.value = 42")
        for client in (on_a, on_b):
            data, _ = await next_update(client)
            assert data["state"] == {"value": 42}

        # bytes the kernel sends on its own reach both servers as a buffer, intact
        png = os.urandom(200_000)
        await gateway_kernel.execute(f"image.value = bytes.fromhex({png.hex()!r})")
        for client in images:
            data, buffers = await next_update(client)
            assert data["buffer_paths"] == [["value"]]
            assert [bytes(buffer) for buffer in buffers] == [png]

        # and bytes from a page through server B reach the kernel's widget
        upload = os.urandom(100_000)
        state = {"method": "update", "state": {}, "buffer_paths": [["value"]]}
        await images[1].send(state, [upload])
        await eventually(gateway_kernel, "image.value.hex()", upload.hex())
    finally:
        for client in (on_a, on_b, *images):
            await asyncio.wait_for(client.close(), TIMEOUT)


@pytest.mark.parametrize("transports_config", [{"subshell_targets": [THREADED]}])
async def test_a_subshell_target_answers_while_a_cell_runs(
    gateway_kernel: GatewayKernel, server_url: str, token: str, jp_serverapp: Any
) -> None:
    await gateway_kernel.execute(PROBE)
    comm = await CommClient.open(server_url, gateway_kernel.id, THREADED, token=token)
    try:
        assert await recv(comm) == {"opened": True}
        await gateway_kernel.start_cell(busy_cell(TIMEOUT * 10))
        await comm.send("are you busy?")
        assert await recv(comm) == {"running": True}  # answered from the subshell, mid-cell
    finally:
        await jp_serverapp.kernel_manager.interrupt_kernel(gateway_kernel.id)
        await asyncio.wait_for(comm.close(), TIMEOUT)
