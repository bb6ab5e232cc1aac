// Types of transports.js, the jupyter_transports browser client.

/** The WebSocket close codes of the contract. */
export declare const CloseCode: Readonly<{
  COMM_CLOSED: 1000;
  GOING_AWAY: 1001;
  NO_STATUS: 1005;
  ABNORMAL: 1006;
  BAD_FRAME: 1007;
  READ_ONLY: 1008;
  TOO_BIG: 1009;
  BRIDGE_FAILED: 1011;
  RESTARTING: 1012;
  TOO_SLOW: 1013;
  NO_SUCH_COMM: 4404;
}>;

/** The server the module was loaded from (`{base_url}`). */
export declare const defaultBaseUrl: string;

export declare class TransportsError extends Error {}
/** The WebSocket could not be opened (token, origin, kernel or comm: the browser hides which). */
export declare class ConnectError extends TransportsError {}
/** The socket is not open. */
export declare class StateError extends TransportsError {}
/** The socket closed before the answer to a call came. */
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
  frames?: FrameMode;
  /** Reconnect after a dropped socket (default true). */
  reconnect?: boolean | ReconnectOptions;
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
  readonly reconnected: boolean;
}

interface CommEventMap {
  open: CommOpenEvent;
  message: CommMessageEvent;
  close: CommCloseEvent;
}

export declare class Comm extends EventTarget {
  static open(options: OpenOptions): Promise<Comm>;
  static attach(options: AttachOptions): Promise<Comm>;
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly reconnects: number;
  send(data: any, buffers?: Binary[]): void;
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
