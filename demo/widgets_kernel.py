"""The widgets demo's kernel side: a small ipywidgets dashboard, published for web pages.

Run inside the kernel by ``demo/serve.py`` (and by the browser tests). The page
``static/jupyter_transports/demo/widgets.html`` renders the widgets published here
(``jupyter_transports.widgets.publish``) over one WebSocket: a wave whose amplitude, frequency
and shape come from two sliders and a dropdown, drawn by the kernel into an ``Output`` widget as
SVG; a log ``Output`` the kernel prints into; and an anywidget counter whose ES module the page
gets from the kernel. Every page shows the same widgets, live both ways.
"""

import math

import ipywidgets as w

from jupyter_transports.widgets import publish

WIDTH, HEIGHT, SAMPLES = 420, 160, 200

amplitude = w.IntSlider(value=60, min=0, max=100, description="amplitude")
frequency = w.FloatSlider(value=2.0, min=0.5, max=6.0, step=0.5, description="frequency")
shape = w.Dropdown(options=["sine", "square", "triangle"], value="sine", description="shape")
plot = w.Output(layout=w.Layout(border="1px solid #e2e6ef", min_height=f"{HEIGHT + 8}px"))
log = w.Output(layout=w.Layout(max_height="140px", overflow="auto"))


def wave(x: float) -> float:
    """The selected shape at phase ``x`` (in turns), between -1 and 1."""
    phase = x % 1.0
    if shape.value == "square":
        return 1.0 if phase < 0.5 else -1.0
    if shape.value == "triangle":
        return 4 * abs(phase - 0.5) - 1
    return math.sin(2 * math.pi * x)


def svg() -> str:
    middle, scale = HEIGHT / 2, amplitude.value / 100 * (HEIGHT / 2 - 6)
    points = " ".join(
        f"{i * WIDTH / SAMPLES:.1f},{middle - scale * wave(frequency.value * i / SAMPLES):.1f}"
        for i in range(SAMPLES + 1)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">'
        f'<line x1="0" y1="{middle}" x2="{WIDTH}" y2="{middle}" stroke="#c8cdd8"/>'
        f'<polyline fill="none" stroke="#f37726" stroke-width="2.5" points="{points}"/></svg>'
    )


def redraw(change: dict | None = None) -> None:
    # the plot's outputs are set outright (this also runs at start-up, outside any cell); the
    # log shows `with out: print(...)`, which jupyter_transports.widgets captures for pages
    plot.outputs = (
        {"output_type": "display_data", "data": {"image/svg+xml": svg()}, "metadata": {}},
    )
    if change is not None:
        with log:
            print(f"{change['owner'].description} → {change['new']}")


for control in (amplitude, frequency, shape):
    control.observe(redraw, names="value")
redraw()

controls = w.VBox([amplitude, frequency, shape])
dashboard = w.VBox(
    [
        w.HTML("<b>A wave drawn by the kernel</b>"),
        w.HBox([controls, plot]),
        w.HTML("<b>Log</b>"),
        log,
    ]
)
publish(dashboard, "dashboard")

try:
    import anywidget
    import traitlets
except ImportError:  # pragma: no cover - the test extra installs it
    counter = None
else:

    class Counter(anywidget.AnyWidget):
        """A button that counts its clicks (its ES module travels from the kernel)."""

        _esm = """
        function render({ model, el }) {
          const button = document.createElement("button");
          button.className = "counter-button";
          const show = () => { const n = model.get("value");
            button.textContent = `clicked ${n} time${n === 1 ? "" : "s"}`; };
          button.addEventListener("click", () => {
            model.set("value", model.get("value") + 1);
            model.save_changes();
          });
          model.on("change:value", show);
          show();
          el.append(button);
        }
        export default { render };
        """
        _css = """
        .counter-button { font: inherit; font-weight: 600; padding: 0.5rem 1rem; border: 0;
          border-radius: 10px; color: #fff; background: #f37726; cursor: pointer; }
        """
        value = traitlets.Int(0).tag(sync=True)

    counter = Counter()
    counter.observe(lambda change: log.append_stdout(f"counter → {change['new']}\n"), "value")
    publish(counter, "counter")
