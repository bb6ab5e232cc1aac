"""What the commands print, and where: results on stdout, notices and errors on stderr.

With ``--json`` every result is JSON on stdout: one document for ``list`` and ``send``, one
line per event for ``tail`` and ``open``. Events are plain dicts with an ``event`` key:

    {"event": "opened", "kernel_id": K, "comm_id": I, "target_name": T}    (open)
    {"event": "attached", "kernel_id": K, "comm_id": I}                    (tail)
    {"event": "message", "data": D, "buffers": [size, …]}
    {"event": "lost", "count": N}             the server says N kernel messages never reached it
    {"event": "reset", "reason": R, "comm_id": I}    a reconnection could not resume the session
    {"event": "closed", "code": C, "reason": R}      the last event; C is null if the link died

Without ``--json``, a message is its data as one line of JSON on stdout (buffers noted after
it), so that ``tail … | jq`` works; the other events are sentences on stderr. Everything here is
pure but :class:`Printer`, which only writes lines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Sequence
from typing import Any, TextIO

from ..errors import CloseCode

EVENT = "event"
MESSAGE = "message"
OPENED = "opened"
ATTACHED = "attached"
LOST = "lost"
RESET = "reset"
CLOSED = "closed"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
PROGRAM = "jupyter transports"


def json_text(value: Any) -> str:
    """One line of JSON, non-ASCII characters kept as they are."""
    return json.dumps(value, ensure_ascii=False)


def human_bytes(size: int) -> str:
    """``120 B``, ``1.5 KiB``, ``3.0 MiB``."""
    amount, units = float(size), list(UNITS)
    while amount >= 1024 and len(units) > 1:
        amount /= 1024
        units.pop(0)
    return f"{size} B" if units[0] == UNITS[0] else f"{amount:.1f} {units[0]}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- events of tail and open --------------------------------------------------------------------


def message_event(data: Any, buffer_sizes: Sequence[int] = ()) -> dict[str, Any]:
    return {EVENT: MESSAGE, "data": data, "buffers": list(buffer_sizes)}


def opened_event(kernel_id: str, comm_id: str | None, target_name: str) -> dict[str, Any]:
    return {EVENT: OPENED, "kernel_id": kernel_id, "comm_id": comm_id, "target_name": target_name}


def attached_event(kernel_id: str, comm_id: str) -> dict[str, Any]:
    return {EVENT: ATTACHED, "kernel_id": kernel_id, "comm_id": comm_id}


def lost_event(count: int) -> dict[str, Any]:
    return {EVENT: LOST, "count": count}


def reset_event(reason: str, comm_id: str | None) -> dict[str, Any]:
    return {EVENT: RESET, "reason": reason, "comm_id": comm_id}


def closed_event(code: int | None, reason: str | None) -> dict[str, Any]:
    return {EVENT: CLOSED, "code": code, "reason": reason or ""}


def event_text(event: dict[str, Any]) -> str:
    """An event as a terminal shows it (a message: its data as JSON, then its buffers)."""
    kind = event[EVENT]
    if kind == MESSAGE:
        sizes = event["buffers"]
        note = f"  [{buffers_text(sizes)}]" if sizes else ""
        return json_text(event["data"]) + note
    if kind == OPENED:
        return (
            f"opened comm {event['comm_id']} to {event['target_name']!r} "
            f"on kernel {event['kernel_id']} (Ctrl-C closes it)"
        )
    if kind == ATTACHED:
        return f"attached to comm {event['comm_id']} of kernel {event['kernel_id']}"
    if kind == LOST:
        return f"lost: {plural(event['count'], 'kernel message')} never reached the server"
    if kind == RESET:
        return (
            f"reset ({event['reason']}): the session could not resume, messages may be missing; "
            f"comm {event['comm_id']}"
        )
    if kind == CLOSED:
        return closed_text(event["code"], event["reason"])
    raise ValueError(f"no such event: {kind!r}")


def buffers_text(sizes: Sequence[int]) -> str:
    """``2 buffers: 3 B, 1.0 KiB``."""
    return f"{plural(len(sizes), 'buffer')}: {', '.join(map(human_bytes, sizes))}"


def closed_text(code: int | None, reason: str) -> str:
    """``closed: 1012: kernel restarting``; without a reason, the code's name."""
    if code is None:
        return f"closed: the connection was lost: {reason}".rstrip(": ")
    if reason:
        return f"closed: {code}: {reason}"
    try:
        return f"closed: {code} ({CloseCode(code).name.lower().replace('_', ' ')})"
    except ValueError:  # a code of no contract's
        return f"closed: {code}"


