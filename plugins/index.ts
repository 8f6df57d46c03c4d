/**
 * The explicit registry of built-in plugins (no directory scanning). Each entry imports its plugin lazily, so
 * a worker that runs only `push` never loads the edge or the Drive SDK.
 *
 * To add a plugin, append one line:
 *   { name: 'push', description: 'FCM push notifications', load: async () => (await import('./push/index.js')).default },
 * where the module's default export is a Plugin (plugins/runtime/types.ts) or a function returning one.
 */
import type { Plugin } from './runtime/types.js';

export interface BuiltinPlugin {
  /** Must equal the plugin's manifest name. */
  name: string;
  description: string;
  /** True when the plugin only makes sense next to the API (it needs the HTTP server). */
  needsApi?: boolean;
  load: () => Promise<Plugin | (() => Plugin | Promise<Plugin>)>;
}

export const BUILTIN_PLUGINS: BuiltinPlugin[] = [
  { name: 'audit', description: 'Tamper-evident audit log of security and admin events', load: async () => (await import('./audit/index.js')).default },
  { name: 'analytics', description: 'Per-day workspace analytics from chat events', load: async () => (await import('./analytics/index.js')).default },
  { name: 'email', description: 'Unread-message email digests over SMTP', load: async () => (await import('./email/index.js')).default },
  { name: 'push', description: 'FCM push notifications for members without a connected socket', load: async () => (await import('./push/index.js')).default },
  { name: 'edge', description: 'WebSocket edge: Socket.IO and plain WebSocket delivery, presence, typing, receipts, resume', needsApi: true, load: async () => (await import('./edge/index.js')).default },
  { name: 'drive-sync', description: 'Google Drive transcript sync and nightly backup', load: async () => (await import('./storage-sync/index.js')).createDriveSyncPlugin },
  { name: 'dropbox-sync', description: 'Dropbox transcript sync and nightly backup', load: async () => (await import('./storage-sync/index.js')).createDropboxSyncPlugin },
  { name: 'webhooks', description: 'Outgoing webhooks: signed, ordered deliveries retried for over 24 h', load: async () => (await import('./webhooks/index.js')).default },
  // One line per built-in plugin, e.g.:
  // { name: 'edge', description: 'WebSocket edge', needsApi: true, load: async () => (await import('./edge/index.js')).default },
];

export class UnknownPluginError extends Error {
  constructor(
    readonly unknown: string[],
    readonly available: string[],
  ) {
    super(`unknown plugin${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; available: ${available.join(', ') || '(none)'}`);
    this.name = 'UnknownPluginError';
  }
}

/** Names from a comma list, or every built-in for 'all' (skipping API-only plugins when `api` is false). */
export function pluginNames(spec: string, opts: { api?: boolean } = {}): string[] {
  const wanted = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (wanted.length === 1 && wanted[0] === 'all') {
    return BUILTIN_PLUGINS.filter((p) => opts.api !== false || !p.needsApi).map((p) => p.name);
  }
  const available = BUILTIN_PLUGINS.map((p) => p.name);
  const unknown = wanted.filter((n) => !available.includes(n));
  if (unknown.length) throw new UnknownPluginError(unknown, available);
  return [...new Set(wanted)];
}

/** Loads the named built-in plugins. */
export async function loadPlugins(names: string[]): Promise<Plugin[]> {
  const out: Plugin[] = [];
  for (const name of names) {
    const entry = BUILTIN_PLUGINS.find((p) => p.name === name);
    if (!entry) throw new UnknownPluginError([name], BUILTIN_PLUGINS.map((p) => p.name));
    const loaded = await entry.load();
    const plugin = typeof loaded === 'function' ? await loaded() : loaded;
    if (plugin.manifest.name !== name) throw new Error(`built-in plugin ${name} declares the name ${plugin.manifest.name}`);
    out.push(plugin);
  }
  return out;
}

/** `voxa start` / `voxa worker`: the plugins a comma list (or 'all') selects, loaded. */
export async function selectPlugins(spec: string, opts: { api?: boolean } = {}): Promise<Plugin[]> {
  return loadPlugins(pluginNames(spec, opts));
}
