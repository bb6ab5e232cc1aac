// The demo page: a shared model on one comm every tab attaches to, and an RPC channel.
// Opened as demo/index.html?token=…&kernel=… (demo/serve.py prints the full URL). It rides
// durable sessions: a dropped connection resumes with nothing lost, and calls in flight
// complete. With &session=0 the page uses plain sockets (a drop fails the calls in flight).
//
// A kernel restart ends every comm: the channel comes back by itself (a new comm to its target),
// but the model's comm is gone, so the page asks the restarted kernel for the new one and
// attaches to it. If the restarted kernel does not run the demo (yet), the page keeps trying.
import { Channel, CloseCode, Comm } from "../transports.js";

const CHANNEL_NAME = "jupyter_transports.demo";
const RETRY_MS = 3000; // between attempts to reach the demo after the channel closed for good
const params = new URLSearchParams(location.search);
const token = params.get("token") ?? undefined;
const kernelId = params.get("kernel");
const connectOptions = { kernelId, token, session: params.get("session") !== "0" };

const $ = (id) => document.getElementById(id);
const controls = ["increment", "decrement", "reset", "slider", "roll", "divide", "announce", "note"].map($);

function log(text, kind = "info") {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  const time = new Date().toLocaleTimeString([], { hour12: false });
  item.innerHTML = `<time>${time}</time>`;
  item.append(document.createTextNode(text));
  $("log").prepend(item);
  while ($("log").children.length > 40) $("log").lastChild.remove();
}

