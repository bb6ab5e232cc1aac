"""The demo's kernel side, run inside the kernel by ``demo/serve.py`` (and by the browser tests).

* A shared model (a counter, a slider and a note) on ONE comm that the kernel opens and every
  page attaches to (a ``SharedComm``): the kernel sends each change once and the Jupyter server
  fans it out to every attached page; a page that joins, or asks to "sync", gets the state back
  alone (``transports.to``). The kernel and the pages see who is here (presence); what a page
  types in the note reaches the other pages straight from the server (echo), and the kernel
  keeps it for the next page to join.
* An RPC channel, ``jupyter_transports.demo``: the page calls the kernel's ``DemoHandler``, and
  the kernel calls back into the page that called (``channel.caller``) or into every page.
"""

import asyncio
import platform
import random
import time

from jupyter_transports.kernel import Channel
from jupyter_transports.shared import SharedComm

MODEL_TARGET = "jupyter_transports.demo.model"
CHANNEL_NAME = "jupyter_transports.demo"
SLIDER_RANGE = (0, 100)
NOTE_CHARS = 10_000


class SharedModel:
    """The state every page shows; one comm, fanned out by the server."""

    def __init__(self) -> None:
        self.state = {"counter": 0, "slider": 50, "version": 0}
        self.note = ""  # pages send each other its edits (echo); kept here for newcomers
        self.shared = SharedComm(MODEL_TARGET, data={"state": self.state}, echo=True)
        self.comm = self.shared.comm
        self.shared.on_join(lambda member: self._send_state(member["client"]))
        self.shared.on_msg(self._on_msg)

    def _send_state(self, client: str) -> None:
        self.shared.send({"state": self.state, "note": self.note}, to=[client])

    def _on_msg(self, data: dict, buffers: list, sender: str) -> None:
        data = data or {}
        op = data.get("op")
        if op == "sync":  # only the page that asked
            self._send_state(sender)
            return
        if op == "note":  # the other pages have it already (echo)
            self.note = str(data.get("text", ""))[:NOTE_CHARS]
            return
        if op == "increment":
            self.state["counter"] += int(data.get("by", 1))
        elif op == "reset":
            self.state["counter"] = 0
        elif op == "slide":
            low, high = SLIDER_RANGE
            self.state["slider"] = max(low, min(high, int(data.get("value", 0))))
        else:
            return
        self.state["version"] += 1
        self.shared.send({"state": self.state, "by": sender})  # to every page


class DemoHandler:
    """What the page may call (``await channel.call("roll")`` in the page)."""

    def model(self) -> str:
        """The id of the shared model's comm, for the page to attach to."""
        return shared.comm.comm_id

    async def roll(self) -> dict:
        """Roll a die in the kernel, then call back into the calling page to show it."""
        value = random.randint(1, 6)
        started = time.perf_counter()
        shown = await channel.call("show_roll", value, to=channel.caller, timeout=5)
        return {
            "value": value,
            "python": platform.python_version(),
            "page_said": shown,
            "callback_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def announce(self, text: str) -> int:
        """Call every open page; how many of them answered."""
        results = await channel.call("toast", f"{text} (from the kernel)", to="all", timeout=5)
        return sum(1 for result in results.values() if not isinstance(result, BaseException))

    def divide(self, a: float, b: float) -> float:
        """A Python exception reaches the page as a rejected promise (try b = 0)."""
        return a / b

    async def nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds} s"


shared = SharedModel()
channel = Channel(CHANNEL_NAME, DemoHandler())
