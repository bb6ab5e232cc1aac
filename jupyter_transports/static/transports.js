// jupyter_transports browser client: kernel comms and RPC channels over the server's WebSockets.
//
// An ES module with no dependencies and no build step. The server serves it at
// `{base_url}static/jupyter_transports/transports.js`; a page on another origin may import it from
// there when `ServerApp.allow_origin` allows that origin (the server then sends CORS headers).
//
//   import { Comm, Channel } from "http://localhost:8888/static/jupyter_transports/transports.js";
//   const comm = await Comm.open({ kernelId, target: "echo", token });
//   comm.addEventListener("message", (e) => console.log(e.data, e.buffers));
//   comm.send({ hello: "kernel" }, [new Uint8Array([1, 2, 3])]);
//
// The wire format is the one in the project's CONTRACT.md: a text frame is one message's JSON
// `data`; a message with buffers is one binary frame (big-endian uint32 part count, uint32
// offsets, then part 0 = UTF-8 JSON of `data` and parts 1.. = the buffers).

const API_PATH = "api/transports/kernels";
const TOKEN_PARAM = "token";
const DATA_PARAM = "data";
const FRAMES_PARAM = "frames";

/** The WebSocket close codes of the contract. */
export const CloseCode = Object.freeze({
  COMM_CLOSED: 1000,
  GOING_AWAY: 1001,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  BAD_FRAME: 1007,
  READ_ONLY: 1008,
  TOO_BIG: 1009,
  BRIDGE_FAILED: 1011,
  RESTARTING: 1012,
  TOO_SLOW: 1013,
  NO_SUCH_COMM: 4404,
});

// A socket closed with one of these may come back: it dropped, the bridge failed, the kernel is
// restarting, or the client fell behind. Every other code is an answer (the comm was closed, the
// kernel refused it, the client may not send...) and reconnecting would not change it.
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

/** The socket is not open (closed, or reconnecting). */
export class StateError extends TransportsError {}

/** The socket closed before the answer to a call came. */
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
  const parts = [encoder.encode(JSON.stringify(data)), ...buffers.map(asBytes)];
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

// -- events ------------------------------------------------------------------------------------

/** A comm message: `data` (JSON value, or text with frames "text") and `buffers` (Uint8Array[]). */
export class CommMessageEvent extends Event {
  constructor(data, buffers) {
    super("message");
    this.data = data;
    this.buffers = buffers;
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

/** The socket opened; `reconnected` is true after a drop. */
export class CommOpenEvent extends Event {
  constructor(reconnected) {
    super("open");
    this.reconnected = reconnected;
  }
}

// -- one comm ----------------------------------------------------------------------------------

/**
 * One kernel comm over one WebSocket, reconnecting with backoff after the socket drops.
 *
 * Events: "open" (CommOpenEvent), "message" (CommMessageEvent), "close" (CommCloseEvent).
 * A comm opened with `Comm.open` reopens a new comm to the same target after a drop (the kernel
 * sees a new client); one from `Comm.attach` attaches to the same comm again.
 */
export class Comm extends EventTarget {
  #url;
  #frames;
  #reconnect;
  #socket = null;
  #closing = false;
  #attempts = 0;
  #timer = null;

  /** Open a new comm to `target` in the kernel; resolves once the socket is open. */
  static open({ kernelId, target, baseUrl, token, data, query, frames, reconnect } = {}) {
    if (!kernelId || !target) throw new TypeError("Comm.open needs a kernelId and a target");
    const url = socketUrl(baseUrl, kernelId, "targets", target, { token, query, data, frames });
    return new Comm(url, { frames, reconnect }).#connected();
  }

  /** Attach to an existing comm of the kernel (a widget's, another client's...). */
  static attach({ kernelId, commId, baseUrl, token, query, frames, reconnect } = {}) {
    if (!kernelId || !commId) throw new TypeError("Comm.attach needs a kernelId and a commId");
    const url = socketUrl(baseUrl, kernelId, "comms", commId, { token, query, frames });
    return new Comm(url, { frames, reconnect }).#connected();
  }

  constructor(url, { frames = "json", reconnect = true } = {}) {
    super();
    this.#url = url;
    this.#frames = frames;
    this.#reconnect = reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(reconnect === true ? {} : reconnect) };
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  state = "connecting";

  /** How many times the socket came back after a drop. */
  reconnects = 0;

  /** Send one comm message: `data` as JSON (or as text with frames "text"), `buffers` as binary. */
  send(data, buffers = []) {
    if (this.state !== "open") throw new StateError(`the comm is ${this.state}`);
    if (buffers.length > 0) this.#socket.send(packBinary(data, buffers));
    else if (this.#frames === "text" && typeof data === "string") this.#socket.send(data);
    else this.#socket.send(JSON.stringify(data));
  }

  /** Close the socket for good (a comm this client opened closes in the kernel too). */
  close(code = CloseCode.COMM_CLOSED, reason = "") {
    this.#closing = true;
    clearTimeout(this.#timer);
    if (this.#socket && this.#socket.readyState <= WebSocket.OPEN) this.#socket.close(code, reason);
    else if (this.state !== "closed") this.#finish(code, reason);
  }

  #connected() {
    return new Promise((resolve, reject) => {
      this.#dial(resolve, reject);
    });
  }

  #dial(resolve, reject) {
    const socket = (this.#socket = new WebSocket(this.#url));
    socket.binaryType = "arraybuffer";
    let opened = false;
    socket.onopen = () => {
      opened = true;
      const reconnected = this.state === "reconnecting";
      this.state = "open";
      this.#attempts = 0;
      if (reconnected) this.reconnects += 1;
      this.dispatchEvent(new CommOpenEvent(reconnected));
      resolve?.(this);
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => {
      if (socket !== this.#socket) return;
      if (!opened && resolve) {
        // the first handshake failed: the browser hides the HTTP status, so name the suspects
        this.state = "closed";
        reject(new ConnectError(`could not connect to ${this.#url.replace(/token=[^&]*/, "token=…")} ` +
          "(refused: token, origin, kernel or comm?)"));
        return;
      }
      this.#dropped(event.code, event.reason);
    };
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
    if (wasOpen) this.dispatchEvent(new CommCloseEvent(code, reason, true));
    this.#timer = setTimeout(() => this.#dial(null, null), delay);
  }

  #finish(code, reason) {
    this.state = "closed";
    this.dispatchEvent(new CommCloseEvent(code, reason, false));
  }

  #receive(frame) {
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
 * Uint8Array. After a dropped socket the channel comes back by itself; calls pending at the
 * drop reject with ConnectionLost.
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
    comm.addEventListener("close", (event) => {
      const why = event.reconnecting ? "dropped" : "closed";
      this.#failAll(new ConnectionLost(`the channel's socket ${why} (${event.code}) before the answer came`));
    });
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

  #failAll(error) {
    for (const { reject, timer } of this.#pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.#pending.clear();
  }
}
