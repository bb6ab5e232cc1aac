// Types of transports.js, the jupyter_transports browser client.

/** The WebSocket close codes of the contract. */
export declare const CloseCode: Readonly<{
  COMM_CLOSED: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  NO_STATUS: 1005;
  ABNORMAL: 1006;
  BAD_FRAME: 1007;
  READ_ONLY: 1008;
  TOO_BIG: 1009;
  BRIDGE_FAILED: 1011;
  RESTARTING: 1012;
  TOO_SLOW: 1013;
  NO_SUCH_COMM: 4404;
  REPLACED: 4409;
}>;

/** The first frame of a durable session's connection. */
export declare const SessionOutcome: Readonly<{ NEW: "new"; RESUMED: "resumed"; RESET: "reset" }>;
/** Why a session could not resume (`CommOpenEvent.reason`). */
export declare const ResetReason: Readonly<{
  UNKNOWN: "unknown";
  EXPIRED: "expired";
  OVERFLOW: "overflow";
  KERNEL_RESTARTED: "kernel_restarted";
  CLOSED: "closed";
}>;
export type ResetReasonName = (typeof ResetReason)[keyof typeof ResetReason];

/** The server the module was loaded from (`{base_url}`). */
export declare const defaultBaseUrl: string;

export declare class TransportsError extends Error {}
/** The WebSocket could not be opened (token, origin, kernel or comm: the browser hides which). */
export declare class ConnectError extends TransportsError {}
/** The socket is not open (closed; or reconnecting, on a plain socket). */
export declare class StateError extends TransportsError {}
/** The socket closed, or its session was reset, before the answer to a call came. */
export declare class ConnectionLost extends TransportsError {}
/** No answer within the call's timeout. */
export declare class TimeoutError extends TransportsError {}
/** The kernel raised while answering: `type` is the Python exception's class name. */
export declare class RemoteError extends TransportsError {
  constructor(type: string, message: string);
  readonly type: string;
  readonly remoteMessage: string;
}

export type Binary = ArrayBuffer | ArrayBufferView;
export type Stream = Binary | Blob | ReadableStream<Binary> | Iterable<Binary> | AsyncIterable<Binary>;
export type FrameMode = "json" | "text";

export interface ReconnectOptions {
  /** ms before the first attempt (default 250). */
  initialDelay?: number;
  /** ms, the longest wait between attempts (default 10000). */
  maxDelay?: number;
  /** growth of the wait per attempt (default 2). */
  factor?: number;
  /** attempts in a row before giving up (default 20). */
  maxRetries?: number;
}

export interface ConnectOptions {
  kernelId: string;
  /** The server's base URL (http(s) or ws(s)); default: the server this module came from. */
  baseUrl?: string;
  /** Jupyter's token, sent as `?token=`; omit to use the login cookie. */
  token?: string;
  /** Extra query parameters; the kernel sees them in the comm_open metadata. */
  query?: Record<string, string | number | boolean>;
  /** "text" uses a plain socket (no session): a session's frames are JSON objects. */
  frames?: FrameMode;
  /** Reconnect after a dropped socket (default true). */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Ride a durable session (default true): after a drop the comm resumes with nothing lost or
   * repeated. false: a plain v1 socket, as before sessions.
   */
  session?: boolean;
}

export interface OpenOptions extends ConnectOptions {
  target: string;
  /** The comm_open's data (a JSON object). */
  data?: Record<string, unknown>;
}

export interface AttachOptions extends ConnectOptions {
  commId: string;
}

export declare class CommMessageEvent extends Event {
  readonly type: "message";
  readonly data: any;
  readonly buffers: Uint8Array[];
  /** The client that sent it, when the server relayed it (a comm with echo on); else null. */
  readonly sender: string | null;
}

/** One client on a comm, as the roster shows it. */
export interface Member {
  client: string;
  user: string;
  name: string;
  initials: string | null;
  color: string | null;
  role: "editor" | "observer";
}

/** Who is on the comm changed (sessions with `query: { presence: "1" }`). */
export declare class CommPresenceEvent extends Event {
  readonly type: "presence";
  readonly change:
    | { presence: "roster"; clients: Member[] }
    | { presence: "join"; client: Member }
    | { presence: "leave"; client: string };
}

