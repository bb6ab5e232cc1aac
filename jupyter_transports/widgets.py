"""Name a kernel's widgets for web pages, which render them live over one socket each.

Runs inside the kernel: it imports only the standard library and ``comm`` (ipywidgets when a
widget is published)::

    import ipywidgets as w
    from jupyter_transports.widgets import publish

    slider = w.IntSlider(description="x")
    publish(w.VBox([slider, w.Output()]), "main")   # a page: await widgets.render(el, "main")

The first ``publish`` opens a comm of target ``jupyter_transports.widgets`` that every page of
the kernel follows (the browser's ``Widgets.connect``; see ``js/``). It shares one comm between
all pages (a :class:`~jupyter_transports.shared.SharedComm`, presence on): when a page arrives
the kernel sends that page alone ``{"names": {name: model id}, "state": <the state of every live
widget, ipywidgets' embed format: Widget.get_manager_state()>}``, newer than any widget message
the page saw before it; each later ``publish`` tells every page ``{"names": {name: model id}}``.
Pages never send on it, so a read-only user's page loads this way too.

An ``Output`` widget in a published tree shows what ``with out: print(...)`` writes: JupyterLab
captures that from the kernel's iopub messages, which pages of the bridge never receive, so here
the kernel itself appends it to the widget's ``outputs`` (stdout, stderr, ``display`` and
``clear_output``; a traceback still goes to the cell's output).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from .shared import SharedComm

PUBLISHER_TARGET = "jupyter_transports.widgets"
NAMES_KEY = "names"
STATE_KEY = "state"

__all__ = ["PUBLISHER_TARGET", "Publisher", "publish"]


class Publisher:
    """The kernel's published widget names, and the comm that gives pages their state."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # name -> model id
        self._roots: dict[str, Any] = {}  # name -> widget: keeps its Output widgets captured
        self._shared: SharedComm | None = None
        self._outputs = OutputCapture()

    @property
    def comm_id(self) -> str | None:
        """The publisher comm's id, once something was published."""
        return None if self._shared is None else self._shared.comm_id

    def publish(self, widget: Any, name: str) -> None:
        """Name ``widget`` (any ipywidgets or anywidget widget) ``name`` for pages."""
        if not isinstance(name, str) or not name:
            raise ValueError("a published widget needs a non-empty name (a string)")
        model_id = getattr(widget, "model_id", None)
        if not isinstance(model_id, str):
            raise TypeError(f"{widget!r} is not a live widget (it has no model_id)")
        self.names[name] = model_id
        self._roots[name] = widget
        self._outputs.watch(self._roots.values())
        if self._shared is None:
            self._shared = SharedComm(PUBLISHER_TARGET, data={NAMES_KEY: dict(self.names)})
            self._shared.on_join(self._welcome)
        else:
            self._shared.send({NAMES_KEY: {name: model_id}})

    def _welcome(self, member: Mapping[str, Any]) -> None:
        assert self._shared is not None
        self._outputs.watch(self._roots.values())  # the trees may have grown since
        state = _ipywidgets().Widget.get_manager_state(drop_defaults=False)
        self._shared.send({NAMES_KEY: self.names, STATE_KEY: state}, to=[member["client"]])


_publisher: Publisher | None = None  # one per kernel, as ipywidgets' own registry of widgets


def publish(widget: Any, name: str) -> None:
    """Name ``widget`` for pages: ``await widgets.render(element, name)`` renders it live."""
    global _publisher
    if _publisher is None:
        _publisher = Publisher()
    _publisher.publish(widget, name)


# -- Output widgets ------------------------------------------------------------------------------


