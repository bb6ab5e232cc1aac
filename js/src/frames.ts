// The multiplexed socket's frames (docs/CONTRACT.md, v2, "One socket for many comms"): every
// frame is a JSON object; one with buffers travels as a binary frame in v1's layout (a big-endian
// uint32 n, n big-endian uint32 offsets from the frame's start, then the n parts; part 0 is the
// object's UTF-8 JSON, parts 1… the buffers).

export type Frame = { type: string; comm_id?: string; [key: string]: unknown };
export type Buffers = DataView[];
export type Outgoing = ArrayBuffer | ArrayBufferView;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytes(buffer: Outgoing): Uint8Array {
  return buffer instanceof ArrayBuffer
    ? new Uint8Array(buffer)
    : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** A frame to send: its JSON text, or the binary layout when it carries buffers. */
export function encodeFrame(frame: Frame, buffers: Outgoing[] = []): string | ArrayBuffer {
  const text = JSON.stringify(frame);
  if (buffers.length === 0) return text;
  const parts = [encoder.encode(text), ...buffers.map(bytes)];
  const header = 4 * (1 + parts.length);
  const size = parts.reduce((total, part) => total + part.byteLength, header);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length);
  let offset = header;
  parts.forEach((part, i) => {
    view.setUint32(4 * (i + 1), offset);
    out.set(part, offset);
    offset += part.byteLength;
  });
  return out.buffer;
}

/** A received frame: its object and its buffers (views into the frame, not copies). */
export function decodeFrame(data: string | ArrayBuffer): { frame: Frame; buffers: Buffers } {
  if (typeof data === "string") return { frame: JSON.parse(data), buffers: [] };
  const view = new DataView(data);
  const count = view.getUint32(0);
  const offsets = Array.from({ length: count }, (_, i) => view.getUint32(4 * (i + 1)));
  const parts = offsets.map(
    (start, i) => new DataView(data, start, (offsets[i + 1] ?? data.byteLength) - start),
  );
  const frame = JSON.parse(decoder.decode(parts[0]));
  return { frame, buffers: parts.slice(1) };
}
