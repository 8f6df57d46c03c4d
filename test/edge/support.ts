/**
 * Helpers for the edge tests: a hub with the API and the edge on a real http.Server (port 0), users with
 * access tokens, and real `ws` / `socket.io-client` clients that record what they receive.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { io as sioConnect, type Socket as SioSocket } from 'socket.io-client';
import { WebSocket } from 'ws';
import { signAccessToken } from '../../core/auth/tokens.js';
import type { ConfigInput } from '../../core/config.js';
import type { Conversation, UserRecord } from '../../core/domain.js';
import { buildApp } from '../../core/http/app.js';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import { startEdge, type EdgeOptions, type RunningEdge } from '../../plugins/edge/index.js';
import { openTestHub, type TestServers } from '../helpers/hub.js';

export interface EdgeHub {
  hub: Hub & { close(): Promise<void> };
  server: Server;
  edge: RunningEdge;
  port: number;
  url: string;
  close(): Promise<void>;
}

export async function openEdgeHub(servers: TestServers, overrides: ConfigInput = {}, edgeOpts: Partial<EdgeOptions> = {}): Promise<EdgeHub> {
  const hub = await openTestHub(servers, overrides);
  const server = createServer(buildApp(hub).callback());
  const edge = startEdge(hub, server, edgeOpts);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    hub,
    server,
    edge,
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await edge.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await hub.close();
    },
  };
}

let n = 0;
export interface TestUser {
  user: UserRecord;
  token: string;
}

/** A registered, active user with a valid access token (created in the store directly: scrypt is slow). */
export async function makeUser(hub: Hub, name: string): Promise<TestUser> {
  const user: UserRecord = {
    id: newId('usr'),
    workspaceId: hub.config.defaultWorkspaceId,
    email: `${name.toLowerCase()}${n++}@example.test`,
    name,
    role: 'agent',
    createdAt: new Date().toISOString(),
    passwordHash: 'not-a-real-hash',
    disabled: false,
  };
  await hub.store.createUser(user, () => []);
  return { user, token: signAccessToken(hub, user, 'fam_test') };
}

export async function group(hub: Hub, owner: TestUser, members: TestUser[], title = 'g'): Promise<Conversation> {
  const { conversation } = await hub.chat.openConversation(owner.user, { type: 'group', title, members: members.map((m) => m.user.id) });
  return conversation;
}

