// A comm of the multiplexed socket, shaped as the `IClassicComm` that @jupyter-widgets/base's
// models talk to (the shim JupyterLab builds over a kernel connection).

import type { Buffers, Frame, Outgoing } from "./frames";
import type { CommHandler, MuxSocket } from "./socket";

type Callbacks = { iopub?: { status?: (msg: unknown) => void } };
type Message = {
  header: { msg_id: string; msg_type: string };
  parent_header?: undefined;
  content: { comm_id: string; data: any };
  metadata: Record<string, unknown>;
  buffers: DataView[];
};

let counter = 0;

export class MuxComm implements CommHandler {
  readonly comm_id: string;
  readonly target_name: string;
  private readonly socket: MuxSocket;
  private readonly canSend: () => boolean;
  private onMsg: ((msg: Message) => void) | null = null;
  private readonly onClose: ((msg: Message) => void)[] = [];
  private queue: Message[] = []; // what came before the model listened
  private closed = false;
  // Attributes this page sent whose echo has not come back yet (see `echoed`).
  private readonly inFlight = new Map<string, number>();

  constructor(socket: MuxSocket, commId: string, targetName: string, canSend: () => boolean) {
    this.socket = socket;
    this.comm_id = commId;
    this.target_name = targetName;
    this.canSend = canSend;
    socket.claim(commId, this);
  }

  /** Open the comm in the kernel (an `open` frame): for comms the page creates. */
  open(data: any, callbacks?: Callbacks, metadata?: any, buffers?: Outgoing[]): string {
    const frame = { type: "open", comm_id: this.comm_id, target_name: this.target_name, data };
    return this.write({ ...frame, metadata: metadata ?? {} }, buffers, callbacks);
  }

  send(data: any, callbacks?: Callbacks, _metadata?: any, buffers?: Outgoing[]): string {
    if (data?.method === "update" && this.canSend() && this.socket.sending) {
      for (const name of Object.keys(data.state ?? {})) {
        this.inFlight.set(name, (this.inFlight.get(name) ?? 0) + 1);
      }
    }
    return this.write({ type: "msg", comm_id: this.comm_id, data }, buffers, callbacks);
  }

  close(): string {
    if (this.closed) return "";
    const id = this.write({ type: "close", comm_id: this.comm_id });
    this.closed = true;
    return id;
  }

  on_msg(callback: (msg: Message) => void): void {
    this.onMsg = callback;
    const queued = this.queue;
    this.queue = [];
    for (const msg of queued) callback(msg);
  }

  on_close(callback: (msg: Message) => void): void {
    this.onClose.push(callback);
  }

  receive(frame: Frame, buffers: Buffers): void {
    if (frame.type === "msg") {
      const data = frame.data as any;
      if (data?.method === "echo_update") this.echoed(data);
      this.deliver(this.message("comm_msg", data, buffers));
    } else if (frame.type === "close") {
      this.closed = true;
      this.socket.release(this.comm_id);
      const msg = this.message("comm_close", {}, []);
      for (const callback of this.onClose) callback(msg);
    } else if (frame.type === "lost") {
      console.warn(`widgets: ${frame.count} kernel messages on comm ${this.comm_id} were lost`);
    }
  }

  /** Frames for this comm were lost (the session's `reset` / `overflow`), the echoes of this
   * page's updates perhaps among them: stop waiting for them (the model's state comes again). */
  resync(): void {
    this.inFlight.clear();
  }

  /** A message as the kernel's comm messages look to the widget models (no parent header). */
  message(msgType: string, data: any, buffers: DataView[]): Message {
    const header = { msg_id: nextId(), msg_type: msgType };
    return { header, content: { comm_id: this.comm_id, data }, metadata: {}, buffers };
  }

  deliver(msg: Message): void {
    if (this.onMsg === null) this.queue.push(msg);
    else this.onMsg(msg);
  }

  // ipywidgets' kernel answers each update with an `echo_update` to every client. JupyterLab
  // tells its own echo from others' by the parent header, which the socket does not carry; here
  // an attribute's echo is skipped while this page has later updates of it in flight. The kernel
  // answers in order, so the echo of the page's last update is the attribute's value in the
  // kernel then: it applies (as in JupyterLab), which undoes a kernel update that came between
  // (after a reconnection, the kernel's changes made while the page was away do).
  private echoed(data: { state?: Record<string, unknown> }): void {
    for (const name of Object.keys(data.state ?? {})) {
      const pending = this.inFlight.get(name) ?? 0;
      if (pending === 0) continue;
      if (pending === 1) {
        this.inFlight.delete(name);
      } else {
        this.inFlight.set(name, pending - 1);
        delete data.state?.[name];
      }
    }
  }

  private write(frame: Frame, buffers: Outgoing[] = [], callbacks?: Callbacks): string {
    const id = nextId();
    if (this.closed) return id;
    if (!this.canSend()) {
      // a read-only page never sends: the server would close the whole socket (1008)
      console.warn(`widgets: read-only, not sending a ${frame.type} frame on ${this.comm_id}`);
    } else if (this.socket.sending) {
      this.socket.send(frame, buffers); // while reconnecting, it goes once the socket is back
    }
    // The models' throttle waits for the kernel's "idle" status, which only a kernel connection
    // carries: report it at once (after the caller counted the message) and let the server pace.
    const status = callbacks?.iopub?.status;
    if (status) queueMicrotask(() => status({ content: { execution_state: "idle" } }));
    return id;
  }
}

function nextId(): string {
  counter += 1;
  return `jupyter-transports-widgets-${counter}`;
}
