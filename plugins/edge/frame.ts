/**
 * An outgoing server event, encoded at most once per transport no matter how many sockets receive it.
 *
 * Plain WebSocket: the JSON text is serialised once, straight into a complete WebSocket text frame (header and
 * payload in one Buffer), which every socket writes to its TCP connection as-is: one write per socket, no
 * per-socket framing, length counting or header/payload writev.
 * Socket.IO: the packet is encoded once by the namespace's adapter (the same path `io.to(room).emit` takes,
 * which also pre-computes the WebSocket frame) and written to each chosen socket's engine.
 */
import type { ServerEventName } from './protocol.js';

/** Encodes a Socket.IO event packet once; supplied by the Socket.IO transport. */
export type SioEncoder = (name: string, data: unknown) => SioEncoded;
export interface SioEncoded {
  packets: unknown[];
  opts: Record<string, unknown>;
  /** The whole WebSocket frame of the packet, when it could be pre-computed (engine.io's "4" + Socket.IO text). */
  raw?: Buffer;
}

/**
 * A server-to-client WebSocket text frame (RFC 6455 §5.2: FIN, opcode 1, unmasked) around a JSON text, built in
 * one allocation.
 */
export function wsTextFrame(text: string): Buffer {
  const len = Buffer.byteLength(text);
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const buf = Buffer.allocUnsafe(head + len);
  buf[0] = 0x81;
  if (head === 2) buf[1] = len;
  else if (head === 4) {
    buf[1] = 126;
    buf.writeUInt16BE(len, 2);
  } else {
    buf[1] = 127;
    buf.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    buf.writeUInt32BE(len >>> 0, 6);
  }
  buf.write(text, head, 'utf8');
  return buf;
}

export class Frame {
  private ws: Buffer | null = null;
  private wsRaw: Buffer | null = null;
  private sio: SioEncoded | null = null;

  constructor(
    readonly name: ServerEventName,
    readonly data: unknown,
  ) {}

  /** The `{type,data}` JSON text frame as bytes. */
  wsBytes(): Buffer {
    if (!this.ws) this.ws = Buffer.from(JSON.stringify({ type: this.name, data: this.data }));
    return this.ws;
  }

  /** The same text as a complete WebSocket frame, for writing straight to the TCP socket. */
  wsFrame(): Buffer {
    if (!this.wsRaw) this.wsRaw = wsTextFrame(JSON.stringify({ type: this.name, data: this.data }));
    return this.wsRaw;
  }

  sioPacket(encode: SioEncoder): SioEncoded {
    if (!this.sio) this.sio = encode(this.name, this.data);
    return this.sio;
  }
}
