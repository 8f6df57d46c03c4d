/**
 * Helpers for the notification, audit and analytics plugin tests: a hub on the file's real NATS/Redis with
 * the plugins' REST routes mounted by the real buildApp, and shortcuts to create users directly in the store.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import request from 'supertest';
import type { ConfigInput } from '../../core/config.js';
import type { Role, UserRecord } from '../../core/domain.js';
import { buildApp } from '../../core/http/app.js';
import type { Hub } from '../../core/hub.js';
import type { Store } from '../../core/store/port.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import type { Plugin } from '../../plugins/runtime/types.js';
import { openTestHub, type TestServers } from '../helpers/hub.js';

export interface Session {
  id: string;
  email: string;
  accessToken: string;
}

export interface PluginApi {
  hub: Hub & { close(): Promise<void> };
  server: Server;
  http: ReturnType<typeof request>;
  /** Registers through the API (so the user can sign in), then sets the role directly in the store. */
  register(name: string, role?: Role): Promise<Session>;
  close(): Promise<void>;
}

let n = 0;

/**
 * Opens a hub, serves the plugins' routes and, unless `runtime` is set, calls their start() (events are then
 * fed to handle() by the test). With `runtime: true` a real PluginRuntime starts them and consumes the stream.
 */
export async function openPluginApi(
  servers: TestServers,
  plugins: Plugin[],
  overrides: ConfigInput = {},
  opts: { runtime?: boolean } = {},
): Promise<PluginApi> {
  const hub = await openTestHub(servers, overrides);
  if (hub.redis && hub.redis.status !== 'ready') await once(hub.redis, 'ready');
  let runtime: PluginRuntime | null = null;
  if (opts.runtime) {
    runtime = new PluginRuntime(hub, plugins, { fetchExpiresMs: 1000 });
    await runtime.start();
  } else {
    for (const p of plugins) await p.start?.({ hub, log: hub.log });
  }
  const mounts = plugins
    .filter((p) => p.routes || p.publicRoutes)
    .map((p) => ({ name: p.manifest.name, routes: p.routes ?? (() => undefined), ...(p.publicRoutes ? { publicRoutes: p.publicRoutes } : {}) }));
  const app = buildApp(hub, { pluginRoutes: mounts });
  const server = createServer(app.callback());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const http = request(server);
  return {
    hub,
    server,
    http,
    async register(name, role = 'customer') {
      const email = `${name.toLowerCase().replace(/[^a-z0-9]/g, '')}${n++}@example.test`;
      const res = await http.post('/v1/auth/register').send({ email, password: 'correct horse battery', name });
      if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${JSON.stringify(res.body)}`);
      const id = res.body.user.id as string;
      if (role !== 'customer') await hub.store.updateUser(id, { role }, () => []);
      return { id, email, accessToken: res.body.accessToken as string };
    },
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      if (runtime) await runtime.stop();
      else for (const p of plugins) await p.stop?.();
      await hub.close();
    },
  };
}

export const bearer = (s: Session): [string, string] => ['Authorization', `Bearer ${s.accessToken}`];

/** A user written straight into the store (no password: enough for plugins that only read roles and names). */
export async function createUser(store: Store, fields: { id: string; role: Role; workspaceId?: string; name?: string; email?: string }): Promise<UserRecord> {
  return store.createUser(
    {
      id: fields.id,
      workspaceId: fields.workspaceId ?? 'w1',
      email: fields.email ?? `${fields.id}@example.test`,
      name: fields.name ?? fields.id,
      role: fields.role,
      createdAt: new Date().toISOString(),
      passwordHash: null,
      disabled: false,
    },
    () => [],
  );
}

/** Polls until `check` returns a truthy value (no fixed sleeps). */
export async function eventually<T>(check: () => Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
