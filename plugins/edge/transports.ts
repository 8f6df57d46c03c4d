/**
 * The two transports of the edge, both on the API's http.Server: Socket.IO v4 at `/socket.io` and plain
 * WebSocket (`ws`, noServer mode: we route `upgrade` ourselves so both coexist) at `/ws`.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import type * as SioParser from 'socket.io-parser';
import { Server as SocketIOServer, type Socket } from 'socket.io';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ERROR_CODES, VoxaError, isVoxaError, type ErrorCode } from '../../core/errors.js';
import { originAllowed, tokenExpiry, verifyToken } from './auth.js';
import type { UserRecord } from '../../core/domain.js';
import { errorAck, type AckData, type Edge, type Session, type Transport } from './edge.js';
import type { Frame, SioEncoded, SioEncoder } from './frame.js';
import { CLOSE, handshakeRefusal, HandshakeSchema, WsFrameSchema, type Handshake } from './protocol.js';
import { illFormedError, illFormedPath, illFormedPathOfJson } from '../../core/http/well-formed.js';
import { missingHost, refuseRaw, type Refusal } from '../../core/http/client-error.js';
import { validationDetails } from '../../core/http/validate.js';

export interface TransportHandles {
  close(): Promise<void>;
}

// ------------------------------------------------------------------------------------------------------------
// Plain WebSocket

const SEND_TEXT = { binary: false } as const;

/** The transport of a `ws` connection, kept on the socket under this key for the shared listeners below. */
const TRANSPORT = Symbol('voxa.transport');
type TaggedWebSocket = WebSocket & { [TRANSPORT]: WsTransport };

/**
 * One plain WebSocket connection: its state from the first frame to the close lives here, and the `ws` listeners
 * are shared functions that find it on the socket — no closures per connection (an idle connection costs what
 * its objects cost, and tsx's keepNames turns every named per-connection closure into a dictionary object).
 */
