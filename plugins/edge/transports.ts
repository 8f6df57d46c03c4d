/**
 * The two transports of the edge, both on the API's http.Server: Socket.IO v4 at `/socket.io` and plain
 * WebSocket (`ws`, noServer mode: we route `upgrade` ourselves so both coexist) at `/ws`.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { Server as SocketIOServer, type Socket } from 'socket.io';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ERROR_CODES, VoxaError, isVoxaError, type ErrorCode } from '../../core/errors.js';
import { originAllowed, tokenExpiry, verifyToken } from './auth.js';
import { errorAck, type AckData, type Edge, type Session, type Transport } from './edge.js';
import type { Frame, SioEncoded, SioEncoder } from './frame.js';
import { CLOSE, HandshakeSchema, WsFrameSchema } from './protocol.js';

export interface TransportHandles {
  close(): Promise<void>;
}

// ------------------------------------------------------------------------------------------------------------
// Plain WebSocket

const SEND_TEXT = { binary: false } as const;

class WsTransport implements Transport {
  readonly kind = 'ws' as const;
  alive = true;
  constructor(readonly socket: WebSocket) {}
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
}

function refuseUpgrade(socket: Duplex, status: number, code: ErrorCode, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : 'Bad Request'}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

export function attachWs(edge: Edge, server: HttpServer, path = '/ws'): TransportHandles {
  const wss = new WebSocketServer({ noServer: true, maxPayload: edge.opts.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
  const live = new Set<WsTransport>();
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    if ((q === -1 ? url : url.slice(0, q)) !== path) return; // Socket.IO (or nobody) handles it
    if (!originAllowed(req, edge.hub.config.corsOrigins)) return refuseUpgrade(socket, 403, 'FORBIDDEN', 'This origin may not open a socket.');
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws));
  };

  const onConnection = (ws: WebSocket): void => {
    const t = new WsTransport(ws);
    live.add(t);
    let session: Session | null = null;
    let authing = false;
    let authTimer: NodeJS.Timeout | null = setTimeout(() => {
      if (!session) t.kick('UNAUTHENTICATED', 'No auth frame in time.');
    }, edge.opts.authTimeoutMs);
    authTimer.unref();
    // Dropped once authenticated, so an idle connection does not keep its spent Timeout alive.
    const stopAuth = (): void => {
      if (authTimer) clearTimeout(authTimer);
      authTimer = null;
    };
    ws.on('pong', () => (t.alive = true));
    ws.on('error', () => undefined); // e.g. maxPayload exceeded: ws closes with 1009 itself
    ws.on('close', () => {
      stopAuth();
      live.delete(t);
      if (session) edge.close(session);
    });
    ws.on('message', (raw: RawData, isBinary: boolean) => {
      if (isBinary) return t.send({ type: 'error', data: { code: 'VALIDATION_FAILED', message: 'Frames are JSON text.' } });
      let frame: { type: string; data?: unknown; ackId?: string | number };
      try {
        const parsed = WsFrameSchema.safeParse(JSON.parse(raw.toString()));
        if (!parsed.success) throw new VoxaError('VALIDATION_FAILED', 'A frame is {type, data, ackId?}.');
        frame = parsed.data;
      } catch (err) {
        const e = isVoxaError(err) ? err : new VoxaError('MALFORMED_JSON', 'The frame is not valid JSON.');
        if (!session) return t.kick('UNAUTHENTICATED', 'The first frame must be {"type":"auth","data":{"token":…}}.');
        return t.send({ type: 'error', data: errorAck(e).ok === false ? (errorAck(e) as { error: unknown }).error : undefined });
      }
      const reply = (data: AckData): void => {
        if (frame.ackId !== undefined) t.send({ type: 'ack', ackId: frame.ackId, data });
        else if (!data.ok) t.send({ type: 'error', data: { ...data.error, ref: frame.type } });
      };
      if (!session) {
        if (authing) return reply(errorAck(new VoxaError('UNAUTHENTICATED', 'Wait for the auth answer.')));
        const hs = frame.type === 'auth' ? HandshakeSchema.safeParse(frame.data) : null;
        if (!hs || !hs.success) {
          stopAuth();
          return t.kick('UNAUTHENTICATED', 'The first frame must be {"type":"auth","data":{"token":…}}.');
        }
        authing = true;
        void (async () => {
          try {
            const user = await verifyToken(edge.hub, hs.data.token);
            if (ws.readyState !== ws.OPEN) return;
            const s = await edge.open(user, t, { cursors: hs.data.cursors }, tokenExpiry(hs.data.token));
            stopAuth();
            if (ws.readyState !== ws.OPEN) return edge.close(s);
            session = s;
            const ready = { ok: true as const, userId: user.id, deviceId: s.id };
            t.send({ type: 'ready', data: ready });
            if (frame.ackId !== undefined) t.send({ type: 'ack', ackId: frame.ackId, data: ready });
          } catch (err) {
            stopAuth();
            const e = isVoxaError(err) ? err : new VoxaError('UNAVAILABLE', 'Could not open the session.');
            if (!isVoxaError(err)) edge.log.warn({ err }, 'edge: ws session open failed');
            t.kick(e.code === 'UNAUTHENTICATED' ? 'UNAUTHENTICATED' : e.code, e.message);
          } finally {
            authing = false;
          }
        })();
        return;
      }
      if (frame.type === 'auth') return reply(errorAck(new VoxaError('CONFLICT', 'Already authenticated.')));
      void edge.handle(session, frame.type, frame.data).then(reply);
    });
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
  transport: { name: string; socket?: { bufferedAmount?: number; _socket?: Duplex } };
}

class SioTransport implements Transport {
  readonly kind = 'socketio' as const;
  constructor(
    readonly socket: Socket,
    private readonly encode: SioEncoder,
  ) {}
  write(frame: Frame): void {
    if (!this.socket.connected) return;
    const enc: SioEncoded = frame.sioPacket(this.encode);
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
}

export function attachSocketIO(edge: Edge, server: HttpServer, path = '/socket.io'): TransportHandles {
  const allow = edge.hub.config.corsOrigins;
  const io = new SocketIOServer(server, {
    path,
    serveClient: false,
    maxHttpBufferSize: edge.opts.maxFrameBytes,
    perMessageDeflate: false,
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

  nsp.use((socket, next) => {
    // Tokens travel in the handshake's auth payload, never in the query string (URLs end up in logs).
    const hs = HandshakeSchema.safeParse(socket.handshake.auth);
    const fail = (code: ErrorCode, message: string): void => {
      const err = new Error(message) as Error & { data: unknown };
      err.data = { code, message };
      next(err);
    };
    if (!hs.success) return fail('UNAUTHENTICATED', 'Send {auth: {token}} in the handshake.');
    verifyToken(edge.hub, hs.data.token).then(
      (user) => {
        socket.data.user = user;
        socket.data.cursors = hs.data.cursors;
        socket.data.expiresAt = tokenExpiry(hs.data.token);
        // Not kept for the life of the connection: nothing needs it again, and a token in memory is a token
        // that can end up in a heap dump.
        delete (socket.handshake.auth as { token?: string }).token;
        next();
      },
      (err: unknown) => {
        const e = isVoxaError(err) ? err : new VoxaError('UNAUTHENTICATED');
        fail(e.code, e.message ?? ERROR_CODES[e.code].message);
      },
    );
  });

  nsp.on('connection', (socket) => {
    const t = new SioTransport(socket, encode);
    let session: Session | null = null;
    let closed = false;
    const early: Array<[string, unknown[]]> = [];
    socket.on('disconnect', () => {
      closed = true;
      if (session) edge.close(session);
    });
    const onFrame = (event: string, args: unknown[]): void => {
      const last = args[args.length - 1];
      const ack = typeof last === 'function' ? (last as (d: AckData) => void) : null;
      const data = ack ? args[0] : args[0];
      if (args.length > (ack ? 2 : 1)) {
        const bad = errorAck(new VoxaError('VALIDATION_FAILED', 'One payload per event.'));
        return ack ? ack(bad) : void socket.emit('error', { ...(bad as { error: object }).error, ref: event });
      }
      void edge.handle(session!, event, data).then((res) => {
        if (ack) ack(res);
        else if (!res.ok) socket.emit('error', { ...res.error, ref: event });
      });
    };
    socket.onAny((event: string, ...args: unknown[]) => {
      if (!session) early.push([event, args]);
      else onFrame(event, args);
    });
    edge.open(socket.data.user, t, { cursors: socket.data.cursors }, socket.data.expiresAt as number).then(
      (s) => {
        if (closed) return edge.close(s);
        session = s;
        socket.emit('ready', { ok: true, userId: s.user.id, deviceId: s.id });
        for (const [ev, args] of early.splice(0)) onFrame(ev, args);
      },
      (err: unknown) => {
        edge.log.warn({ err }, 'edge: socket.io session open failed');
        t.kick('UNAVAILABLE', 'Could not open the session; retry.');
      },
    );
  });

  return {
    async close() {
      io.disconnectSockets(true);
      io.engine.close();
      // Not io.close(): that would close the API's http.Server too.
    },
  };
}
