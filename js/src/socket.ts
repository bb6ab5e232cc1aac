// One multiplexed WebSocket per page, a durable session (docs/CONTRACT.md, v2, "Durable sessions
// on a multiplexed socket"): it follows the kernel's widget comms and hands each frame to the
// comm it names. Frames for a comm nobody has claimed yet are dropped: the manager claims a comm
// when it loads the comm's model from a state snapshot, which is newer than them.
//
// A connection that drops (no close frame: 1006; a server's close without a code: 1005; too
// slow: 1013) comes back by itself, with backoff, until the server answers:
// - `resumed`: the frames the page sent and the server had not carried out go again (same
//   numbers, the server drops repeats), and the frames the page missed follow the hello;
// - `reset` / `overflow`: the same, but frames for the page were lost: `onResync` asks the
//   kernel for the models' state again, and the comms the hello no longer lists are closed;
// - any other `reset` (the session expired, the kernel restarted…): the page's models belong to
//   a session that is over; the socket closes (`resetReason` says why), as on any other close.
// Frames sent while the socket reconnects wait, numbered, and go out once it is back.

import { decodeFrame, type Buffers, type Frame, type Outgoing } from "./frames";
import {
  ACK_IDLE_MS,
  OVERFLOW,
  SessionState,
  frameSize,
  type Outcome,
  type ResetReason,
} from "./session";

export type CommInfo = { comm_id: string; target_name: string };
export type Hello = {
  client: string;
  can_send: boolean;
  comms: CommInfo[];
  session: Outcome;
  reason?: ResetReason;
  ack: number;
  window: number;
};
export type Status = "connecting" | "open" | "reconnecting" | "closed";

export interface CommHandler {
  /** A frame about this comm: `msg`, `open`, `attached`, `lost` or `close`. */
  receive(frame: Frame, buffers: Buffers): void;
  /** Frames for this comm may have been lost (a `reset` / `overflow`): its state comes again. */
  resync?(): void;
}

export type SocketOptions = {
  server: string; // the Jupyter server's base URL, e.g. "http://localhost:8888/"
  kernelId: string;
  token?: string;
  follow: string[]; // comm targets: every comm of these is on the socket
  query?: Record<string, string>; // more query parameters (they reach the kernel)
};

// Close codes after which the session waits for the page: the network failed (no close frame,
// or the keep-alive's close without a code), or the page fell behind. Every other code ends it.
const NO_STATUS = 1005;
const ABNORMAL = 1006;
const TOO_SLOW = 1013;
const RESUMABLE = new Set([NO_STATUS, ABNORMAL, TOO_SLOW]);
const NORMAL = 1000; // the code the page ends its session with
const GONE = "the comm closed while the page was away";
const FIRST_DELAY_MS = 250; // before the first attempt to reconnect, doubling up to:
const MAX_DELAY_MS = 5_000;

export class MuxSocket extends EventTarget {
  readonly url: string; // without the session's parameters
  /** The first connection's hello. */
  readonly hello: Promise<Hello>;
  status: Status = "connecting";
  closeCode: number | null = null;
  closeReason = "";
  /** Why the latest connection could not resume (a `reset`), or null. */
  resetReason: ResetReason | null = null;
  /** Connections that came back after a drop. */
  reconnects = 0;
  /** Called for an `open` frame (a comm the kernel opened on a followed target). */
  onOpen: (frame: Frame, buffers: Buffers) => void = () => {};
  /** Called after a `reset` / `overflow`: the models' state must come again. */
  onResync: (hello: Hello) => void = () => {};
  private readonly session = new SessionState();
  private readonly comms = new Map<string, CommHandler>();
  private socket: WebSocket | null = null;
  private attempts = 0; // to reconnect, since the last hello
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private greet!: { resolve: (hello: Hello) => void; reject: (error: Error) => void };

  constructor(options: SocketOptions) {
    super();
    this.url = socketUrl(options);
    this.hello = new Promise((resolve, reject) => (this.greet = { resolve, reject }));
    this.hello.catch(() => {}); // connect() reports it; an unobserved rejection is noise
    this.dial();
  }

  /** Whether the socket is connected and its session going. */
  get open(): boolean {
    return this.status === "open";
  }

  /** Whether a frame sent now reaches the kernel (now, or once the socket is back). */
  get sending(): boolean {
    return this.status === "open" || this.status === "reconnecting";
  }

  /** Route this comm's frames to `handler` from now on. */
  claim(commId: string, handler: CommHandler): void {
    this.comms.set(commId, handler);
  }

  release(commId: string): void {
    this.comms.delete(commId);
  }

  /** Send a frame: at once if open, after the resume if reconnecting. */
  send(frame: Frame, buffers: Outgoing[] = []): void {
    if (!this.sending) throw new Error(`the widgets socket is ${this.status}: cannot send`);
    const { wire } = this.session.number(frame, buffers);
    if (this.open) this.socket!.send(wire);
  }

  /** End the session (close code 1000). Reconnecting, there is no connection to say it on:
   * the server forgets the session after its `session_timeout`. */
  close(): void {
    this.finish(NORMAL, "closed by the page");
  }