/** Say what happened to the connection, under the status (and in the log). */
function notice(text, kind = "info") {
  $("notice").textContent = text;
  log(text, kind);
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

// -- the connection: the channel and the model's comm, both replaceable ------------------------
let dragging = false;
const state = { counter: null, slider: null, version: -1 }; // the shared model, as last heard
let channel = null; // the RPC channel; replaced only if it closes for good
let model = null; // the shared model's comm; replaced after a kernel restart
let kernelRestarted = false; // the channel closed with 1012 and has not recovered yet
let retryTimer = null;
window.demo = {
  get channel() { return channel; },
  get model() { return model; },
  state,
  handler,
};

function update() {
  const sockets = [channel?.comm, model];
  const states = sockets.map((socket) => socket?.state ?? "connecting");
  if (states.every((state) => state === "open")) setStatus("open", "live");
  else if (retryTimer !== null) setStatus("reconnecting", "waiting for the demo…");
  else if (states.includes("closed")) setStatus("closed", "disconnected");
  else setStatus("reconnecting", "reconnecting…");
  document.body.dataset.reconnects = Math.min(...sockets.map((socket) => socket?.reconnects ?? 0));
}

/** Open the channel, then attach to the model the kernel names (or close the channel again:
 * a retry opens a new one). */
async function connect() {
  const next = await Channel.open({ ...connectOptions, name: CHANNEL_NAME, handler, timeout: 10000 });
  channel = next;
  watchChannel(next);
  try {
    await attachModel();
  } catch (error) {
    channel = null;
    next.close();
    throw error;
  }
}

function watchChannel(watched) {
  watched.comm.addEventListener("close", ({ code, reconnecting }) => {
    if (watched !== channel) return;
    if (code === CloseCode.RESTARTING) {
      kernelRestarted = true;
      notice("kernel restarting…", "error");
    } else {
      log(`channel socket closed (${code})${reconnecting ? ", reconnecting…" : ""}`, "error");
    }
    if (!reconnecting) retryLater();
    update();
  });
  watched.comm.addEventListener("open", ({ reconnected, resumed, reason }) => {
    if (watched !== channel || !reconnected) return;
    if (kernelRestarted) recoverFromRestart();
    else if (resumed) log("channel socket reconnected; session resumed, nothing lost", "info");
    else log(`channel socket reconnected${reason ? ` (session reset: ${reason})` : ""}`, "info");
    update();
  });
}

/** The channel is back after a kernel restart: the old model's comm died with the kernel. */
async function recoverFromRestart() {
  try {
    await attachModel();
  } catch (error) {
    log(`the restarted kernel did not give the model: ${error.message}`, "error");
    const stale = channel;
    channel = null;
    stale?.close();
    retryLater(); // from scratch, in a while
    return;
  }
  kernelRestarted = false;
  notice("kernel restarted; reconnected");
}

/** Try again from scratch in a while: the channel closed for good (say, a restarted kernel that
 * does not run the demo yet refused it with 4404). */
function retryLater() {
  if (retryTimer !== null) return;
  notice(kernelRestarted ? "kernel restarted without the demo; waiting for it…" : "disconnected; retrying…", "error");
  retryTimer = setTimeout(async () => {
    retryTimer = null;
    try {
      await connect();
    } catch (error) {
      log(`not yet: ${error.message}`, "error");
      retryLater();
      return;
    }
    notice(kernelRestarted ? "kernel restarted; reconnected" : "reconnected");
    kernelRestarted = false;
    update();
  }, RETRY_MS);
  update();
}

// -- the shared model ------------------------------------------------------------------------

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

async function attachModel() {
  const commId = await channel.call("model");
  const next = await Comm.attach({ ...connectOptions, commId, query: { presence: "1" } });
  const previous = model;
  model = next;
  if (previous !== null && previous.state !== "closed") previous.close(); // its comm is gone
  state.version = -1; // a model the kernel made anew counts its versions from 0 again
  watchModel(next);
  update();
}

function renderPeople(roster) {
  const list = $("people");
  list.replaceChildren(
    ...[...roster.values()].map((member) => {
      const item = document.createElement("li");
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = member.initials ?? member.name.slice(0, 2);
      if (member.color) badge.style.background = member.color;
      item.append(badge, document.createTextNode(` ${member.name}`));
      const role = document.createElement("em");
      role.textContent = member.client === model?.clientId ? " (this tab)" : ` (${member.role})`;
      item.append(role);
      item.dataset.role = member.role;
      return item;
    }),
  );
  document.body.dataset.people = roster.size;
}

function showNote(text) {
  if (document.activeElement !== $("note")) $("note").value = text;
}

function watchModel(watched) {
  watched.addEventListener("message", ({ data, sender }) => {
    if (watched !== model) return;
    if (sender && data.op === "note") showNote(data.text); // another tab typed, relayed by the server
    if (data.state) render(data.state, data.by);
    if (typeof data.note === "string") showNote(data.note);
  });
  watched.addEventListener("presence", () => watched === model && renderPeople(watched.roster));
  watched.addEventListener("open", ({ reconnected, resumed }) => {
    if (watched !== model) return;
    if (reconnected) log(`model socket reconnected${resumed ? "; session resumed, nothing lost" : ""}`, "info");
    if (!resumed) watched.send({ op: "sync" }); // the kernel answers this page alone
    update();
  });
  watched.addEventListener("close", ({ code, reconnecting }) => {
    if (watched !== model) return;
    log(`model socket closed (${code})${reconnecting ? ", reconnecting…" : ""}`, "error");
    update();
  });
  watched.send({ op: "sync" });
}

function send(message) {
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
  await connect();
  log(`connected to kernel ${kernelId.slice(0, 8)}…${connectOptions.session ? " (durable sessions)" : ""}`, "info");
  update();

  $("increment").onclick = () => send({ op: "increment", by: 1 });
  $("decrement").onclick = () => send({ op: "increment", by: -1 });
  $("reset").onclick = () => send({ op: "reset" });
  const slider = $("slider");
  slider.onpointerdown = () => (dragging = true);
  slider.onpointerup = () => (dragging = false);
  slider.oninput = () => send({ op: "slide", value: Number(slider.value) });
  $("note").oninput = () => send({ op: "note", text: $("note").value });

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
    try {
      const answered = await channel.call("announce", "Hello every tab");
      $("announce-result").textContent = `${answered} tab${answered === 1 ? "" : "s"} answered the kernel.`;
    } catch (error) {
      $("announce-result").textContent = `✗ ${error.message}`;
    }
  };
}

main().catch((error) => {
  setStatus("closed", "failed");
  log(error.message, "error");
  console.error(error);
});
