"""`make demo`: a Jupyter server with jupyter_transports and a kernel hosting an example target.

Prints the URL and token to connect with, then serves until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import textwrap

from jupyter_server.serverapp import ServerApp

# Runs in the kernel: a comm target named "echo" that answers every message with itself,
# and says who sent it (the bridge adds metadata["transports"] to every message).
KERNEL_CODE = textwrap.dedent(
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


async def start_kernel(app: ServerApp) -> str:
    kernel_id = await app.kernel_manager.start_kernel(kernel_name="python3")
    client = app.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        reply = await client.execute_interactive(KERNEL_CODE, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
    return kernel_id


def main() -> None:
    token = secrets.token_hex(16)
    app = ServerApp.instance()
    argv = ["--no-browser", f"--IdentityProvider.token={token}", "--ServerApp.port=8888"]
    if os.geteuid() == 0:  # containers and CI machines
        argv.append("--allow-root")
    app.initialize(argv=argv)
    kernel_id = app.io_loop.asyncio_loop.run_until_complete(start_kernel(app))
    ws = app.connection_url.replace("http", "ws", 1)
    print(
        textwrap.dedent(
            f"""
            jupyter_transports demo
              server:  {app.connection_url}?token={token}
              token:   {token}
              kernel:  {kernel_id}, with a comm target "echo"
              connect: {ws}api/transports/kernels/{kernel_id}/targets/echo?token={token}
            """
        ),
        flush=True,
    )
    app.start()


if __name__ == "__main__":
    main()
