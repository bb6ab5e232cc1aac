// jupyter_transports browser client: kernel comms and RPC channels over the server's WebSockets.
//
// An ES module with no dependencies and no build step. The server serves it at
// `{base_url}static/jupyter_transports/transports.js`; a page on another origin may import it from
// there when `ServerApp.allow_origin` allows that origin (the server then sends CORS headers).
//
//   import { Comm, Channel } from "http://localhost:8888/static/jupyter_transports/transports.js";
//   const comm = await Comm.open({ kernelId, target: "echo", token });
//   comm.addEventListener("message", (e) => console.log(e.data, e.buffers));
//   comm.addEventListener("open", (e) => e.reconnected && !e.resumed && resync(e.reason));
//   comm.send({ hello: "kernel" }, [new Uint8Array([1, 2, 3])]);
//
// The wire is the one in the project's CONTRACT.md. By default a comm rides a *durable session*
// (v2, "Durable sessions"): its socket carries `?session_key=<random id>`, every frame is a JSON
// object (`{"seq": n, "data": d}` both ways, `{"ack": n}`, and the server's first frame,
// `{"session": "new" | "resumed" | "reset", ...}`), and after a drop the comm reconnects to the
// same session with `&last=<highest seq received>`: nothing the kernel sent meanwhile is lost or
// repeated, every message sent reaches the kernel exactly once, and a comm this client opened
// stays the same comm. The "open" event says whether the session resumed, or why it was reset.
//
// `frames: "text"` and `session: false` use a plain (v1) socket instead, byte for byte as before
// sessions: a text frame is one message's JSON `data` (or its text, with frames "text"), and
// after a drop `Comm.open` opens a new comm. In both, a message with buffers is one binary frame
// (big-endian uint32 part count, uint32 offsets, then part 0 = UTF-8 JSON and parts 1.. = the
// buffers); on a session, part 0 is the `{"seq", "data"}` object.

const API_PATH = "api/transports/kernels";
const TOKEN_PARAM = "token";
const DATA_PARAM = "data";
const FRAMES_PARAM = "frames";
const SESSION_PARAM = "session_key"; // a secret: the server's log scrubs parameters named *key*
const LAST_PARAM = "last";

/** The WebSocket close codes of the contract. */
export const CloseCode = Object.freeze({
  COMM_CLOSED: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  BAD_FRAME: 1007,
  READ_ONLY: 1008,
  TOO_BIG: 1009,
  BRIDGE_FAILED: 1011,
  RESTARTING: 1012,
  TOO_SLOW: 1013,
  NO_SUCH_COMM: 4404,
  REPLACED: 4409,
});

// A socket closed with one of these may come back: it dropped, the bridge failed, the kernel is
// restarting, or the client fell behind. Every other code is an answer (the comm was closed, the
// kernel refused it, the client may not send, a newer connection of the session took over...)
// and reconnecting would not change it.
const RETRY_CODES = new Set([
  CloseCode.NO_STATUS,
  CloseCode.ABNORMAL,
  CloseCode.BRIDGE_FAILED,
  CloseCode.RESTARTING,
  CloseCode.TOO_SLOW,
]);

const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 250, // ms before the first attempt
  maxDelay: 10000, // ms, the longest wait between attempts
  factor: 2,
  maxRetries: 20, // attempts in a row before giving up
});

/** Base of the errors this module throws. */
export class TransportsError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The WebSocket could not be opened (the browser does not say why: token, origin, kernel, comm). */
export class ConnectError extends TransportsError {}

/** The socket is not open (closed, or reconnecting without a session). */
export class StateError extends TransportsError {}

/** The socket closed (or its session was reset) before the answer to a call came. */
export class ConnectionLost extends TransportsError {}

/** No answer within the call's timeout. */
export class TimeoutError extends TransportsError {}

/** The kernel raised while answering a call: `type` is the Python exception's class name. */
export class RemoteError extends TransportsError {
  constructor(type, message) {
    super(message ? `${type}: ${message}` : type);
    this.type = type;
    this.remoteMessage = message;
  }
}

// -- frames ------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function asBytes(buffer) {
  if (buffer instanceof Uint8Array) return buffer;
  if (ArrayBuffer.isView(buffer)) return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  throw new TypeError("a buffer must be an ArrayBuffer, a typed array or a DataView");
}

/** One binary frame holding `data` (as JSON) and `buffers`, in Jupyter's binary layout. */
export function packBinary(data, buffers) {
  return packJson(JSON.stringify(data), buffers);
}