class WsTransport implements Transport {
  alive = true;
  session: Session | null = null;
  authing = false;
  authTimer: NodeJS.Timeout | null = null;
  constructor(
    readonly socket: WebSocket,
    /** Shared by every connection of the server. */
    private readonly ctx: { edge: Edge; live: Set<WsTransport> },
  ) {}
  // A getter (on the prototype) rather than a field: one word less per connection.
  get kind(): 'ws' {
    return 'ws';
  }
  get edge(): Edge {
    return this.ctx.edge;
  }
  write(frame: Frame): void {
    const ws = this.socket;
    if (ws.readyState !== ws.OPEN) return;
    // The frame is already a complete WebSocket frame, shared by every socket: write it to the TCP connection
    // directly instead of having ws frame it again per socket. Safe because nothing else is ever queued in ws's
    // sender here: permessage-deflate is off and we never send Blobs, so ws.send writes synchronously too and
    // the order of our writes is kept. bufferedAmount still counts it (it reads the TCP socket's buffer).
    const tcp = (ws as unknown as { _socket?: Duplex })._socket;
    if (tcp && !tcp.destroyed) tcp.write(frame.wsFrame());
    else ws.send(frame.wsBytes(), SEND_TEXT);
  }
  send(obj: unknown): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify(obj));
  }
  buffered(): number {
    return this.socket.bufferedAmount;
  }
  kick(code: ErrorCode, message: string): void {
    this.send({ type: 'error', data: { code, message } });
    const close = code === 'SLOW_CONSUMER' ? CLOSE.SLOW_CONSUMER : code === 'UNAUTHENTICATED' ? CLOSE.UNAUTHENTICATED : CLOSE.GOING_AWAY;
    this.socket.close(close, code);
    // A slow consumer may never read our close frame: do not wait for its handshake.
    if (code === 'SLOW_CONSUMER') setTimeout(() => this.socket.terminate(), 1000).unref();
  }

  /** Dropped once authenticated, so an idle connection does not keep its spent Timeout alive. */
  stopAuthTimer(): void {
    if (this.authTimer) clearTimeout(this.authTimer);
    this.authTimer = null;
  }

  onClose(): void {
    this.stopAuthTimer();
    this.ctx.live.delete(this);
    if (this.session) this.edge.close(this.session);
  }

  onMessage(raw: RawData, isBinary: boolean): void {
    if (isBinary) return this.send({ type: 'error', data: { code: 'VALIDATION_FAILED', message: 'Frames are JSON text.' } });
    let frame: { type: string; data?: unknown; ackId?: string | number };
    let text: string;
    /** What a refused envelope is answered with as `ref`: the ackId it carried, else its type (so a client can match it). */
    let ref: string | number | undefined;
    try {
      text = raw.toString();
      const json: unknown = JSON.parse(text);
      const parsed = WsFrameSchema.safeParse(json);
      if (!parsed.success) {
        const { ackId, type } = (json !== null && typeof json === 'object' ? json : {}) as { ackId?: unknown; type?: unknown };
        ref = typeof ackId === 'string' || typeof ackId === 'number' ? ackId : typeof type === 'string' ? type.slice(0, 64) : undefined;
        const details = validationDetails(parsed.error);
        throw new VoxaError('VALIDATION_FAILED', `A frame is {type, data, ackId?}${details.fields.length ? `; look at ${details.fields.join(', ')}` : ''}.`, details);
      }
      frame = parsed.data;
    } catch (err) {
      if (!this.session) return this.refuseHandshake();
      const e = isVoxaError(err) ? err : new VoxaError('MALFORMED_JSON', 'The frame is not valid JSON.');
      return this.send({ type: 'error', data: { ...(errorAck(e) as { error: object }).error, ...(ref !== undefined ? { ref } : {}) } });
    }
    // ws already refused invalid UTF-8, so only a \u escape can put a lone surrogate in a frame.
    const illFormed = illFormedPathOfJson(frame, text);
    if (illFormed !== null) {
      const e = illFormedError(illFormed);
      if (this.session) return this.reply(frame, errorAck(e));
      // Refused like any other bad handshake: an error frame naming the field, then close.
      return this.refuseHandshake(e);
    }
    if (!this.session) {
      if (this.authing) return this.reply(frame, errorAck(new VoxaError('UNAUTHENTICATED', 'Wait for the auth answer.')));
      const hs = frame.type === 'auth' ? HandshakeSchema.safeParse(frame.data) : null;
      if (!hs) return this.refuseHandshake();
      if (!hs.success) return this.refuseHandshake(handshakeRefusal(frame.data, hs.error));
      this.authing = true;
      void this.authenticate(hs.data, frame.ackId);
      return;
    }
    if (frame.type === 'auth') return this.reply(frame, errorAck(new VoxaError('CONFLICT', 'Already authenticated.')));
    void this.edge
      .handle(this.session, frame.type, frame.data)
      .catch((err: unknown) => {
        this.edge.log.error({ err }, 'edge frame failed');
        return errorAck(new VoxaError('INTERNAL'));
      })
      .then((data) => this.reply(frame, data));
  }

  /**
   * Refuses the sign-in: with no auth frame, or one without a token (`refusal` absent or UNAUTHENTICATED), the
   * connection is kicked as UNAUTHENTICATED; otherwise an error frame names what was wrong, then close 4002.
   */
  private refuseHandshake(refusal?: { code: ErrorCode; message: string; details?: unknown }): void {
    this.stopAuthTimer();
    if (!refusal || refusal.code === 'UNAUTHENTICATED') return this.kick('UNAUTHENTICATED', 'The first frame must be {"type":"auth","data":{"token":…}}.');
    const { code, message, details } = refusal;
    this.send({ type: 'error', data: { code, message, ...(details === undefined ? {} : { details }) } });
    this.socket.close(CLOSE.PROTOCOL, code);
  }

  /** Answers a frame: an ack when it asked for one, else an error frame when it failed. */
  private reply(frame: { type: string; ackId?: string | number }, data: AckData): void {
    if (frame.ackId !== undefined) this.send({ type: 'ack', ackId: frame.ackId, data });
    else if (!data.ok) this.send({ type: 'error', data: { ...data.error, ref: frame.type } });
  }

  private async authenticate(hs: Handshake, ackId: string | number | undefined): Promise<void> {
    const ws = this.socket;
    try {
      const user = await verifyToken(this.edge.hub, hs.token);
      if (ws.readyState !== ws.OPEN) return;
      // The edge writes `ready` (with the peers online now) before it resolves.
      const s = await this.edge.open(user, this, { cursors: hs.cursors, changesSince: hs.changesSince }, tokenExpiry(hs.token));
      this.stopAuthTimer();
      if (ws.readyState !== ws.OPEN) return this.edge.close(s);
      this.session = s;
      if (ackId !== undefined) this.send({ type: 'ack', ackId, data: { ok: true, userId: user.id, deviceId: s.id } });
    } catch (err) {
      this.stopAuthTimer();
      const e = isVoxaError(err) ? err : new VoxaError('UNAVAILABLE', 'Could not open the session.');
      if (!isVoxaError(err)) this.edge.log.warn({ err }, 'edge: ws session open failed');
      this.kick(e.code === 'UNAUTHENTICATED' ? 'UNAUTHENTICATED' : e.code, e.message);
    } finally {
      this.authing = false;
    }
  }
}

