"""``jupyter transports``: a JupyterApp with one subcommand per job, as ``jupyter kernelspec``.

Each subcommand is an app of its own: its options are traits (so ``--url`` is
``--TransportsCommand.url``), its positional arguments ``extra_args``, and :meth:`run` does the
job over the server's REST API or a comm's WebSocket and returns the exit status. Failures the
user can expect print one line (:mod:`.errors`); no traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Generator
from typing import Any, ClassVar

from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Float, Int, Unicode

from .. import __version__
from .arguments import check_arguments, parse_data, parse_open_data
from .errors import EXIT_INTERRUPTED, CliError
from .output import Printer, attached_event, json_text, kernels_text, opened_event
from .server import ServerAPI, find_server
from .stream import STDIN, CommStream, StdinLines

PROGRAM = "jupyter transports"
COMMON_ALIASES = {
    "log-level": base_aliases["log-level"],
    "url": "TransportsCommand.url",
    "token": "TransportsCommand.token",
}
COMMON_FLAGS = {
    "debug": base_flags["debug"],
    "json": (
        {"TransportsCommand": {"json_output": True}},
        "Print JSON: one document (list, send), or one event per line (tail, open).",
    ),
}

OPEN_FLAGS = {
    **COMMON_FLAGS,
    "stdin": ({"OpenCommand": {"stdin": True}}, "Send lines of stdin, even a terminal's."),
    "no-stdin": ({"OpenCommand": {"stdin": False}}, "Do not read stdin."),
}
NO_OPTIONS: dict[str, Any] = {}


def options_of(command: str, *traits: str) -> dict[str, str]:
    """The common options, and ``--name`` for each of ``command``'s ``traits``."""
    return {**COMMON_ALIASES, **{trait: f"{command}.{trait}" for trait in traits}}


def subcommands_of(*commands: type[TransportsCommand]) -> dict[str, tuple[type, str]]:
    """Each command by its word, with its summary."""
    return {
        word_of(command.name): (command, (command.__doc__ or "").strip()) for command in commands
    }


def word_of(name: str) -> str:
    """The subcommand's word in its app's name: ``list`` for ``jupyter-transports-list``."""
    return name.rsplit("-", 1)[-1]


class TransportsCommand(JupyterApp):
    """What every subcommand shares: which server, how to print, failures as exit statuses."""

    version = __version__
    arguments: ClassVar[tuple[str, ...]] = ()  # the names of the positional arguments
    aliases = COMMON_ALIASES
    flags = COMMON_FLAGS

    url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The Jupyter server's base URL (e.g. http://localhost:8888/; a ?token= in it is
        used). Default: the only server running, from the runtime files `jupyter server list`
        reads.""",
    )
    token = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The server's token. Default: the token in --url, else the one in the server's
        runtime file, else $JUPYTER_TOKEN (which, unlike this option, `ps` does not show).""",
    )
    json_output = Bool(
        False,
        config=True,
        help="Print machine-readable JSON (one document for list and send, lines for tail/open).",
    )

    @property
    def usage(self) -> str:
        return " ".join([PROGRAM, word_of(self.name), *self.arguments, "[options]"])

    def emit_description(self) -> Generator[str, None, None]:
        yield f"usage: {self.usage}"
        yield ""
        yield from super().emit_description()

    def start(self) -> None:
        printer = Printer(self.json_output)
        try:
            check_arguments(self.arguments, self.extra_args, self.usage)
            status = asyncio.run(self._run(printer))
        except CliError as e:
            printer.error(str(e))
            status = e.status
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
        self.exit(status)

    async def _run(self, printer: Printer) -> int:
        server = find_server(self.url, self.token, self.runtime_dir)
        api = ServerAPI(server, self.log)
        try:
            return await self.run(api, printer, *self.extra_args)
        finally:
            api.close()

    async def run(self, api: ServerAPI, printer: Printer, *arguments: str) -> int:
        """Do the job; the exit status."""
        raise NotImplementedError