/** One binary frame whose part 0 is the JSON text `json`. */
function packJson(json, buffers) {
  const parts = [encoder.encode(json), ...buffers.map(asBytes)];
  const headerSize = 4 * (parts.length + 1);
  const size = parts.reduce((total, part) => total + part.byteLength, headerSize);
  const frame = new Uint8Array(size);
  const view = new DataView(frame.buffer);
  view.setUint32(0, parts.length);
  let offset = headerSize;
  parts.forEach((part, i) => {
    view.setUint32(4 * (i + 1), offset);
    frame.set(part, offset);
    offset += part.byteLength;
  });
  return frame.buffer;
}

/** A binary frame as `{data, buffers}` (buffers are Uint8Array views of the frame). */
export function unpackBinary(frame) {
  const view = new DataView(frame);
  const n = view.getUint32(0);
  const offsets = [];
  for (let i = 0; i < n; i++) offsets.push(view.getUint32(4 * (i + 1)));
  offsets.push(frame.byteLength);
  const parts = [];
  for (let i = 0; i < n; i++) parts.push(new Uint8Array(frame, offsets[i], offsets[i + 1] - offsets[i]));
  return { data: JSON.parse(decoder.decode(parts[0])), buffers: parts.slice(1) };
}

// -- URLs --------------------------------------------------------------------------------------

/** The server this module was loaded from: `{base_url}` is two levels above the module. */
export const defaultBaseUrl = new URL("../../", import.meta.url).href;

function socketUrl(baseUrl, kernelId, kind, name, { token, query = {}, data, frames }) {
  const base = new URL(baseUrl ?? defaultBaseUrl, globalThis.location?.href);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const path = `${API_PATH}/${encodeURIComponent(kernelId)}/${kind}/${encodeURIComponent(name)}`;
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, String(value));
  if (data !== undefined) url.searchParams.set(DATA_PARAM, JSON.stringify(data));
  if (frames) url.searchParams.set(FRAMES_PARAM, frames);
  if (token) url.searchParams.set(TOKEN_PARAM, token);
  return url.href;
}

/** A socket URL fit for an error message: the token and the session id are secrets. */
function redacted(url) {
  return url.replace(/([?&](?:token|session_key)=)[^&]*/g, "$1…");
}

// -- durable sessions --------------------------------------------------------------------------
// The client's half of CONTRACT.md, v2, "Durable sessions".

// Acknowledge once a quarter of the window is unacknowledged, or 10 s after a message, as the
// contract asks: an acknowledgement costs the server what hundreds of deliveries do, so they are
// rare. (This server keeps the comm's latest messages whatever they say.)
const ACK_FRACTION = 4;
const ACK_IDLE = 10000; // ms
const SESSION_ID_BYTES = 16; // 128 bits, 22 characters of URL-safe base64
const OUTCOME_KEY = "session"; // of the server's first frame on each connection

/** The first frame of a session connection (`session`) and why a reset happened (`reason`). */
export const SessionOutcome = Object.freeze({ NEW: "new", RESUMED: "resumed", RESET: "reset" });
export const ResetReason = Object.freeze({
  UNKNOWN: "unknown",
  EXPIRED: "expired",
  OVERFLOW: "overflow",
  KERNEL_RESTARTED: "kernel_restarted",
  CLOSED: "closed",
});

function frameSize(frame) {
  return typeof frame === "string" ? frame.length : frame.byteLength;
}

function isCount(value) {
  return Number.isInteger(value) && value >= 0;
}