// Shared by every connection (`this` is the WebSocket).
function wsOnPong(this: WebSocket): void {
  (this as TaggedWebSocket)[TRANSPORT].alive = true;
}
function wsOnError(): void {
  // e.g. maxPayload exceeded: ws closes with 1009 itself
}
function wsOnClose(this: WebSocket): void {
  (this as TaggedWebSocket)[TRANSPORT].onClose();
}
function wsOnMessage(this: WebSocket, raw: RawData, isBinary: boolean): void {
  (this as TaggedWebSocket)[TRANSPORT].onMessage(raw, isBinary);
}

function refuseUpgrade(socket: Duplex, code: ErrorCode, message: string, extra: Omit<Refusal, 'code' | 'message'> = {}): void {
  refuseRaw(socket, { code, message, ...extra });
}

/** What `ws` accepts as a Sec-WebSocket-Key: 16 bytes in base64. */
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;

/**
 * Why an upgrade to /ws is not a WebSocket handshake the server can take (RFC 6455 §4.2.1), or null. The same
 * checks `ws` makes in handleUpgrade, made first so the answer is the hub's JSON error instead of ws's plain
 * text; ws still checks everything (what it refuses beyond these goes through wsClientError below).
 */
function handshakeProblem(req: IncomingMessage): Refusal | null {
  if (req.method !== 'GET') return { code: 'METHOD_NOT_ALLOWED', message: 'A WebSocket handshake is a GET request.', headers: { allow: 'GET' } };
  const header = (name: string, message: string, headers?: Record<string, string>): Refusal => ({
    code: 'MALFORMED_REQUEST',
    message: `${message}; the connection is closed.`,
    details: { header: name },
    ...(headers ? { headers } : {}),
  });
  const noHost = missingHost(req);
  if (noHost) return noHost;
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return header('upgrade', 'The Upgrade header must be "websocket"');
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !WS_KEY.test(key)) return header('sec-websocket-key', 'Sec-WebSocket-Key is missing or is not 16 bytes in base64');
  const version = Number(req.headers['sec-websocket-version']);
  // The header tells the client which versions would do (RFC 6455 §4.4).
  if (version !== 13 && version !== 8) return header('sec-websocket-version', 'Sec-WebSocket-Version is missing or not supported (13 is)', { 'sec-websocket-version': '13, 8' });
  return null;
}

/** Where Socket.IO listens (its default); the plain WebSocket upgrade handler leaves that path to it. */
const SOCKET_IO_PATH = '/socket.io';

