/**
 * An outgoing server event, encoded at most once per transport no matter how many sockets receive it.
 *
 * Plain WebSocket: the JSON text is serialised once into a Buffer that every socket sends as-is.
 * Socket.IO: the packet is encoded once by the namespace's adapter (the same path `io.to(room).emit` takes,
 * which also pre-computes the WebSocket frame) and written to each chosen socket's engine.
 */
import type { ServerEventName } from './protocol.js';

/** Encodes a Socket.IO event packet once; supplied by the Socket.IO transport. */
export type SioEncoder = (name: string, data: unknown) => SioEncoded;
export interface SioEncoded {
  packets: unknown[];
  opts: Record<string, unknown>;
}

export class Frame {
  private ws: Buffer | null = null;
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

  sioPacket(encode: SioEncoder): SioEncoded {
    if (!this.sio) this.sio = encode(this.name, this.data);
    return this.sio;
  }
}