/** A session id nobody can guess: random bytes as URL-safe base64, without padding. */
function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * The numbers of one session, no I/O: it numbers the messages sent and keeps them until the
 * server says it handed them to the kernel, and it tracks the messages received, which it tells
 * the server it has (an ack, or `last` in the next connection's URL).
 */
class SessionState {
  id = newSessionId();
  /** The highest `seq` received since the session began: the next connection's `last`. */
  lastReceived = 0;
  #nextSeq = 1;
  #unacked = []; // {seq, frame} sent or queued, not yet handed to the kernel, in order
  #receivedSinceAck = 0; // bytes (of text frames, characters: at most their bytes)
  /** The server's window, in bytes (from the first frame of each connection). */
  window = Infinity;

  /** The frame of one comm message under the next number, kept until acknowledged. */
  number(data, buffers) {
    // encode before taking a number: a message JSON cannot encode throws and uses none
    const json = JSON.stringify(data) ?? "null";
    const seq = this.#nextSeq;
    const envelope = `{"seq":${seq},"data":${json}}`;
    const frame = buffers.length > 0 ? packJson(envelope, buffers) : envelope;
    this.#nextSeq += 1;
    this.#unacked.push({ seq, frame });
    return frame;
  }

  /** The server handed every message up to `seq` to the kernel: forget them. */
  acknowledged(seq) {
    const kept = this.#unacked.findIndex((message) => message.seq > seq);
    this.#unacked.splice(0, kept === -1 ? this.#unacked.length : kept);
  }

  /** The frames the server has not acknowledged, in order: to send again after a resume. */
  unackedFrames() {
    return this.#unacked.map((message) => message.frame);
  }

  /** The server began the session anew: number from 1, and drop what the old one never got. */
  restart() {
    this.#nextSeq = 1;
    this.#unacked = [];
    this.lastReceived = 0;
    this.#receivedSinceAck = 0;
  }

  /** The query of the next connection; its `last` acknowledges what came so far. */
  connectionQuery(reconnecting) {
    this.#receivedSinceAck = 0;
    return reconnecting ? { [SESSION_PARAM]: this.id, [LAST_PARAM]: this.lastReceived } : { [SESSION_PARAM]: this.id };
  }

  /** Whether message `seq` (a frame of `size`) is new (the server never repeats one). */
  received(seq, size) {
    if (seq <= this.lastReceived) return false;
    this.lastReceived = seq;
    this.#receivedSinceAck += size;
    return true;
  }

  /** Whether so much came since the last ack that one is due now. */
  ackDue() {
    return this.#receivedSinceAck * ACK_FRACTION >= this.window;
  }

  /** The `seq` to acknowledge now, or null if nothing came since the last ack. */
  takeAck() {
    if (this.#receivedSinceAck === 0) return null;
    this.#receivedSinceAck = 0;
    return this.lastReceived;
  }
}

/** A session frame's JSON object and buffers; throws if the frame is not one. */
function decodeSessionFrame(frame) {
  const { data, buffers } = typeof frame === "string" ? { data: JSON.parse(frame), buffers: [] } : unpackBinary(frame);
  if (data === null || typeof data !== "object" || Array.isArray(data)) throw new TypeError("a session frame is a JSON object");
  return { fields: data, buffers };
}

// -- events ------------------------------------------------------------------------------------

/** A comm message: `data` (JSON value, or text with frames "text") and `buffers` (Uint8Array[]). */
export class CommMessageEvent extends Event {
  constructor(data, buffers, sender = null) {
    super("message");
    this.data = data;
    this.buffers = buffers;
    this.sender = sender; // the client that sent it, when the server relayed it (echo)
  }
}

/** Who is on the comm changed (a session with `query: { presence: "1" }`); see `comm.roster`. */
export class CommPresenceEvent extends Event {
  constructor(change) {
    super("presence");
    this.change = change; // the server's frame: {presence: "roster" | "join" | "leave", ...}
  }
}

/** The socket closed; `reconnecting` says whether the comm is trying to come back. */
export class CommCloseEvent extends Event {
  constructor(code, reason, reconnecting) {
    super("close");
    this.code = code;
    this.reason = reason;
    this.reconnecting = reconnecting;
  }
}

/**
 * The comm is ready to carry messages. `reconnected`: after a drop. `resumed`: the session went
 * on where it was (nothing lost). `reason`: why it could not (a ResetReason), else null; after
 * any reset the application should resynchronise its state with the kernel.
 */
export class CommOpenEvent extends Event {
  constructor(reconnected, resumed = false, reason = null) {
    super("open");
    this.reconnected = reconnected;
    this.resumed = resumed;
    this.reason = reason;
  }
}

/**
 * `count` messages the kernel sent on the comm never reached the server (its iopub overflowed;
 * durable sessions only): the application should resynchronise its state with the kernel.
 */
export class CommLostEvent extends Event {
  constructor(count) {
    super("lost");
    this.count = count;
  }
}

// -- one comm ----------------------------------------------------------------------------------

/**
 * One kernel comm over one WebSocket, reconnecting with backoff after the socket drops.
 *
 * Events: "open" (CommOpenEvent), "message" (CommMessageEvent), "close" (CommCloseEvent), and
 * on a durable session "lost" (CommLostEvent) and "presence" (CommPresenceEvent).
 *
 * On a durable session (the default) a comm comes back after a drop as the same comm: a
 * `Comm.open` comm keeps its comm id and client id, messages sent while it reconnects wait and go
 * out on its return, and what the kernel sent meanwhile arrives, once, in order. After a kernel
 * restart (1012) the session is reset: a `Comm.open` comm opens a new comm to its target by
 * itself, an attached comm is gone and closes with 4404.
 *
 * On a plain socket (`session: false` or `frames: "text"`), a `Comm.open` comm reopens a new comm
 * to the same target after a drop (the kernel sees a new client); a `Comm.attach` comm attaches to
 * the same comm again.
 */
export class Comm extends EventTarget {
  #url; // without the session's parameters
  #frames;
  #reconnect;
  #session; // SessionState, or null on a plain socket
  #attached; // made by Comm.attach: a kernel restart ends its comm for good
  #socket = null;
  #firstConnection = null; // {resolve, reject} until the first connection is ready or fails
  #closing = false;
  #attempts = 0;
  #timer = null;
  #ackTimer = null;
  #lastDrop = null; // the close code that made the comm reconnect

  /** Open a new comm to `target` in the kernel; resolves once the comm is ready. */
  static open({ kernelId, target, baseUrl, token, data, query, frames, reconnect, session } = {}) {
    if (!kernelId || !target) throw new TypeError("Comm.open needs a kernelId and a target");
    const url = socketUrl(baseUrl, kernelId, "targets", target, { token, query, data, frames });
    return new Comm(url, { frames, reconnect, session }).#connected();
  }

  /** Attach to an existing comm of the kernel (a widget's, another client's...). */
  static attach({ kernelId, commId, baseUrl, token, query, frames, reconnect, session } = {}) {
    if (!kernelId || !commId) throw new TypeError("Comm.attach needs a kernelId and a commId");
    const url = socketUrl(baseUrl, kernelId, "comms", commId, { token, query, frames });
    const comm = new Comm(url, { frames, reconnect, session, attached: true });
    comm.commId = commId;
    return comm.#connected();
  }

  constructor(url, { frames = "json", reconnect = true, session = true, attached = false } = {}) {
    super();
    this.#url = url;
    this.#frames = frames;
    this.#reconnect = reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(reconnect === true ? {} : reconnect) };
    // a session's frames are JSON objects: text passthrough needs a plain socket
    this.#session = session !== false && frames !== "text" ? new SessionState() : null;
    this.#attached = attached;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  state = "connecting";

  /** How many times the socket came back after a drop. */
  reconnects = 0;

  /** The server's id of this client (the kernel's `metadata.transports.client`); null on a plain socket. */
  clientId = null;

  /** The comm's id (from the session's first frame; on a plain socket, known only when attached). */
  commId = null;

  /** How many kernel messages on the comm the server said never reached it (a session's "lost"). */
  lost = 0;

  /** Who is on the comm, by client id (a session with `query: { presence: "1" }`). */
  roster = new Map();

  /** Whether the comm rides a durable session (false: a plain v1 socket). */
  get durable() {
    return this.#session !== null;
  }

  /**
   * Send one comm message: `data` as JSON (or as text with frames "text"), `buffers` as binary.
   * On a session a message sent while the comm reconnects waits for its return.
   */
  send(data, buffers = []) {
    if (this.#session) {
      this.#sendOnSession(data, buffers);
      return;
    }
    if (this.state !== "open") throw new StateError(`the comm is ${this.state}`);
    if (buffers.length > 0) this.#socket.send(packBinary(data, buffers));
    else if (this.#frames === "text" && typeof data === "string") this.#socket.send(data);
    else this.#socket.send(JSON.stringify(data));
  }

  /**
   * Close the socket for good (a comm this client opened closes in the kernel too). A session
   * ends at the close frame; closed while reconnecting, it has no socket to send one on, and the
   * server ends it when nobody resumes it (`session_timeout`).
   */
  close(code = CloseCode.COMM_CLOSED, reason = "") {
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#cancelAck();
    if (this.#socket && this.#socket.readyState <= WebSocket.OPEN) this.#socket.close(code, reason);
    else if (this.state !== "closed") this.#finish(code, reason);
  }

  #connected() {
    return new Promise((resolve, reject) => {
      this.#firstConnection = { resolve, reject };
      this.#dial();
    });
  }

  /** A new socket: to the session (with what was received so far), or plain. */
  #dial() {
    const socket = (this.#socket = new WebSocket(this.#connectionUrl()));
    socket.binaryType = "arraybuffer";
    let opened = false;
    socket.onopen = () => {
      opened = true;
      if (!this.#session) this.#ready(false, null); // a session is ready at its first frame
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#receive(event.data);
    };
    socket.onclose = (event) => {
      if (socket === this.#socket) this.#socketClosed(event.code, event.reason, opened);
    };
  }

  #connectionUrl() {
    if (!this.#session) return this.#url;
    const url = new URL(this.#url);
    const query = this.#session.connectionQuery(this.state === "reconnecting");
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, String(value));
    return url.href;
  }

  /** The comm carries messages again: a plain socket opened, or a session's first frame came. */
  #ready(resumed, reason) {
    const reconnected = this.state === "reconnecting";
    this.state = "open";
    this.#attempts = 0;
    this.#lastDrop = null;
    if (reconnected) this.reconnects += 1;
    this.dispatchEvent(new CommOpenEvent(reconnected, resumed, reason));
    const first = this.#firstConnection;
    this.#firstConnection = null;
    first?.resolve(this);
  }

  #socketClosed(code, reason, opened) {
    this.#cancelAck();
    const first = this.#firstConnection;
    if (first) {
      // the first connection failed: the browser hides a refused handshake's HTTP status
      this.#firstConnection = null;
      this.state = "closed";
      const why = opened ? `closed (${code}${reason ? `: ${reason}` : ""}) before the session began`
        : "refused: token, origin, kernel or comm?";
      first.reject(new ConnectError(`could not connect to ${redacted(this.#url)} (${why})`));
      return;
    }
    if (!opened && this.#commEndedWithKernel()) {
      this.#finish(CloseCode.NO_SUCH_COMM, "the comm no longer exists: the kernel restarted");
      return;
    }
    this.#dropped(code, reason);
  }

  // A kernel restart ends every comm and every session: an attached session that reconnects
  // finds its comm gone, and the server refuses the handshake (404). A network fault cannot be
  // told from that refusal, but after a restart the comm cannot exist any more.
  #commEndedWithKernel() {
    return this.#session !== null && this.#attached && this.#lastDrop === CloseCode.RESTARTING;
  }

  #dropped(code, reason) {
    const retry = !this.#closing && this.#reconnect && RETRY_CODES.has(code) &&
      this.#attempts < this.#reconnect.maxRetries;
    if (!retry) {
      this.#finish(code, reason);
      return;
    }
    const { initialDelay, maxDelay, factor } = this.#reconnect;
    const delay = Math.min(maxDelay, initialDelay * factor ** this.#attempts) * (0.5 + Math.random() / 2);
    this.#attempts += 1;
    const wasOpen = this.state === "open";
    this.state = "reconnecting";
    if (wasOpen) {
      this.#lastDrop = code;
      this.dispatchEvent(new CommCloseEvent(code, reason, true));
    }
    this.#timer = setTimeout(() => this.#dial(), delay);
  }

  #finish(code, reason) {
    this.state = "closed";
    this.dispatchEvent(new CommCloseEvent(code, reason, false));
  }

  #receive(frame) {
    if (this.#session) {
      this.#receiveOnSession(frame);
      return;
    }
    let data;
    let buffers = [];
    try {
      if (typeof frame !== "string") ({ data, buffers } = unpackBinary(frame));
      else data = this.#frames === "text" ? frame : JSON.parse(frame);
    } catch (error) {
      console.error("jupyter_transports: dropping a frame that cannot be decoded", error);
      return;
    }
    this.dispatchEvent(new CommMessageEvent(data, buffers));
  }

  // -- on a durable session ----------------------------------------------------------------------

  #sendOnSession(data, buffers) {
    if (this.state !== "open" && this.state !== "reconnecting") throw new StateError(`the comm is ${this.state}`);
    const frame = this.#session.number(data, buffers);
    if (this.state === "open") this.#socket.send(frame); // else it goes out when the session resumes
  }

  #receiveOnSession(frame) {
    let fields;
    let buffers;
    try {
      ({ fields, buffers } = decodeSessionFrame(frame));
    } catch (error) {
      console.error("jupyter_transports: dropping a session frame that cannot be decoded", error);
      return;
    }
    if (OUTCOME_KEY in fields && isCount(fields.ack)) this.#greeted(fields);
    else if (this.state !== "open") console.error("jupyter_transports: a session frame before the session's first", fields);
    else if (isCount(fields.seq)) this.#receivedMessage(fields.seq, fields.data, buffers, frameSize(frame), fields.from ?? null);
    else if (isCount(fields.ack)) this.#session.acknowledged(fields.ack);
    else if (isCount(fields.lost)) this.#lostMessages(fields.lost);
    else if (typeof fields.presence === "string") this.#rosterChanged(fields);
    else console.error("jupyter_transports: dropping an unknown session frame", fields);
  }

  /** The first frame of a session connection: go on where the session was, or begin anew. */
  #greeted({ [OUTCOME_KEY]: outcome, reason = null, client, comm_id: commId, ack, window }) {
    // "overflow": the same session lost kernel messages, but not the client's: carry on
    const sameSession = outcome === SessionOutcome.RESUMED || reason === ResetReason.OVERFLOW;
    this.clientId = client;
    this.commId = commId;
    this.#session.window = isCount(window) ? window : Infinity;
    if (sameSession) {
      this.#session.acknowledged(ack);
      for (const frame of this.#session.unackedFrames()) this.#socket.send(frame);
    } else {
      this.#session.restart(); // a new session: what the old one did not hand on is lost
    }
    this.#ready(outcome === SessionOutcome.RESUMED, reason);
  }

  #receivedMessage(seq, data, buffers, size, sender) {
    if (!this.#session.received(seq, size)) {
      console.warn(`jupyter_transports: dropping message ${seq}, received already`);
      return;
    }
    this.#scheduleAck();
    this.dispatchEvent(new CommMessageEvent(data, buffers, sender));
  }

  #rosterChanged(change) {
    if (change.presence === "roster" && Array.isArray(change.clients)) {
      this.roster = new Map(change.clients.map((member) => [member.client, member]));
    } else if (change.presence === "join" && change.client?.client) {
      this.roster.set(change.client.client, change.client);
    } else if (change.presence === "leave") {
      this.roster.delete(change.client);
    }
    this.dispatchEvent(new CommPresenceEvent(change));
  }

  #lostMessages(count) {
    this.lost += count;
    console.warn(`jupyter_transports: ${count} kernel messages on comm ${this.commId} never reached the server`);
    this.dispatchEvent(new CommLostEvent(count));
  }

  #scheduleAck() {
    if (this.#session.ackDue()) this.#sendAck();
    else if (this.#ackTimer === null) this.#ackTimer = setTimeout(() => this.#sendAck(), ACK_IDLE);
  }

  #sendAck() {
    this.#cancelAck();
    if (this.state !== "open") return; // the next connection's `last` says it
    const seq = this.#session.takeAck();
    if (seq !== null) this.#socket.send(`{"ack":${seq}}`);
  }

  #cancelAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
  }
}