/** Polls until `check` returns something truthy. */
export async function eventually<T>(check: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Received {
  type: string;
  data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** What both test clients offer. */
export interface TestClient {
  /** The `ready` payload: `{ok, userId, deviceId, serverTime, online?}`. */
  ready: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  received: Received[];
  of(type: string): any[]; // eslint-disable-line @typescript-eslint/no-explicit-any
  request(type: string, data: unknown): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  emit(type: string, data: unknown): void;
  closed: Promise<{ code?: number; reason?: string }>;
  close(): void;
}

function recorder(): Pick<TestClient, 'received' | 'of'> {
  const received: Received[] = [];
  return { received, of: (type) => received.filter((r) => r.type === type).map((r) => r.data) };
}

/** The optional handshake fields next to the token. */
function handshakeExtras(opts: { cursors?: Record<string, number>; changesSince?: string }): Record<string, unknown> {
  return { ...(opts.cursors ? { cursors: opts.cursors } : {}), ...(opts.changesSince ? { changesSince: opts.changesSince } : {}) };
}

/** A plain WebSocket client: auth frame first, then `{type,data,ackId}` frames. */
export async function wsClient(url: string, token: string, opts: { cursors?: Record<string, number>; changesSince?: string; origin?: string } = {}): Promise<TestClient & { ws: WebSocket }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/ws', opts.origin ? { origin: opts.origin } : {});
  const rec = recorder();
  const acks = new Map<number, (d: unknown) => void>();
  let ackSeq = 0;
  const closed = new Promise<{ code?: number; reason?: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  let readyResolve: (d: unknown) => void = () => undefined;
  let readyReject: (e: Error) => void = () => undefined;
  const ready = new Promise((res, rej) => {
    readyResolve = res;
    readyReject = rej;
  });
  ws.on('message', (raw) => {
    const f = JSON.parse(raw.toString()) as { type: string; data: unknown; ackId?: number };
    if (f.type === 'ack') acks.get(f.ackId!)?.(f.data);
    else if (f.type === 'ready') readyResolve(f.data);
    else rec.received.push({ type: f.type, data: f.data });
  });
  ws.once('close', (code, reason) => readyReject(new Error(`closed ${code} ${reason.toString()}`)));
  ws.once('error', (err) => readyReject(err));
  await once(ws, 'open');
  ws.send(JSON.stringify({ type: 'auth', data: { token, ...handshakeExtras(opts) } }));
  const readyData = await ready;
  return {
    ...rec,
    ready: readyData,
    ws,
    closed,
    request(type, data) {
      const ackId = ++ackSeq;
      return new Promise((resolve) => {
        acks.set(ackId, resolve);
        ws.send(JSON.stringify({ type, data, ackId }));
      });
    },
    emit(type, data) {
      ws.send(JSON.stringify({ type, data }));
    },
    close() {
      ws.terminate();
    },
  };
}

/** A Socket.IO client over WebSocket with `auth: {token}`. */
export async function sioClient(url: string, token: string, opts: { cursors?: Record<string, number>; changesSince?: string } = {}): Promise<TestClient & { socket: SioSocket }> {
  const socket = sioConnect(url, { transports: ['websocket'], auth: { token, ...handshakeExtras(opts) }, reconnection: false, forceNew: true });
  const rec = recorder();
  socket.onAny((type: string, data: unknown) => {
    if (type !== 'ready') rec.received.push({ type, data });
  });
  const closed = new Promise<{ code?: number; reason?: string }>((resolve) => socket.once('disconnect', (reason) => resolve({ reason })));
  const readyData = await new Promise<unknown>((resolve, reject) => {
    socket.once('ready', (d: unknown) => resolve(d));
    socket.once('connect_error', (err) => reject(err));
  });
  return {
    ...rec,
    ready: readyData,
    socket,
    closed,
    request(type, data) {
      return socket.timeout(15_000).emitWithAck(type, data);
    },
    emit(type, data) {
      socket.emit(type, data);
    },
    close() {
      socket.disconnect();
    },
  };
}

/** Seqs of receive-message frames for one conversation, in arrival order. */
export function seqsOf(c: Pick<TestClient, 'of'>, conversationId: string): number[] {
  return c.of('receive-message').filter((m) => m.conversationId === conversationId).map((m) => m.seq as number);
}

/**
 * Runs an edge + API in a child process (test/edge/fixtures/edge-process.ts), so a test can `kill -9` it.
 * Resolves once it listens; `edgeOptions` reach the edge through VOXA_EDGE_OPTIONS.
 */
export async function spawnEdge(
  servers: TestServers,
  peer: Hub,
  cfg: ConfigInput,
  edgeOptions?: Record<string, unknown>,
): Promise<{ child: ChildProcess; url: string }> {
  // The same servers and keys as the in-process hub it runs beside, so tokens and sealed data work on both.
  const config = {
    ...cfg,
    natsUrl: servers.nats.url,
    redisUrl: servers.redis.url,
    logLevel: 'silent',
    jwtSecret: peer.config.jwtSecret,
    secretKey: peer.config.secretKey,
    port: 0,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/edge/fixtures/edge-process.ts'], {
    env: { ...process.env, VOXA_EDGE_FIXTURE: JSON.stringify(config), ...(edgeOptions ? { VOXA_EDGE_OPTIONS: JSON.stringify(edgeOptions) } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /READY (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`edge fixture exited ${code}: ${err}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}
