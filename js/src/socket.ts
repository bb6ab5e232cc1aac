// One multiplexed WebSocket per page: it follows the kernel's widget comms and hands each frame
// to the comm it names. Frames for a comm nobody has claimed yet are dropped: the manager claims
// a comm when it loads the comm's model from a state snapshot, which is newer than them.

import { decodeFrame, encodeFrame, type Buffers, type Frame, type Outgoing } from "./frames";

export type CommInfo = { comm_id: string; target_name: string };
export type Hello = { client: string; can_send: boolean; comms: CommInfo[] };
export type Status = "connecting" | "open" | "closed";

export interface CommHandler {
  /** A frame about this comm: `msg`, `open`, `attached`, `lost` or `close`. */
  receive(frame: Frame, buffers: Buffers): void;
}

export type SocketOptions = {
  server: string; // the Jupyter server's base URL, e.g. "http://localhost:8888/"
  kernelId: string;
  token?: string;
  follow: string[]; // comm targets: every comm of these is on the socket
  query?: Record<string, string>; // more query parameters (they reach the kernel)
};

export class MuxSocket extends EventTarget {
  readonly url: string;
  readonly hello: Promise<Hello>;
  status: Status = "connecting";
  closeCode: number | null = null;
  closeReason = "";
  /** Called for an `open` frame (a comm the kernel opened on a followed target). */
  onOpen: (frame: Frame, buffers: Buffers) => void = () => {};
  private readonly socket: WebSocket;
  private readonly comms = new Map<string, CommHandler>();

  constructor(options: SocketOptions) {
    super();
    this.url = socketUrl(options);
    this.socket = new WebSocket(this.url);
    this.socket.binaryType = "arraybuffer";
    this.hello = new Promise((resolve, reject) => {
      this.socket.addEventListener("message", ({ data }) => {
        const { frame, buffers } = decodeFrame(data);
        if (frame.type === "hello") {
          this.setStatus("open");
          resolve(frame as unknown as Hello);
        } else this.dispatch(frame, buffers);
      });
      this.socket.addEventListener("close", (event) => {
        this.closeCode = event.code;
        this.closeReason = event.reason;
        this.setStatus("closed");
        reject(new Error(`the widgets socket closed before its hello (${describe(event)})`));
        // The comms stay claimed: their models live on, shown disconnected (see Widgets).
      });
    });
    this.hello.catch(() => {}); // connect() reports it; an unobserved rejection is noise
  }

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  /** Route this comm's frames to `handler` from now on. */
  claim(commId: string, handler: CommHandler): void {
    this.comms.set(commId, handler);
  }

  release(commId: string): void {
    this.comms.delete(commId);
  }

  send(frame: Frame, buffers: Outgoing[] = []): void {
    if (!this.open) throw new Error(`the widgets socket is ${this.status}: cannot send`);
    this.socket.send(encodeFrame(frame, buffers));
  }

  close(): void {
    this.socket.close(1000, "closed by the page");
  }

  private dispatch(frame: Frame, buffers: Buffers): void {
    if (frame.type === "open") return this.onOpen(frame, buffers);
    const comm = frame.comm_id === undefined ? undefined : this.comms.get(frame.comm_id);
    if (comm === undefined) return; // not claimed: older than the state the manager will load
    if (frame.type === "close") this.comms.delete(frame.comm_id as string);
    comm.receive(frame, buffers);
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