export declare class CommCloseEvent extends Event {
  readonly type: "close";
  readonly code: number;
  readonly reason: string;
  /** True when the comm is trying to come back. */
  readonly reconnecting: boolean;
}

export declare class CommOpenEvent extends Event {
  readonly type: "open";
  /** True after a drop. */
  readonly reconnected: boolean;
  /** True when the session went on where it was: nothing lost, nothing repeated. */
  readonly resumed: boolean;
  /**
   * Why the session was reset (the application should resynchronise its state), else null.
   * "overflow": the same session, but kernel messages were lost; any other: a new session (on
   * `Comm.open`, a new comm) whose unacknowledged messages were dropped. Always null on a plain socket.
   */
  readonly reason: ResetReasonName | null;
}

/** Kernel messages on the comm never reached the server (durable sessions only): resynchronise. */
export declare class CommLostEvent extends Event {
  readonly type: "lost";
  readonly count: number;
}

interface CommEventMap {
  open: CommOpenEvent;
  message: CommMessageEvent;
  close: CommCloseEvent;
  lost: CommLostEvent;
  presence: CommPresenceEvent;
}

/**
 * One kernel comm over one WebSocket, reconnecting with backoff after a drop. On a durable session
 * (the default) it comes back as the same comm, nothing lost or repeated; after a kernel restart
 * a `Comm.open` comm opens a new comm to its target by itself ("open" with reason
 * "kernel_restarted") and an attached comm closes with 4404. On a plain socket a `Comm.open`
 * comm reopens a new comm after a drop.
 */
export declare class Comm extends EventTarget {
  static open(options: OpenOptions): Promise<Comm>;
  static attach(options: AttachOptions): Promise<Comm>;
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly reconnects: number;
  /** The server's id of this client (`metadata.transports.client` in the kernel); null on a plain socket. */
  readonly clientId: string | null;
  /** The comm's id (from the session; on a plain socket only for `Comm.attach`). */
  readonly commId: string | null;
  /** Whether the comm rides a durable session. */
  readonly durable: boolean;
  /** How many kernel messages on the comm the server said never reached it ("lost" events). */
  readonly lost: number;
  /** Who is on the comm, by client id (sessions with `query: { presence: "1" }`). */
  readonly roster: Map<string, Member>;
  /** On a session, a message sent while reconnecting waits and goes out when the comm is back. */
  send(data: any, buffers?: Binary[]): void;
  /** Close for good; a session ends at the close frame (if closed while reconnecting: when it expires). */
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof CommEventMap>(
    type: K,
    listener: (this: Comm, event: CommEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof CommEventMap>(
    type: K,
    listener: (this: Comm, event: CommEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

export interface ChannelOptions extends ConnectOptions {
  /** The channel's name (the kernel-side `Channel`'s comm target). */
  name: string;
  handler?: object | null;
  /** ms to wait for each answer (default Infinity). */
  timeout?: number;
  /** Send the messages of one task as one comm message (default true); false: one per call. */
  batch?: boolean;
}

/**
 * An RPC channel. On a durable session the calls in flight complete once across drops, and
 * reject with ConnectionLost only when the comm ends or its session is reset (any reason);
 * on a plain socket they reject at every drop.
 */
export declare class Channel {
  static open(options: ChannelOptions): Promise<Channel>;
  constructor(comm: Comm, options?: { handler?: object | null; timeout?: number; batch?: boolean });
  readonly comm: Comm;
  handler: object | null;
  timeout: number;
  call<T = any>(name: string, ...args: any[]): Promise<T>;
  callWithStream<T = any>(name: string, stream: Stream, ...args: any[]): Promise<T>;
  echo(...args: any[]): Promise<any[]>;
  pipe(stream: Stream): Promise<Uint8Array>;
  close(): void;
}

export declare function packBinary(data: any, buffers: Binary[]): ArrayBuffer;
export declare function unpackBinary(frame: ArrayBuffer): { data: any; buffers: Uint8Array[] };