class ListCommand(TransportsCommand):
    """List the server's kernels, and each one's comms with their targets and clients."""

    name = "jupyter-transports-list"
    description = """List the server's kernels, and each one's comms with their targets and
    attached clients (given kernel ids or prefixes: only those kernels)."""
    examples = "jupyter transports list\njupyter transports list 5b7f --json"
    arguments = ("KERNEL_ID...",)

    async def run(self, api: ServerAPI, printer: Printer, *kernel_ids: str) -> int:
        kernels = await api.kernels()
        if kernel_ids:
            wanted = {await api.kernel_id(given) for given in kernel_ids}
            kernels = [kernel for kernel in kernels if kernel["id"] in wanted]
        listings = await asyncio.gather(*(self.comms(api, kernel) for kernel in kernels))
        status = await api.status()  # after the listings, which bridge every kernel listed
        for kernel, (comms, error) in zip(kernels, listings, strict=True):
            kernel["transports"] = status.get(kernel["id"])
            kernel["comms"] = comms
            if error is not None:
                kernel["error"] = error
        printer.result(
            {"url": api.server.url, "kernels": kernels}, kernels_text(api.server.url, kernels)
        )
        return 0

    @staticmethod
    async def comms(
        api: ServerAPI, kernel: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The kernel's comms, or why it did not list them (a busy kernel answers 504)."""
        try:
            return await api.comms(kernel["id"]), None
        except CliError as e:
            return None, str(e)


class SendCommand(TransportsCommand):
    """Send one message to a comm (REST); print the kernel's replies to it."""

    name = "jupyter-transports-send"
    description = """Send one message to a comm over REST and print the kernel's replies to it,
    one per line. DATA is JSON if it parses as JSON, else a string; - reads it from stdin."""
    examples = """jupyter transports send 5b7f 9b2e '{"hello": "kernel"}'
jupyter transports send 5b7f 9b2e ping --wait 10 --count 3"""
    arguments = ("KERNEL_ID", "COMM_ID", "DATA")
    aliases = options_of("SendCommand", "wait", "count")

    wait = Float(5.0, config=True, help="Seconds to wait for replies.")
    count = Int(1, min=0, config=True, help="Replies to wait for (0: send without waiting).")

    async def run(self, api: ServerAPI, printer: Printer, *arguments: str) -> int:
        given_kernel, given_comm, text = arguments
        data = parse_data(sys.stdin.read().rstrip("\r\n") if text == "-" else text)
        kernel_id = await api.kernel_id(given_kernel)
        comm_id, replies = await api.on_comm(
            kernel_id,
            given_comm,
            lambda comm_id: api.send(kernel_id, comm_id, data, self.wait, self.count),
        )
        document = {"kernel_id": kernel_id, "comm_id": comm_id, "replies": replies}
        printer.result(document, "\n".join(map(json_text, replies)) if replies else None)
        if not replies and self.count:
            printer.notice(f"no reply within {self.wait:g} s")
        return 0


class TailCommand(TransportsCommand):
    """Attach to a comm and print its messages as they arrive, until it closes or Ctrl-C."""

    name = "jupyter-transports-tail"
    description = """Attach to an existing comm (over a durable session) and print each message
    the kernel sends on it, one per line, until the comm closes or Ctrl-C. Exit status 0 when
    it closes with 1000 or Ctrl-C ends it, 2 for another close code, 1 for an error."""
    examples = (
        "jupyter transports tail 5b7f 9b2e\njupyter transports tail 5b7f 9b2e --json --count 1"
    )
    arguments = ("KERNEL_ID", "COMM_ID")
    aliases = options_of("TailCommand", "count")

    count = Int(None, allow_none=True, min=1, config=True, help="Stop after this many messages.")

    async def run(self, api: ServerAPI, printer: Printer, *arguments: str) -> int:
        given_kernel, given_comm = arguments
        kernel_id = await api.kernel_id(given_kernel)
        stream = CommStream(printer, owns_comm=False, count=self.count)
        comm_id, _ = await api.on_comm(
            kernel_id, given_comm, lambda comm_id: stream.attach(api.server, kernel_id, comm_id)
        )
        return await stream.run(attached_event(kernel_id, comm_id))


class OpenCommand(TransportsCommand):
    """Open a new comm to a target; print its id and messages; send it lines of stdin."""

    name = "jupyter-transports-open"
    description = """Open a new comm to a target of the kernel (over a durable session), print
    its id and then each message the kernel sends on it, one per line. Lines of stdin (read
    when stdin is not a terminal, or with --stdin) are sent to it: JSON if they parse, else
    strings; blank lines are skipped. Once stdin ends, it waits --wait seconds for answers and
    closes the comm; Ctrl-C closes it at any time (close code 1000)."""
    examples = """jupyter transports open 5b7f echo --data '{"mode": "fast"}'
printf '1\\n2\\n' | jupyter transports open 5b7f echo --json"""
    arguments = ("KERNEL_ID", "TARGET")
    aliases = options_of("OpenCommand", "data", "wait", "count")
    flags = OPEN_FLAGS

    data = Unicode(None, allow_none=True, config=True, help="The comm_open's data: a JSON object.")
    wait = Float(1.0, config=True, help="Seconds to keep receiving after stdin ends.")
    count = Int(None, allow_none=True, min=1, config=True, help="Close after this many messages.")
    stdin = Bool(
        None,
        allow_none=True,
        config=True,
        help="Send lines of stdin to the comm. Default: when stdin is not a terminal.",
    )

    async def run(self, api: ServerAPI, printer: Printer, *arguments: str) -> int:
        given_kernel, target_name = arguments
        data = None if self.data is None else parse_open_data(self.data)
        kernel_id = await api.kernel_id(given_kernel)
        stream = CommStream(printer, owns_comm=True, count=self.count)
        comm = await stream.open(api.server, kernel_id, target_name, data)
        reads_stdin = self.stdin if self.stdin is not None else not os.isatty(STDIN)
        opened = opened_event(kernel_id, comm.comm_id, target_name)
        return await stream.run(opened, StdinLines() if reads_stdin else None, self.wait)


class TransportsApp(JupyterApp):
    """The ``jupyter transports`` command: its subcommands."""

    name = "jupyter-transports"
    version = __version__
    description = """Kernel comms from the command line, through a Jupyter server with
    jupyter_transports: list them, follow one, send to one, open one."""
    examples = """jupyter transports list
jupyter transports tail 5b7f 9b2e
jupyter transports send 5b7f 9b2e '{"hello": "kernel"}'
jupyter transports open 5b7f echo"""
    aliases = NO_OPTIONS
    flags = NO_OPTIONS
    subcommands = subcommands_of(ListCommand, TailCommand, SendCommand, OpenCommand)

    def start(self) -> None:
        subapp = self.subapp
        if subapp is None:
            print(f"No subcommand given; one of: {', '.join(self.subcommands)}\n")
            self.print_subcommands()
            self.exit(1)
        else:
            subapp.start()


def main() -> None:
    """The ``jupyter-transports`` console script."""
    TransportsApp.launch_instance()
