// The widgets demo page: renders what demo/widgets_kernel.py published in the kernel.
// Opened as demo/widgets.html?token=…&kernel=… (demo/serve.py prints the full URL).
import * as Widgets from "../widgets/widgets.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

async function main() {
  const widgets = await Widgets.connect({
    kernelId: params.get("kernel"),
    token: params.get("token") ?? undefined,
    onStatus: (status, widgets) => {
      if (widgets === undefined) return; // the first "open": rendering comes next
      if (status === "reconnecting") {
        setStatus("reconnecting", "reconnecting…");
      } else if (status === "open") {
        setStatus("open", widgets.canSend ? "live" : "live, read-only");
      } else if (status === "closed") {
        setStatus("closed", "disconnected");
        const why = widgets.closeReason || widgets.closeCode;
        $("notice").textContent = `socket closed (${why}); reload to reconnect`;
      }
    },
  });
  await Promise.all([
    widgets.render($("dashboard"), "dashboard"),
    widgets.render($("counter"), "counter"),
  ]);
  setStatus("open", widgets.canSend ? "live" : "live, read-only");
  document.body.dataset.rendered = "true";
}

main().catch((error) => {
  setStatus("closed", "failed");
  $("notice").textContent = String(error.message ?? error);
  console.error(error);
});
