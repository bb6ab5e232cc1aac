// A durable session on the multiplexed socket, as its client keeps it (docs/CONTRACT.md, v2,
// "Durable sessions on a multiplexed socket"): pure, no I/O, the page's half of
// jupyter_transports/session.py's ClientSession. The socket (socket.ts) does the I/O.
//
// Rules, in plain words:
// 1. The session's key is 16 random bytes as URL-safe base64 (22 characters): a secret that only
//    travels in the connections' URLs.
// 2. Every frame the page sends but `ack` gets the next number (1, 2, 3… across connections) and
//    is kept, encoded, until the server's `ack` (or a connection's hello) says it was carried out.
//    A resume writes the kept frames again, in order, under the same numbers: the server drops
//    those it carried out already, so each reaches the kernel once.
// 3. Every frame the server sends but `hello` and `ack` has a `seq`, one more each time; the
//    highest one received is `last`, the next connection's `?last=`.
// 4. The page acknowledges (`{"type":"ack","seq":last}`) once the frames received since its last
//    acknowledgement hold a quarter of the server's window, and ACK_IDLE_MS after a frame not
//    acknowledged at the latest; a connection's `last` acknowledges too.

import { encodeFrame, type Frame, type Outgoing } from "./frames";

export const SESSION_PARAM = "session_key";
export const LAST_PARAM = "last";
export const ACK_FRACTION = 4; // acknowledge at a quarter of the window...
export const ACK_IDLE_MS = 10_000; // ... or this long after a frame not acknowledged
const KEY_BYTES = 16; // 128 bits

/** What a connection's hello says of the session. */
export type Outcome = "new" | "resumed" | "reset";
/** Why a connection could not resume (a `reset`). Only `overflow` keeps the session. */
export type ResetReason = "unknown" | "expired" | "overflow" | "kernel_restarted" | "closed";
export const OVERFLOW: ResetReason = "overflow";

/** A numbered frame, kept until the server carried it out. */
export type Kept = { seq: number; frame: Frame; wire: string | ArrayBuffer };

export class SessionState {
  readonly key = newSessionKey();
  /** The highest `seq` received: the next connection's `last`. */
  last = 0;
  /** The server's window in bytes, from the latest hello. */
  window = Infinity;
  private numbered = 0;
  private kept: Kept[] = []; // in order
  private receivedSinceAck = 0; // bytes (a text frame's characters: close enough)

  /** The query parameters of the next connection (its `last` acknowledges what came). */
  connectionQuery(): Record<string, string> {
    this.receivedSinceAck = 0;
    return { [SESSION_PARAM]: this.key, [LAST_PARAM]: String(this.last) };
  }

  /** `frame` under the next number, encoded, kept until acknowledged. */
  number(frame: Frame, buffers: Outgoing[] = []): Kept {
    const seq = this.numbered + 1;
    const wire = encodeFrame({ seq, ...frame }, buffers); // throws before using up a number
    this.numbered = seq;
    const kept = { seq, frame, wire };
    this.kept.push(kept);
    return kept;
  }

  /** The server carried out every frame up to `seq`: forget them. */
  acknowledged(seq: number): void {
    const first = this.kept.findIndex((kept) => kept.seq > seq);
    this.kept.splice(0, first === -1 ? this.kept.length : first);
  }

  /** A connection's hello (`resumed`, or `reset` / `overflow`: the same session): the frames to
   * write again, in order. */
  greeted({ ack, window }: { ack: number; window: number }): Kept[] {
    this.window = window > 0 ? window : Infinity;
    this.acknowledged(ack);
    return [...this.kept];
  }

  /** The ids of the comms that kept `open` frames open: the server may not know them yet. */
  opening(): Set<string> {
    return new Set(
      this.kept.filter(({ frame }) => frame.type === "open").map(({ frame }) => frame.comm_id!),
    );
  }

  /** Whether frame `seq` (of `size`) is new: the server never repeats one. */
  received(seq: number, size: number): boolean {
    if (seq <= this.last) return false;
    this.last = seq;
    this.receivedSinceAck += size;
    return true;
  }

  /** Whether so much came since the last acknowledgement that one is due now. */
  ackDue(): boolean {
    return this.receivedSinceAck * ACK_FRACTION >= this.window;
  }

  /** The `seq` to acknowledge now, or null if nothing came since the last acknowledgement. */
  takeAck(): number | null {
    if (this.receivedSinceAck === 0) return null;
    this.receivedSinceAck = 0;
    return this.last;
  }
}

/** A session key nobody can guess: random bytes as URL-safe base64, without padding. */
export function newSessionKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

/** The size of a frame as counted for acknowledgements. */
export function frameSize(data: string | ArrayBuffer): number {
  return typeof data === "string" ? data.length : data.byteLength;
}
