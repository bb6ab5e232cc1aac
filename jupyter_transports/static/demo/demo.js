// The demo page: a shared model on one comm every tab attaches to, and an RPC channel.
// Opened as demo/index.html?token=…&kernel=… (demo/serve.py prints the full URL).
import { Channel, Comm } from "../transports.js";

const CHANNEL_NAME = "jupyter_transports.demo";
const params = new URLSearchParams(location.search);
const token = params.get("token") ?? undefined;
const kernelId = params.get("kernel");

const $ = (id) => document.getElementById(id);
const controls = ["increment", "decrement", "reset", "slider", "roll", "divide", "announce"].map($);

function log(text, kind = "info") {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  const time = new Date().toLocaleTimeString([], { hour12: false });
  item.innerHTML = `<time>${time}</time>`;
  item.append(document.createTextNode(text));
  $("log").prepend(item);
  while ($("log").children.length > 40) $("log").lastChild.remove();
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
  for (const control of controls) control.disabled = state !== "open";
}

function toast(text) {
  const item = document.createElement("div");
  item.className = "toast";
  item.textContent = text;
  $("toasts").append(item);
  setTimeout(() => item.remove(), 4000);
}

// -- what the kernel may call in this page ----------------------------------------------------
const handler = {
  async show_roll(value) {
    const die = $("die");
    die.classList.remove("rolled");
    void die.offsetWidth; // restart the animation
    die.textContent = "⚀⚁⚂⚃⚄⚅"[value - 1];
    die.classList.add("rolled");
    log(`kernel called show_roll(${value})`, "in");
    return `tab showed ${value} at ${new Date().toLocaleTimeString([], { hour12: false })}`;
  },
  toast(text) {
    toast(text);
    log(`kernel called toast(${JSON.stringify(text)})`, "in");
    return document.visibilityState;
  },
};

// -- the shared model ------------------------------------------------------------------------
let dragging = false;
const state = { counter: null, slider: null, version: -1 };

function render(next, by) {
  if (next.version < state.version) return; // an older update overtaken by a newer one
  Object.assign(state, next);
  $("counter").textContent = state.counter;
  $("slider-value").textContent = state.slider;
  $("slider-bar").style.width = `${state.slider}%`;
  if (!dragging) $("slider").value = state.slider;
  document.body.dataset.version = state.version;
  if (by) log(`model v${state.version}: counter ${state.counter}, slider ${state.slider}`, "model");
}

function watchModel(model) {
  model.addEventListener("message", ({ data }) => data.state && render(data.state, data.by));
  model.addEventListener("open", ({ reconnected }) => {
    if (reconnected) log("model socket reconnected", "info");
    model.send({ op: "sync" }); // the kernel answers this page alone
  });
  model.addEventListener("close", ({ code, reconnecting }) => {
    log(`model socket closed (${code})${reconnecting ? ", reconnecting…" : ""}`, "error");
  });
  model.send({ op: "sync" });
}

function send(model, message) {
  try {
    model.send(message);
  } catch (error) {
    log(`not sent: ${error.message}`, "error");
  }
}

// -- wiring ----------------------------------------------------------------------------------
async function main() {
  if (!kernelId) {
    setStatus("closed", "no kernel");
    log("open this page with ?kernel=<kernel id>&token=<token> (make demo prints the URL)", "error");
    return;
  }
  const channel = await Channel.open({ kernelId, token, name: CHANNEL_NAME, handler, timeout: 10000 });
  const model = await Comm.attach({ kernelId, token, commId: await channel.call("model") });
  window.demo = { channel, model, state, handler };
  log(`connected to kernel ${kernelId.slice(0, 8)}…`, "info");

  const sockets = [channel.comm, model];
  const update = () => {
    const states = sockets.map((s) => s.state);
    if (states.every((s) => s === "open")) setStatus("open", "live");
    else if (states.includes("closed")) setStatus("closed", "disconnected");
    else setStatus("reconnecting", "reconnecting…");
    document.body.dataset.reconnects = Math.min(...sockets.map((s) => s.reconnects));
  };
  for (const socket of sockets) {
    socket.addEventListener("open", update);
    socket.addEventListener("close", update);
  }
  watchModel(model);
  update();

  $("increment").onclick = () => send(model, { op: "increment", by: 1 });
  $("decrement").onclick = () => send(model, { op: "increment", by: -1 });
  $("reset").onclick = () => send(model, { op: "reset" });
  const slider = $("slider");
  slider.onpointerdown = () => (dragging = true);
  slider.onpointerup = () => (dragging = false);
  slider.oninput = () => send(model, { op: "slide", value: Number(slider.value) });

  $("roll").onclick = async () => {
    log("page called roll()", "out");
    try {
      const r = await channel.call("roll");
      $("roll-result").textContent =
        `Kernel (Python ${r.python}) rolled ${r.value}; its call back into this tab took ${r.callback_ms} ms.`;
    } catch (error) {
      $("roll-result").textContent = `✗ ${error.message}`;
    }
  };
  $("divide").onclick = async () => {
    const [a, b] = [Number($("a").value), Number($("b").value)];
    log(`page called divide(${a}, ${b})`, "out");
    const out = $("divide-result");
    try {
      out.textContent = `= ${await channel.call("divide", a, b)}`;
      out.dataset.kind = "ok";
    } catch (error) {
      out.textContent = `Python raised ${error.type ?? error.name}: ${error.remoteMessage ?? error.message}`;
      out.dataset.kind = "error";
    }
  };
  $("announce").onclick = async () => {
    log("page called announce()", "out");
    const answered = await channel.call("announce", "Hello every tab");
    $("announce-result").textContent = `${answered} tab${answered === 1 ? "" : "s"} answered the kernel.`;
  };
}

main().catch((error) => {
  setStatus("closed", "failed");
  log(error.message, "error");
  console.error(error);
});
