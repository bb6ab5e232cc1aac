"""The demo's kernel side, run inside the kernel by ``demo/serve.py`` (and by the browser tests).

* A shared model (a counter and a slider) on ONE comm that the kernel opens and every page
  attaches to: the kernel sends each change once and the Jupyter server fans it out to every
  attached page; a page that asks to "sync" gets the state back alone (``transports.to``).
  A plain comm-based model, so the demo needs nothing but comm.
* An RPC channel, ``jupyter_transports.demo``: the page calls the kernel's ``DemoHandler``, and
  the kernel calls back into the page that called (``channel.caller``) or into every page.
"""

import asyncio
import platform
import random
import time

from comm import create_comm

from jupyter_transports.kernel import Channel

MODEL_TARGET = "jupyter_transports.demo.model"
CHANNEL_NAME = "jupyter_transports.demo"
SLIDER_RANGE = (0, 100)
TRANSPORTS = "transports"


class SharedModel:
    """The state every page shows; one comm, fanned out by the server."""

    def __init__(self) -> None:
        self.state = {"counter": 0, "slider": 50, "version": 0}
        self.comm = create_comm(target_name=MODEL_TARGET, data={"state": self.state})
        self.comm.on_msg(self._on_msg)

    def _on_msg(self, msg: dict) -> None:
        data = msg["content"]["data"] or {}
        sender = (msg.get("metadata") or {}).get(TRANSPORTS, {})
        op = data.get("op")
        if op == "sync":  # only the page that asked
            self.comm.send(
                {"state": self.state}, metadata={TRANSPORTS: {"to": [sender.get("client")]}}
            )
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
        self.comm.send({"state": self.state, "by": sender.get("client")})  # to every page


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
