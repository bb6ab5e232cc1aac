"""The gateway test helpers work: a real Kernel Gateway, kernels on it through stock
jupyter_server, a client of the tests' own to its kernels, a second server, faults."""

from __future__ import annotations

import asyncio
import sys
import urllib.error
from typing import Any

import psutil
import pytest
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayMappingKernelManager

from .gateway import GatewayKernel, JupyterServer, KernelGateway, cpu_seconds

pytest_plugins = ["tests.gateway"]

BIG_OUTPUT = 4_000_000  # bytes of one print: over the IOPub data rate limit (1 MB/s over 3 s)


@pytest.fixture
def server_config(gateway_server_config: dict[str, Any]) -> dict[str, Any]:
    return gateway_server_config


async def start_kernel(gateway: KernelGateway) -> GatewayKernel:
    """A kernel started on the gateway by its own REST API, no Jupyter server involved."""
    model = await gateway.api("POST", "api/kernels", {"name": "python3"})
    kernel = GatewayKernel(model["id"], gateway)
    await kernel.wait_ready()
    return kernel


async def test_gateway_answers_with_its_token_only(gateway: KernelGateway) -> None:
    specs = await gateway.api("GET", "api/kernelspecs")
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == sys.executable
    assert await gateway.api("GET", "api/kernels") == []  # listing is on
    without_token: list[dict[str, Any]] = [{"auth": False}, {"token": "wrong"}]
    for kwargs in without_token:
        with pytest.raises(urllib.error.HTTPError) as info:
            await gateway.api("GET", "api/kernelspecs", **kwargs)
        assert info.value.code == 401


async def test_server_kernels_live_on_the_gateway(
    jp_serverapp: Any, gateway: KernelGateway
) -> None:
    assert isinstance(jp_serverapp.kernel_manager, GatewayMappingKernelManager)
    assert jp_serverapp.gateway_config is GatewayClient.instance()
    assert GatewayClient.instance().url == gateway.url
    kernel_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name="python3")
    assert [kernel["id"] for kernel in await gateway.api("GET", "api/kernels")] == [kernel_id]
    process = gateway.kernel_process(kernel_id)
    assert process.cmdline()[0] == sys.executable
    assert process.ppid() == gateway.pid
    assert cpu_seconds(process) > 0
    assert gateway.cpu_seconds() > 0


async def test_gateway_kernel_runs_code_with_the_test_targets(
    jp_serverapp: Any, gateway: KernelGateway, gateway_kernel: GatewayKernel
) -> None:
    # a new GatewayClient for this test's gateway, not the previous test's
    assert jp_serverapp.gateway_config.url == gateway.url
    assert await gateway_kernel.evaluate("1 + 1") == 2
    # the test kernelspec's python; HOME passed on by the gateway's env_process_whitelist
    assert await gateway_kernel.evaluate("__import__('sys').executable") == sys.executable
    home = await gateway_kernel.evaluate("__import__('os').environ.get('HOME')")
    assert home == str(gateway.workdir / "home")
    targets = await gateway_kernel.evaluate("sorted(get_comm_manager().targets)")
    assert {"echo", "whoami", "flood"} <= set(targets)
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        await gateway_kernel.execute("1 / 0")
    await gateway_kernel.execute("widget = create_comm(target_name='test.widget', data={})")
    comm_id = await gateway_kernel.opened_comm("test.widget")
    assert comm_id == await gateway_kernel.evaluate("widget.comm_id")
    assert await gateway_kernel.comm_ids("echo") == []
    assert await gateway_kernel.start_cell("import time; time.sleep(0.2)")
    assert await gateway_kernel.evaluate("'after the cell'") == "after the cell"


async def test_iopub_rate_limit_is_off(gateway_kernel: GatewayKernel) -> None:
    outputs = await gateway_kernel.outputs(f"print('x' * {BIG_OUTPUT})")
    streams = [msg["content"] for msg in outputs if msg["msg_type"] == "stream"]
    assert sum(len(s["text"]) for s in streams if s["name"] == "stdout") == BIG_OUTPUT + 1
    assert not [s for s in streams if s["name"] == "stderr"]


async def test_iopub_rate_limit_on_when_asked(tmp_path: Any) -> None:
    """The test that the trait name takes effect at all: the gateway's own default."""
    gateway = KernelGateway(tmp_path, options={"ZMQChannelsWebsocketConnection.limit_rate": True})
    try:
        await gateway.start()
        kernel = await start_kernel(gateway)
        outputs = await kernel.outputs(f"print('x' * {BIG_OUTPUT})")
    finally:
        gateway.stop()
    [stream] = [msg["content"] for msg in outputs if msg["msg_type"] == "stream"]
    assert stream["name"] == "stderr"
    assert "IOPub data rate exceeded" in stream["text"]


async def test_second_server_sees_the_gateway(
    second_server: JupyterServer, gateway: KernelGateway
) -> None:
    assert "started" in await second_server.api("GET", "api/status")
    specs = await second_server.api("GET", "api/kernelspecs")
    assert specs["kernelspecs"]["python3"]["spec"]["display_name"] == "Python 3 (tests)"
    assert second_server.url.endswith("/")
    assert "jupyter_transports | extension was successfully loaded" in second_server.log_text()
    assert "kernelspecs" in gateway.log_text()  # the server asked the gateway


async def test_pause_and_resume(gateway: KernelGateway) -> None:
    kernel = await start_kernel(gateway)
    gateway.pause()
    assert psutil.Process(gateway.pid).status() == psutil.STATUS_STOPPED
    assert gateway.kernel_process(kernel.id).status() != psutil.STATUS_STOPPED
    with pytest.raises(TimeoutError):
        await gateway.api("GET", "api/kernelspecs", timeout=0.5)
    gateway.resume()
    assert await kernel.evaluate("1 + 1") == 2


async def test_kill_and_restart_on_the_same_port(gateway: KernelGateway) -> None:
    kernel = await start_kernel(gateway)
    kernel_process = gateway.kernel_process(kernel.id)
    port = gateway.port
    gateway.kill()
    assert not gateway.running
    with pytest.raises(urllib.error.URLError):  # refused
        await gateway.api("GET", "api/kernelspecs", timeout=2)
    await gateway.restart()
    assert gateway.port == port
    assert await gateway.api("GET", "api/kernels") == []  # the new process knows no kernel
    # the old kernel saw its parent die and went away by itself
    await asyncio.to_thread(kernel_process.wait, 5)
