/**
 * Helpers for the API tests: a hub on the file's real NATS/Redis, the app's callback for supertest, and
 * shortcuts to register users and read the namespace's JetStream stream.
 */
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import request from 'supertest';
import type { ConfigInput } from '../../core/config.js';
import type { Role } from '../../core/domain.js';
import { buildApp, type BuildAppOptions } from '../../core/http/app.js';
import type { Hub } from '../../core/hub.js';
import { openTestHub, type TestServers } from '../helpers/hub.js';
import type { EventEnvelope } from '../../core/events/catalog.js';

export interface Session {
  id: string;
  email: string;
  accessToken: string;
  refreshToken: string;
}

export interface ApiHub {
  hub: Hub & { close(): Promise<void> };
  /** A listening server (one per test keeps supertest from opening a new one per request). */
  server: Server;
  http: ReturnType<typeof request>;
  register(name: string, extra?: { role?: Role }): Promise<Session>;
  close(): Promise<void>;
}

let n = 0;

/** `app` is passed to buildApp (e.g. plugin routes); `appFor` builds it from the opened hub instead. */
export async function openApiHub(
  servers: TestServers,
  overrides: ConfigInput = {},
  app: BuildAppOptions | ((hub: Hub) => Promise<BuildAppOptions>) = {},
): Promise<ApiHub> {
  const hub = await openTestHub(servers, overrides);
  const server = createServer(buildApp(hub, typeof app === 'function' ? await app(hub) : app).callback());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const http = request(server);
  return {
    hub,
    server,
    http,
    async register(name, extra = {}) {
      const email = `${name.toLowerCase().replace(/[^a-z0-9]/g, '')}${n++}@example.test`;
      const res = await http.post('/v1/auth/register').send({ email, password: 'correct horse battery', name });
      if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${JSON.stringify(res.body)}`);
      let user = res.body.user as { id: string };
      if (extra.role && extra.role !== 'customer') {
        const updated = await hub.store.updateUser(user.id, { role: extra.role }, () => []);
        user = updated!;
      }
      return { id: user.id, email, accessToken: res.body.accessToken, refreshToken: res.body.refreshToken };
    },
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await hub.close();
    },
  };
}

export const bearer = (s: Session): [string, string] => ['Authorization', `Bearer ${s.accessToken}`];

/** Every event in the hub's durable stream so far, with its Nats-Msg-Id and headers. */
export async function streamEvents(hub: Hub): Promise<Array<{ event: EventEnvelope; msgId: string | undefined; subject: string; headers: Record<string, string> }>> {
  const info = await hub.bus.jsm.streams.info(hub.bus.streams.events);
  const out = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await hub.bus.jsm.streams.getMessage(hub.bus.streams.events, { seq }).catch(() => null);
    if (!m) continue;
    const headers: Record<string, string> = {};
    if (m.header) for (const k of m.header.keys()) headers[k] = m.header.get(k);
    out.push({ event: m.json<EventEnvelope>(), msgId: m.header?.get('Nats-Msg-Id'), subject: m.subject, headers });
  }
  return out;
}

/** Polls until `check` returns a truthy value (no fixed sleeps). */
export async function eventually<T>(check: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