export function attachWs(edge: Edge, server: HttpServer, path = '/ws'): TransportHandles {
  const wss = new WebSocketServer({ noServer: true, maxPayload: edge.opts.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
  // Anything ws refuses that handshakeProblem did not (a Sec-WebSocket-Protocol it cannot parse): still JSON.
  wss.on('wsClientError', (err: Error, socket: Duplex) => refuseUpgrade(socket, 'MALFORMED_REQUEST', `${err.message}; the connection is closed.`));
  const live = new Set<WsTransport>();
  const ctx = { edge, live };
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const p = q === -1 ? url : url.slice(0, q);
    if (p !== path) {
      // engine.io (Socket.IO) takes the upgrades under its path and its trailing slash (`/socket.io/…`), as it
      // matches them; everything else is answered here (engine.io would close it unanswered a second later).
      if (!p.startsWith(`${SOCKET_IO_PATH}/`)) refuseUpgrade(socket, 'NOT_FOUND', `No WebSocket at ${p.slice(0, 200)}; use ${path} or Socket.IO at ${SOCKET_IO_PATH}/.`);
      return;
    }
    const problem = handshakeProblem(req);
    if (problem) return refuseRaw(socket, problem);
    if (!originAllowed(req, edge.hub.config.corsOrigins)) return refuseUpgrade(socket, 'FORBIDDEN', 'This origin may not open a socket.');
    wss.handleUpgrade(req, socket, head, onConnection);
  };

  const onConnection = (ws: WebSocket): void => {
    const t = new WsTransport(ws, ctx);
    (ws as TaggedWebSocket)[TRANSPORT] = t;
    live.add(t);
    t.authTimer = setTimeout(() => {
      if (!t.session) t.kick('UNAUTHENTICATED', 'No auth frame in time.');
    }, edge.opts.authTimeoutMs);
    t.authTimer.unref();
    ws.on('pong', wsOnPong);
    ws.on('error', wsOnError);
    ws.on('close', wsOnClose);
    ws.on('message', wsOnMessage);
  };

  server.on('upgrade', onUpgrade);
  // Dead peers (no pong for a whole interval) are cut so their presence ends and buffers are freed.
  const pinger = setInterval(() => {
    for (const t of live) {
      if (!t.alive) {
        t.socket.terminate();
        continue;
      }
      t.alive = false;
      t.socket.ping();
    }
  }, 25_000);
  pinger.unref();

  return {
    async close() {
      clearInterval(pinger);
      server.off('upgrade', onUpgrade);
      for (const t of live) t.socket.terminate();
      live.clear();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

// ------------------------------------------------------------------------------------------------------------
// Socket.IO

interface EngineConn {
  readyState: string;
  upgrading: boolean;
  writeBuffer: unknown[];
  request: unknown;
  transport: { name: string; socket?: { bufferedAmount?: number; _socket?: Duplex; _receiver?: { _state?: number; _mask?: unknown } } };
}

/** What the handshake middleware leaves for the connection handler (in `socket.data.handshake`, then cleared). */
interface VerifiedHandshake {
  user: UserRecord;
  cursors: Record<string, number> | undefined;
  changesSince: string | undefined;
  expiresAt: number;
}

/**
 * One Socket.IO connection, with its state (the session, frames that came before it) in one object; the
 * socket's listeners are shared functions that find it in `socket.data.transport`, as for `ws` above.
 */
class SioTransport implements Transport {
  session: Session | null = null;
  ended = false;
  /** Frames that arrived before the session was open (null when none). */
  early: Array<[string, unknown[]]> | null = null;
  constructor(
    readonly socket: Socket,
    /** Shared by every connection of the server. */
    private readonly ctx: { edge: Edge; encode: SioEncoder },
  ) {}
  // A getter (on the prototype) rather than a field: one word less per connection.
  get kind(): 'socketio' {
    return 'socketio';
  }
  get edge(): Edge {
    return this.ctx.edge;
  }
  write(frame: Frame): void {
    if (!this.socket.connected) return;
    const enc: SioEncoded = frame.sioPacket(this.ctx.encode);
    const conn = this.socket.conn as unknown as EngineConn;
    // On an open WebSocket with nothing queued in engine.io, the pre-computed WebSocket frame goes straight to
    // the TCP connection: one write, none of engine.io's per-packet objects and events. Order is kept because
    // nothing of this connection waits in engine.io's buffer (and ws queues nothing without compression).
    // Otherwise (polling, an upgrade under way, packets queued) engine.io writes it, as for a room broadcast.
    if (enc.raw && conn.writeBuffer.length === 0 && conn.readyState === 'open' && !conn.upgrading && conn.transport.name === 'websocket') {
      const tcp = conn.transport.socket?._socket;
      if (tcp && !tcp.destroyed) {
        tcp.write(enc.raw);
        return;
      }
    }
    // The same pre-encoded packets for every socket (what a room broadcast does), per-socket choice ours.
    (this.socket.client as unknown as { writeToEngine(p: unknown[], o: unknown): void }).writeToEngine(enc.packets, enc.opts);
  }
  buffered(): number {
    const conn = this.socket.conn as unknown as EngineConn;
    // Packets wait in writeBuffer while the transport is busy; estimate 256 bytes each, plus what the
    // underlying WebSocket holds.
    return conn.writeBuffer.length * 256 + (conn.transport.socket?.bufferedAmount ?? 0);
  }
  kick(code: ErrorCode, message: string): void {
    this.socket.emit('error', { code, message });
    this.socket.disconnect(true);
  }

  /** Starts the session; the edge writes `ready` (with the peers online now) before it resolves. */
  open(hs: VerifiedHandshake): void {
    this.edge.open(hs.user, this, { cursors: hs.cursors, changesSince: hs.changesSince }, hs.expiresAt).then(
      (s) => {
        if (this.ended) return this.edge.close(s);
        this.session = s;
        const early = this.early;
        this.early = null;
        if (early) for (const [ev, args] of early) this.onFrame(ev, args);
      },
      (err: unknown) => {
        this.edge.log.warn({ err }, 'edge: socket.io session open failed');
        this.kick('UNAVAILABLE', 'Could not open the session; retry.');
      },
    );
  }

  onEvent(event: string, args: unknown[]): void {
    if (!this.session) (this.early ??= []).push([event, args]);
    else this.onFrame(event, args);
  }

  onDisconnect(): void {
    this.ended = true;
    if (this.session) this.edge.close(this.session);
  }

  private onFrame(event: string, args: unknown[]): void {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (d: AckData) => void) : null;
    const data = args[0];
    if (args.length > (ack ? 2 : 1)) return this.answer(event, ack, errorAck(new VoxaError('VALIDATION_FAILED', 'One payload per event.')));
    // Socket.IO hands over parsed data only (no raw text to test for \u first); frames are small objects.
    const illFormed = illFormedPath(data, 'data');
    if (illFormed !== null) return this.answer(event, ack, errorAck(illFormedError(illFormed)));
    // A frame that throws is answered as an internal error: never an unhandled rejection (it would end the process).
    void this.edge
      .handle(this.session!, event, data)
      .catch((err: unknown) => {
        this.edge.log.error({ err }, 'edge frame failed');
        return errorAck(new VoxaError('INTERNAL'));
      })
      .then((res) => this.answer(typeof event === 'string' ? event : String(event), ack, res));
  }

  /** Answers an event: the ack when the client asked for one, else an `error` event (with `ref`) when it failed. */
  private answer(event: string, ack: ((d: AckData) => void) | null, res: AckData): void {
    if (ack) ack(res);
    else if (!res.ok) this.socket.emit('error', { ...res.error, ref: event });
  }
}

// Shared by every connection (`this` is the Socket.IO socket).
function sioOnAny(this: Socket, event: string, ...args: unknown[]): void {
  (this.data.transport as SioTransport).onEvent(event, args);
}
function sioOnDisconnect(this: Socket): void {
  (this.data.transport as SioTransport).onDisconnect();
}

/**
 * Lets go of what the handshake left in memory for the life of the connection (per idle connection, this is
 * more than the session layer costs):
 * - the first HTTP request (headers, raw headers, parser state), held by engine.io's socket and by the close
 *   forwarder below. Socket.IO documents dropping `rawSocket.request` ("Memory usage"); only `socket.request`
 *   needs it, which the edge never reads, and `socket.handshake` was built from it already.
 * - the received-bytes buffer that the WebSocket receiver of engine.io's `ws` (8.21) pins through the last
 *   frame's mask until the next frame — here the CONNECT packet, which carries the access token. ws 8.23 clears
 *   the mask itself after unmasking; this does the same, and only between frames (state GET_INFO), when the
 *   mask is never read again.
 */
function releaseHandshake(socket: Socket): void {
  const conn = socket.conn as unknown as EngineConn;
  conn.request = null;
  const receiver = conn.transport.socket?._receiver;
  if (receiver && receiver._state === 0 && receiver._mask !== undefined) receiver._mask = undefined;
  // engine.io (6.6) wraps the upgrade in a WebSocketResponse for its HTTP middlewares (`io.engine.use`) and
  // forwards the TCP socket's 'close' to it for as long as the connection lives, which keeps the whole upgrade
  // request reachable. The edge has no engine middlewares: the forwarder goes once the connection is set up.
  // Found by its source text (it has no name); a future engine.io without it just leaves nothing to remove.
  const tcp = conn.transport.socket?._socket;
  if (tcp) {
    for (const w of tcp.rawListeners('close') as Array<{ listener?: unknown }>) {
      if (typeof w.listener === 'function' && String(w.listener) === RESPONSE_CLOSE_FORWARDER) tcp.removeListener('close', w.listener as () => void);
    }
  }
}

/** engine.io's `socket.once("close", () => this.emit("close"))` in WebSocketResponse, as source text. */
const RESPONSE_CLOSE_FORWARDER = '() => this.emit("close")';

/** socket.io-parser exactly as socket.io loads it (a dependency of socket.io's, not of ours). */
const sioParser = createRequire(createRequire(import.meta.url).resolve('socket.io'))('socket.io-parser') as typeof SioParser;

/**
 * What a CONNECT packet's auth becomes when it could not be read (malformed JSON, or JSON that is not an
 * object): the handshake middleware refuses it like a missing token.
 */
class UnreadableAuth {
  constructor(readonly got: string) {}
}

/** What a CONNECT packet's payload was, for the refusal's message. */
function describePayload(text: string): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'malformed JSON';
  }
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/**
 * socket.io's decoder, except for a CONNECT packet whose payload it refuses (malformed JSON, a string, an
 * array, null…): socket.io then drops the whole connection without a word, which socket.io-client reports as a
 * plain `disconnect` ("transport close") and retries forever. Here such a packet goes on as a CONNECT whose auth
 * is an UnreadableAuth, so the handshake middleware answers it with a CONNECT_ERROR carrying the hub's code, as
 * for a bad token, and the connection stays usable for a correct CONNECT. Every other packet is untouched.
 */
class HandshakeDecoder extends sioParser.Decoder {
  override add(obj: unknown): void {
    // '0' is CONNECT, the first character of its text encoding.
    if (typeof obj === 'string' && obj.charCodeAt(0) === 48) {
      try {
        // Decoded once on the side, so an error thrown by a listener of the real decode is never taken for a
        // decoding error (CONNECT packets come once per connection; the cost is nothing).
        new sioParser.Decoder().add(obj);
      } catch {
        const { nsp, payload } = splitConnect(obj);
        this.emitReserved('decoded', { type: sioParser.PacketType.CONNECT, nsp, data: new UnreadableAuth(describePayload(payload)) });
        return;
      }
    }
    super.add(obj);
  }
}

/** A CONNECT packet's namespace and payload text, read as socket.io-parser reads them (no ack id on CONNECT). */
function splitConnect(text: string): { nsp: string; payload: string } {
  if (text.charAt(1) !== '/') return { nsp: '/', payload: text.slice(1) };
  const comma = text.indexOf(',', 1);
  return comma === -1 ? { nsp: text.slice(1), payload: '' } : { nsp: text.slice(1, comma), payload: text.slice(comma + 1) };
}

export function attachSocketIO(edge: Edge, server: HttpServer, path = SOCKET_IO_PATH): TransportHandles {
  const allow = edge.hub.config.corsOrigins;
  const io = new SocketIOServer(server, {
    path,
    parser: { Encoder: sioParser.Encoder, Decoder: HandshakeDecoder },
    serveClient: false,
    maxHttpBufferSize: edge.opts.maxFrameBytes,
    perMessageDeflate: false,
    // Upgrades to other paths are attachWs's to answer (a JSON 404); engine.io would close them unanswered.
    destroyUpgrade: false,
    // Origin checked once for every handshake request (polling and WebSocket).
    allowRequest: (req, cb) => cb(originAllowed(req, allow) ? null : 'origin not allowed', originAllowed(req, allow)),
    cors: { origin: (origin, cb) => cb(null, origin === undefined || allow.includes('*') || allow.includes(origin)), credentials: true },
  });
  const nsp = io.of('/');
  const adapter = nsp.adapter as unknown as { _encode?: (packet: unknown, opts: Record<string, unknown>) => unknown[] };
  const encode: SioEncoder = (name, data) => {
    const opts: Record<string, unknown> = { preEncoded: true };
    // type 2 = EVENT in the Socket.IO protocol.
    const packet = { type: 2, nsp: '/', data: [name, data] };
    const packets = adapter._encode ? adapter._encode(packet, opts) : [packet];
    if (!adapter._encode) delete opts.preEncoded;
    // The adapter pre-computes the WebSocket frame as [header, payload], which engine.io hands to ws's
    // sendFrame: a cork, two writes and a writev per socket. Joined once here, each socket does one write.
    const pre = opts.wsPreEncodedFrame;
    let raw: Buffer | undefined;
    if (Array.isArray(pre) && pre.length === 2 && pre.every((b) => Buffer.isBuffer(b))) opts.wsPreEncodedFrame = [(raw = Buffer.concat(pre as Buffer[]))];
    return { packets, opts, ...(raw ? { raw } : {}) };
  };

  const ctx = { edge, encode };

  nsp.use((socket, next) => {
    // Tokens travel in the handshake's auth payload, never in the query string (URLs end up in logs).
    const auth: unknown = socket.handshake.auth;
    if (auth instanceof UnreadableAuth) return next(handshakeError('UNAUTHENTICATED', `The handshake's auth must be a JSON object {token}; got ${auth.got}.`));
    const hs = HandshakeSchema.safeParse(auth);
    if (!hs.success) {
      const refusal = handshakeRefusal(auth, hs.error);
      return next(handshakeError(refusal.code, refusal.message, refusal.details));
    }
    verifyToken(edge.hub, hs.data.token).then(
      (user) => {
        socket.data.handshake = { user, cursors: hs.data.cursors, changesSince: hs.data.changesSince, expiresAt: tokenExpiry(hs.data.token) } satisfies VerifiedHandshake;
        // Not kept for the life of the connection: nothing needs it again, and a token in memory is a token that
        // can end up in a heap dump. Replaced rather than `delete`d (which would turn the object into a dictionary).
        socket.handshake.auth = SPENT_AUTH;
        next();
      },
      (err: unknown) => {
        const e = isVoxaError(err) ? err : new VoxaError('UNAUTHENTICATED');
        next(handshakeError(e.code, e.message ?? ERROR_CODES[e.code].message));
      },
    );
  });

  nsp.on('connection', (socket) => {
    const hs = socket.data.handshake as VerifiedHandshake;
    socket.data.handshake = undefined;
    const t = new SioTransport(socket, ctx);
    socket.data.transport = t;
    releaseHandshake(socket);
    socket.on('disconnect', sioOnDisconnect);
    socket.onAny(sioOnAny);
    // socket.io keeps any-listeners in an array grown by push, with room for 17; one listener needs room for one.
    // (If socket.io renames the field, this does nothing and the listener above still works.)
    const any = socket as unknown as { _anyListeners?: unknown[] };
    if (any._anyListeners?.length === 1) any._anyListeners = [any._anyListeners[0]];
    t.open(hs);
  });

  return {
    async close() {
      io.disconnectSockets(true);
      io.engine.close();
      // Not io.close(): that would close the API's http.Server too.
    },
  };
}

/** What `socket.handshake.auth` becomes once verified (shared: it holds nothing). */
const SPENT_AUTH: Record<string, never> = Object.freeze({});

/** A refused Socket.IO handshake: the client's `connect_error` carries `err.data = {code, message}`. */
function handshakeError(code: ErrorCode, message: string, details?: unknown): Error {
  const err = new Error(message) as Error & { data: unknown };
  err.data = details === undefined ? { code, message } : { code, message, details };
  return err;
}