# -- results of list and send -------------------------------------------------------------------


def kernels_text(server_url: str, kernels: Sequence[dict[str, Any]]) -> str:
    """``list`` in a terminal: per kernel, its traffic and a table of its comms."""
    if not kernels:
        return f"no kernels on {server_url}"
    lines = [f"{server_url}: {plural(len(kernels), 'kernel')}"]
    for kernel in kernels:
        state = kernel.get("execution_state", "")
        lines += ["", f"kernel {kernel['id']}  {kernel.get('name', '')}  {state}".rstrip()]
        if (traffic := kernel.get("transports")) is not None:
            lines.append(f"  {traffic_text(traffic)}")
        comms = kernel.get("comms")
        if comms is None:
            lines.append(f"  comms: {kernel.get('error', 'unknown')}")
        elif not comms:
            lines.append("  no comms")
        else:
            rows = [["COMM", "TARGET", "CLIENTS"]]
            for comm_id, comm in sorted(comms.items(), key=lambda c: (c[1]["target_name"], c[0])):
                rows.append([comm_id, comm["target_name"], str(comm["clients"])])
            lines += [f"  {row}" for row in table(rows, right_aligned={2})]
    return "\n".join(lines)


def traffic_text(status: dict[str, Any]) -> str:
    """A kernel's counters of ``/api/transports/status`` in one line."""
    return (
        f"traffic: {plural(status['messages_to_kernel'], 'message')} "
        f"({human_bytes(status['bytes_to_kernel'])}) to the kernel, "
        f"{status['messages_from_kernel']} ({human_bytes(status['bytes_from_kernel'])}) from it; "
        f"{plural(status['drops'], 'slow client')} dropped, {status['lost']} lost"
    )


def table(rows: Sequence[Sequence[str]], right_aligned: Collection[int] = ()) -> list[str]:
    """Rows as lines of aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


# -- the printer --------------------------------------------------------------------------------


class Printer:
    """Writes lines, each flushed at once (a pipe sees a message when it arrives).

    A reader that went away (``… | head -1``) is no error: :attr:`gone` says so, and what is
    left to print goes nowhere.
    """

    def __init__(
        self, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.gone = False

    def result(self, document: Any, text: str | None) -> None:
        """A command's result: ``document`` as JSON with ``--json``, else ``text`` (if any)."""
        if self.as_json:
            self._write(self.stdout, json_text(document))
        elif text is not None:
            self._write(self.stdout, text)

    def event(self, event: dict[str, Any]) -> None:
        if self.as_json:
            self._write(self.stdout, json_text(event))
        else:
            stream = self.stdout if event[EVENT] == MESSAGE else self.stderr
            self._write(stream, event_text(event))

    def notice(self, text: str) -> None:
        """A sentence for the user, never for a program reading stdout."""
        if not self.as_json:
            self._write(self.stderr, text)

    def error(self, text: str) -> None:
        self._write(self.stderr, f"{PROGRAM}: error: {text}")

    def _write(self, stream: TextIO, line: str) -> None:
        if self.gone and stream is self.stdout:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except BrokenPipeError:
            if stream is not self.stdout:
                return
            self.gone = True
            # and let Python's own flush at exit go nowhere, rather than fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