  // -- connections -----------------------------------------------------------------------------

  private dial(): void {
    const url = new URL(this.url);
    for (const [name, value] of Object.entries(this.session.connectionQuery())) {
      url.searchParams.set(name, value);
    }
    const socket = new WebSocket(url.href);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", ({ data }) => {
      if (socket === this.socket) this.received(data);
    });
    socket.addEventListener("close", (event) => {
      if (socket === this.socket) this.dropped(event);
    });
    this.socket = socket;
  }

  private greeted(hello: Hello): void {
    const first = this.status === "connecting";
    this.resetReason = hello.session === "reset" ? (hello.reason ?? null) : null;
    if (!first && hello.session === "reset" && hello.reason !== OVERFLOW) {
      // A new session: what the page holds belongs to the one that ended.
      this.finish(NORMAL, `the session could not resume (${hello.reason})`);
      return;
    }
    this.attempts = 0;
    for (const { wire } of this.session.greeted(hello)) this.socket!.send(wire);
    if (!first) this.reconnects += 1;
    this.setStatus("open");
    if (first) this.greet.resolve(hello);
    else if (hello.session === "reset") this.resync(hello);
  }

  private dropped({ code, reason }: CloseEvent): void {
    this.socket = null;
    this.cancelAck();
    if (this.status === "connecting" || !RESUMABLE.has(code)) {
      this.finish(code, reason);
      return;
    }
    if (this.status === "open") this.setStatus("reconnecting");
    const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempts);
    this.attempts += 1;
    this.retryTimer = setTimeout(() => this.dial(), delay * (0.5 + Math.random() / 2));
  }

  /** Closed for good, with `code` (the session ends, if the connection is still there). */
  private finish(code: number, reason: string): void {
    if (this.status === "closed") return;
    clearTimeout(this.retryTimer);
    this.cancelAck();
    const socket = this.socket;
    this.socket = null;
    if (socket !== null && socket.readyState <= WebSocket.OPEN) socket.close(NORMAL, reason);
    const first = this.status === "connecting";
    this.closeCode = code;
    this.closeReason = reason;
    this.setStatus("closed");
    if (first) {
      const why = describe({ code, reason });
      this.greet.reject(new Error(`the widgets socket closed before its hello (${why})`));
    }
    // The comms stay claimed: their models live on, shown disconnected (see Widgets).
  }

  // A `reset` / `overflow`: frames for the page were lost. A comm the hello no longer lists
  // (and that no frame of the page is opening) closed meanwhile; the others' state comes again.
  private resync(hello: Hello): void {
    const listed = new Set(hello.comms.map(({ comm_id }) => comm_id));
    const opening = this.session.opening();
    for (const [commId, comm] of [...this.comms]) {
      if (listed.has(commId) || opening.has(commId)) comm.resync?.();
      else this.dispatch({ type: "close", comm_id: commId, code: NORMAL, reason: GONE }, []);
    }
    this.onResync(hello);
  }

  // -- frames ----------------------------------------------------------------------------------

  private received(data: string | ArrayBuffer): void {
    const { frame, buffers } = decodeFrame(data);
    if (frame.type === "hello") return this.greeted(frame as unknown as Hello);
    if (frame.type === "ack") return this.session.acknowledged(frame.seq as number);
    if (typeof frame.seq === "number") {
      if (!this.session.received(frame.seq, frameSize(data))) {
        console.warn(`widgets: frame ${frame.seq} received already: dropped`);
        return;
      }
      this.scheduleAck();
    }
    this.dispatch(frame, buffers);
  }

  private dispatch(frame: Frame, buffers: Buffers): void {
    if (frame.type === "open") return this.onOpen(frame, buffers);
    const comm = frame.comm_id === undefined ? undefined : this.comms.get(frame.comm_id);
    if (comm === undefined) return; // not claimed: older than the state the manager will load
    if (frame.type === "close") this.comms.delete(frame.comm_id as string);
    comm.receive(frame, buffers);
  }

  private scheduleAck(): void {
    if (this.session.ackDue()) this.sendAck();
    else this.ackTimer ??= setTimeout(() => this.sendAck(), ACK_IDLE_MS);
  }

  private sendAck(): void {
    this.cancelAck();
    if (!this.open) return; // the next connection's `last` says it
    const seq = this.session.takeAck();
    if (seq !== null) this.socket!.send(JSON.stringify({ type: "ack", seq }));
  }

  private cancelAck(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
  }

  private setStatus(status: Status): void {
    this.status = status;
    this.dispatchEvent(new Event("status"));
  }
}

function socketUrl({ server, kernelId, token, follow, query = {} }: SocketOptions): string {
  const url = new URL(`api/transports/kernels/${encodeURIComponent(kernelId)}/comms`, server);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const target of follow) url.searchParams.append("follow", target);
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  if (token) url.searchParams.set("token", token);
  return url.href;
}

export function describe({ code, reason }: { code: number; reason: string }): string {
  return reason ? `${code}: ${reason}` : `${code}`;
}
