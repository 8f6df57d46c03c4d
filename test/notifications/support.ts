/**
 * Helpers for the notification, audit and analytics plugin tests: a hub on the file's real NATS/Redis with
 * the plugins' REST routes mounted by the real buildApp, and shortcuts to create users directly in the store.
 */
import type { ExecutionContext } from 'ava';
import type { ConfigInput } from '../../core/config.js';
import type { Role, UserRecord } from '../../core/domain.js';
import type { Store } from '../../core/store/port.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import type { Plugin } from '../../plugins/runtime/types.js';
import type { TestServers } from '../helpers/hub.js';
import { eventually as poll, openApiHub, type ApiHub, type Session } from '../api/support.js';

export { bearer, type Session } from '../api/support.js';

export interface PluginApi extends Omit<ApiHub, 'register'> {
  /** Registers through the API (so the user can sign in), then sets the role directly in the store. */
  register(name: string, role?: Role): Promise<Session>;
}

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
  let runtime: PluginRuntime | null = null;
  const api = await openApiHub(servers, overrides, async (hub) => {
    if (opts.runtime) {
      runtime = new PluginRuntime(hub, plugins, { fetchExpiresMs: 1000 });
      await runtime.start();
    } else {
      for (const p of plugins) await p.start?.({ hub, log: hub.log });
    }
    const pluginRoutes = plugins
      .filter((p) => p.routes || p.publicRoutes)
      .map((p) => ({ name: p.manifest.name, routes: p.routes ?? (() => undefined), ...(p.publicRoutes ? { publicRoutes: p.publicRoutes } : {}) }));
    return { pluginRoutes };
  });
  return {
    ...api,
    register: (name, role = 'customer') => api.register(name, { role }),
    async close() {
      await new Promise<void>((r) => api.server.close(() => r()));
      const started: PluginRuntime | null = runtime;
      if (started) await started.stop();
      else for (const p of plugins) await p.stop?.();
      await api.hub.close();
    },
  };
}

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

/** Polls until `check` returns a truthy value (no fixed sleeps); these plugin tests allow 20 s. */
export function eventually<T>(check: () => Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  return poll(check, timeoutMs);
}

/**
 * Asserts the answer every route gives to bad input: 400 VALIDATION_FAILED with `field` (e.g. `body.x`,
 * `query.limit`) among the offending fields.
 */
export function assertInvalid(t: ExecutionContext, res: { status: number; body: { error?: { code?: string; details?: { fields?: string[] } } } }, field: string, label = field): void {
  t.is(res.status, 400, `${label}: status`);
  t.is(res.body.error?.code, 'VALIDATION_FAILED', `${label}: code`);
  t.true(res.body.error?.details?.fields?.includes(field) ?? false, `${label}: ${field} in ${JSON.stringify(res.body.error?.details?.fields)}`);
}