// -- RPC ---------------------------------------------------------------------------------------
// The messages are those of jupyter_transports/rpc/__init__.py (its docstring is the reference).

const RPC = "rpc";
const CALL = "call";
const ECHO = "echo";
const PIPE = "pipe";
const RETURN = "return";
const RAISE = "raise";
const BATCH = "batch";
const MESSAGES = "messages";
const BUFFER_PATHS = "buffer_paths";
const MAX_BATCH_MESSAGES = 1000; // bounds a batch's latency and frame size
const MAX_BATCH_BYTES = 1024 * 1024; // of buffers; a batch that reaches this is sent at once

function isBinary(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

function removeBuffers(value) {
  const paths = [];
  const buffers = [];
  const walk = (node, path) => {
    if (isBinary(node)) {
      paths.push(path);
      buffers.push(asBytes(node));
      return null;
    }
    if (Array.isArray(node)) return node.map((item, i) => walk(item, [...path, i]));
    if (node && typeof node === "object" && node.constructor === Object) {
      return Object.fromEntries(Object.entries(node).map(([key, item]) => [key, walk(item, [...path, key])]));
    }
    return node === undefined ? null : node;
  };
  return { value: walk(value, []), paths, buffers };
}

function putBuffers(value, paths = [], buffers = []) {
  paths.forEach((path, i) => {
    let node = value;
    for (const key of path.slice(0, -1)) node = node[key];
    node[path[path.length - 1]] = buffers[i];
  });
}

async function joinStream(stream) {
  if (isBinary(stream)) return asBytes(stream);
  if (typeof Blob !== "undefined" && stream instanceof Blob) return new Uint8Array(await stream.arrayBuffer());
  const chunks = [];
  if (stream && typeof stream.getReader === "function") {
    const reader = stream.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(asBytes(r.value));
  } else if (stream && (Symbol.asyncIterator in stream || Symbol.iterator in stream)) {
    for await (const chunk of stream) chunks.push(asBytes(chunk));
  } else {
    throw new TypeError("a stream must be binary, a Blob, a ReadableStream or an iterable of chunks");
  }
  const joined = new Uint8Array(chunks.reduce((n, chunk) => n + chunk.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return joined;
}

/** Encoded messages as one comm message: a batch, or the message itself when it is alone. */
function packBatch(items) {
  if (items.length === 1) return items[0];
  return { value: { [RPC]: BATCH, [MESSAGES]: items.map((item) => item.value) }, buffers: items.flatMap((item) => item.buffers) };
}

/** The [data, buffers] of each message in one comm message; throws if a batch's buffers do not add up. */
function unpackBatch(data, buffers) {
  if (data?.[RPC] !== BATCH) return [[data, buffers]];
  if (!Array.isArray(data[MESSAGES])) throw new TypeError("a batch needs a list of messages");
  let start = 0;
  const messages = data[MESSAGES].map((message) => {
    const paths = message?.[BUFFER_PATHS];
    const end = start + (Array.isArray(paths) ? paths.length : 0);
    const unpacked = [message, buffers.slice(start, end)];
    start = end;
    return unpacked;
  });
  if (start !== buffers.length) throw new TypeError(`a batch with ${start} buffer paths and ${buffers.length} buffers`);
  return messages;
}

function errorInfo(error) {
  if (error instanceof Error) return { type: error.name || "Error", message: error.message };
  return { type: typeof error, message: String(error) };
}

/**
 * An RPC channel with the kernel's `kernel.Channel` of the same name (jupyter-jchannel's
 * shape): `call`, `callWithStream`, `echo`, `pipe`, and a `handler` whose methods the kernel
 * calls. Binary values (typed arrays, ArrayBuffers) travel as comm buffers; they arrive as
 * Uint8Array. After a dropped socket the channel comes back by itself. On a durable session
 * (the default) the calls in flight carry on across the drop and complete once; they reject with
 * ConnectionLost only if the comm ends or its session is reset (a kernel restart, say: then the
 * kernel has forgotten them; an "overflow": then an answer may have been dropped). On a plain socket
 * (`session: false`) the calls pending at a drop reject with ConnectionLost.
 *
 * Messages made in the same task (say, by `Promise.all` over many calls) leave as one comm
 * message, a batch, flushed by a microtask: no timer, no added latency. `batch: false` sends
 * one comm message per call and per answer.
 */
export class Channel {
  #ids = 0;
  #pending = new Map();
  #batch;
  #queue = [];
  #queuedBytes = 0;
  #scheduled = false;

  /** Open the kernel's channel `name`. Options are those of `Comm.open`, plus handler, timeout, batch. */
  static async open({ name, handler = null, timeout = Infinity, batch = true, ...options } = {}) {
    if (!name) throw new TypeError("Channel.open needs the channel's name");
    const comm = await Comm.open({ ...options, target: name });
    return new Channel(comm, { handler, timeout, batch });
  }

  constructor(comm, { handler = null, timeout = Infinity, batch = true } = {}) {
    /** The comm underneath (its "open" and "close" events tell when the channel drops and returns). */
    this.comm = comm;
    /** The object whose methods the kernel calls (may be replaced at any time). */
    this.handler = handler;
    /** Milliseconds to wait for each answer from the kernel (Infinity: no limit). */
    this.timeout = timeout;
    this.#batch = batch;
    comm.addEventListener("message", (event) => this.#receive(event.data, event.buffers));
    comm.addEventListener("close", (event) => this.#socketClosed(event));
    comm.addEventListener("open", (event) => this.#reopened(event));
  }

  /** The result of the kernel handler's method `name`. */
  call(name, ...args) {
    if (typeof name !== "string") throw new TypeError("the method name must be a string");
    return this.#request(CALL, name, args);
  }

  /** Like `call`, with binary data first (typed array, ArrayBuffer, Blob, ReadableStream, chunks). */
  async callWithStream(name, stream, ...args) {
    return this.#request(CALL, name, [await joinStream(stream), ...args]);
  }

  /** The arguments back from the kernel, as an array (checks that they survive JSON). */
  echo(...args) {
    return this.#request(ECHO, null, args);
  }

  /** Binary data to the kernel and back, as a Uint8Array (checks the binary path). */
  async pipe(stream) {
    return this.#request(PIPE, null, [await joinStream(stream)]);
  }

  /** Close the channel (its comm closes in the kernel). */
  close() {
    this.comm.close();
  }

  #request(kind, name, args) {
    const id = ++this.#ids;
    const message = { [RPC]: kind, id, args };
    if (name !== null) message.name = name;
    return new Promise((resolve, reject) => {
      let timer = null;
      if (Number.isFinite(this.timeout)) {
        timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new TimeoutError(`no answer to ${name ? `'${name}'` : kind} within ${this.timeout} ms`));
        }, this.timeout);
      }
      this.#pending.set(id, { resolve, reject, timer });
      const fail = (error) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(error);
      };
      try {
        this.#post(message, fail);
      } catch (error) {
        fail(error);
      }
    });
  }

  /** Queue one message for the end of this task (or send it now, unbatched or full). */
  #post(message, onError) {
    const { value, paths, buffers } = removeBuffers(message);
    if (paths.length > 0) value[BUFFER_PATHS] = paths;
    const item = { value, buffers, onError };
    if (!this.#batch) {
      this.#deliver([item]);
      return;
    }
    const size = buffers.reduce((n, buffer) => n + buffer.byteLength, 0);
    if (this.#queue.length > 0 && this.#queuedBytes + size > MAX_BATCH_BYTES) this.#flush();
    this.#queue.push(item);
    this.#queuedBytes += size;
    if (this.#queue.length >= MAX_BATCH_MESSAGES || this.#queuedBytes >= MAX_BATCH_BYTES) {
      this.#flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => {
        this.#scheduled = false;
        this.#flush();
      });
    }
  }

  #flush() {
    const queued = this.#queue;
    this.#queue = [];
    this.#queuedBytes = 0;
    if (queued.length > 0) this.#deliver(queued);
  }

  #deliver(items) {
    const { value, buffers } = packBatch(items);
    try {
      this.comm.send(value, buffers);
    } catch (error) {
      // one message JSON cannot encode (a BigInt, a cycle) fails alone, not its whole batch
      if (items.length > 1 && error instanceof TypeError) items.forEach((item) => this.#deliver([item]));
      else items.forEach((item) => item.onError(error));
    }
  }

  #receive(data, buffers) {
    let messages;
    try {
      messages = unpackBatch(data, buffers);
    } catch (error) {
      console.error("jupyter_transports: a malformed RPC batch", error);
      for (const message of Array.isArray(data[MESSAGES]) ? data[MESSAGES] : []) {
        if ([CALL, ECHO, PIPE].includes(message?.[RPC])) this.#reply(message.id, RAISE, errorInfo(error));
      }
      return;
    }
    for (const [message, messageBuffers] of messages) this.#receiveOne(message, messageBuffers);
  }

  #receiveOne(data, buffers) {
    if (!data || typeof data !== "object" || data.id === undefined) return;
    const { [BUFFER_PATHS]: paths, ...message } = data;
    try {
      putBuffers(message, paths, buffers);
    } catch (error) {
      console.error("jupyter_transports: an RPC message with broken buffer paths", error);
      return;
    }
    if (message[RPC] === RETURN || message[RPC] === RAISE) {
      const call = this.#pending.get(message.id);
      if (!call) return;
      this.#pending.delete(message.id);
      clearTimeout(call.timer);
      if (message[RPC] === RETURN) call.resolve(message.result);
      else call.reject(new RemoteError(message.error?.type ?? "Error", message.error?.message ?? ""));
    } else if ([CALL, ECHO, PIPE].includes(message[RPC])) {
      this.#answer(message);
    }
  }

  /** Answer at once when the handler returns a value, so a batch's answers leave together. */
  #answer(message) {
    let result;
    try {
      result = this.#dispatch(message);
    } catch (error) {
      this.#reply(message.id, RAISE, errorInfo(error));
      return;
    }
    if (result !== null && typeof result?.then === "function") {
      result.then(
        (value) => this.#reply(message.id, RETURN, value),
        (error) => this.#reply(message.id, RAISE, errorInfo(error)),
      );
    } else {
      this.#reply(message.id, RETURN, result);
    }
  }

  #reply(id, kind, value) {
    const reply = kind === RETURN ? { [RPC]: RETURN, id, result: value } : { [RPC]: RAISE, id, error: value };
    this.#post(reply, (error) => {
      if (this.comm.state !== "open" || kind === RAISE) return; // the caller sees the client leave
      this.#reply(id, RAISE, errorInfo(error)); // a result JSON cannot encode
    });
  }

  #dispatch({ [RPC]: kind, name, args = [] }) {
    if (kind === ECHO) return args;
    if (kind === PIPE) return args[0];
    const handler = this.handler;
    if (handler === null || typeof handler !== "object") throw new Error("this channel has no handler");
    const method = name.startsWith("_") || name === "constructor" ? undefined : handler[name];
    if (typeof method !== "function") throw new Error(`the handler has no method '${name}'`);
    return method.apply(handler, args);
  }

  #socketClosed({ code, reconnecting }) {
    if (reconnecting && this.comm.durable) return; // the session resumes what was in flight
    const why = reconnecting ? "dropped" : "closed";
    this.#failAll(new ConnectionLost(`the channel's socket ${why} (${code}) before the answer came`));
  }

  #reopened({ reconnected, resumed, reason }) {
    // A reset session is a new client on the kernel's side: the calls it had are forgotten.
    // Any reset, "overflow" included, may have lost an answer: which, nobody can tell.
    if (!this.comm.durable || !reconnected || resumed) return;
    this.#failAll(new ConnectionLost(`the channel's session was reset (${reason ?? "new"}) before the answer came`));
  }

  #failAll(error) {
    for (const { reject, timer } of this.#pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.#pending.clear();
  }
}