class OutputCapture:
    """Makes ``with out:`` fill ``out.outputs`` in the kernel, for the ``Output`` widgets found
    in the trees it watches (an Output sets its ``msg_id`` on entering, clears it on leaving)."""

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._active: list[_Capture] = []
        self.clear_pending: weakref.WeakSet[Any] = weakref.WeakSet()  # clear_output(wait=True)

    def watch(self, roots: Any) -> None:
        """Capture for every Output widget in the trees of ``roots`` not watched yet."""
        output_class = _ipywidgets().Output
        for widget in _tree(roots):
            if isinstance(widget, output_class) and widget not in self._watched:
                self._watched.add(widget)
                widget.observe(self._entered_or_left, names="msg_id")

    def _entered_or_left(self, change: Mapping[str, Any]) -> None:
        output = change["owner"]
        capturing = [c for c in self._active if c.output is output]
        if change["new"] and not capturing:
            capture = _Capture(self, output)
            capture.start()
            self._active.append(capture)
        elif not change["new"]:
            for capture in capturing:
                capture.stop()
                self._active.remove(capture)


class _Capture:
    """One Output widget's capture: sys.stdout and sys.stderr, and the display publisher."""

    def __init__(self, owner: OutputCapture, output: Any) -> None:
        self.output = output
        self._owner = owner
        self._saved: tuple[TextIO, TextIO] | None = None

    def start(self) -> None:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Stream(self, "stdout", sys.stdout)
        sys.stderr = _Stream(self, "stderr", sys.stderr)
        publisher = _display_publisher()
        if publisher is not None:
            publisher.register_hook(self._displayed)

    def stop(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _Stream) and stream.capture is self:
                stream.flush()
        if self._saved is not None:
            # restore only what is still ours: a nested capture that outlives this one keeps its
            # own streams (its saved ones then are this capture's, which write through)
            if isinstance(sys.stdout, _Stream) and sys.stdout.capture is self:
                sys.stdout = self._saved[0]
            if isinstance(sys.stderr, _Stream) and sys.stderr.capture is self:
                sys.stderr = self._saved[1]
        publisher = _display_publisher()
        if publisher is not None:
            publisher.unregister_hook(self._displayed)

    def append(self, output: dict[str, Any]) -> None:
        clear = self.output in self._owner.clear_pending
        self._owner.clear_pending.discard(self.output)
        outputs = () if clear else tuple(self.output.outputs)
        last = outputs[-1] if outputs else None
        if (
            output["output_type"] == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == output["name"]
        ):  # one stream output grows, as in a notebook's output area
            outputs = (*outputs[:-1], {**last, "text": last["text"] + output["text"]})
        else:
            outputs = (*outputs, output)
        self.output.outputs = outputs

    def _displayed(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The display publisher's hook: keep display_data and clear_output from the cell."""
        msg_type, content = msg["header"]["msg_type"], msg["content"]
        if msg_type == "display_data":
            data, metadata = content.get("data", {}), content.get("metadata", {})
            self.append({"output_type": "display_data", "data": data, "metadata": metadata})
            return None
        if msg_type == "clear_output":
            if content.get("wait"):  # when the next output comes, as a notebook does
                self._owner.clear_pending.add(self.output)
            else:
                self.output.outputs = ()
            return None
        return msg


class _Stream:
    """sys.stdout or sys.stderr while an Output widget captures: a line at a time."""

    def __init__(self, capture: _Capture, name: str, wrapped: TextIO) -> None:
        self.capture = capture
        self.name = name
        self._wrapped = wrapped
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self.capture.append({"output_type": "stream", "name": self.name, "text": text})

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno…: the wrapped stream's
        return getattr(self._wrapped, name)


def _ipywidgets() -> Any:
    """ipywidgets, imported when a widget is published (kernels without it never are)."""
    import ipywidgets  # type: ignore[import-untyped]

    return ipywidgets


def _display_publisher() -> Any:
    """The kernel's display publisher, if it takes hooks (ipykernel's does)."""
    from IPython import get_ipython

    shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    return publisher if hasattr(publisher, "register_hook") else None


def _tree(roots: Any) -> Iterator[Any]:
    """Every widget reachable from ``roots`` through their synced traits (children, layout…)."""
    widget_class = _ipywidgets().Widget
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        value = stack.pop()
        if isinstance(value, widget_class):
            if id(value) in seen:
                continue
            seen.add(id(value))
            yield value
            stack.extend(getattr(value, key, None) for key in value.keys)
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
