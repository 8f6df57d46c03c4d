/**
 * `voxa plugins list | pause | resume | rewind`: steer running plugins. The commands only talk to NATS (the
 * control KV bucket and the consumers), so they reach every process that runs the plugin.
 */
import type { Command } from 'commander';
import { toolNatsUrl } from '../../connectors/context.js';
import { ConfigError, loadConfig, maskUrl } from '../../core/config.js';
import { BUILTIN_PLUGINS } from '../../plugins/index.js';
import { connectAdmin, listPlugins, PluginNotFoundError, rewindPlugin, setPaused, type AdminHandles, type PluginReport } from '../../plugins/runtime/admin.js';
import { CliError, EXIT, output } from '../util.js';

/**
 * Connects to NATS (NATS_URL, else the nats-server `voxa start` embeds on VOXA_EMBEDDED_NATS_PORT) in the
 * configured namespace, runs fn, closes.
 */
export async function withAdmin<T>(fn: (h: AdminHandles) => Promise<T>): Promise<T> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, EXIT.USAGE, 'INVALID_CONFIG');
    throw err;
  }
  const url = toolNatsUrl(config);
  let h: AdminHandles;
  try {
    h = await connectAdmin(url, config.natsNamespace);
  } catch (err) {
    throw new CliError(`cannot reach NATS at ${maskUrl(url)} (set NATS_URL): ${(err as Error).message}`, EXIT.UNAVAILABLE, 'NATS_UNAVAILABLE');
  }
  try {
    return await fn(h);
  } finally {
    await h.nc.close().catch(() => undefined);
  }
}

const builtinNames = (): string[] => BUILTIN_PLUGINS.map((p) => p.name);

/**
 * The plugin's report, or exit 3 when no process knows it: neither built in nor seen by the runtime (control
 * state, a consumer or dead letters). Shared by every command that takes a plugin name (pause, resume, rewind,
 * dlq), so a typo is a clear "no plugin" rather than an empty answer.
 */
export async function knownPlugin(h: AdminHandles, plugin: string): Promise<PluginReport> {
  if (!/^[a-z0-9-]{1,40}$/.test(plugin)) throw new CliError(`"${plugin}" is not a plugin name ([a-z0-9-])`, EXIT.USAGE, 'VALIDATION_FAILED');
  const found = (await listPlugins(h, builtinNames())).find((p) => p.name === plugin);
  if (!found) throw new CliError(`no plugin named ${plugin} (see voxa plugins list)`, EXIT.NOT_FOUND, 'PLUGIN_NOT_FOUND');
  return found;
}

/** `--since` is a stream sequence (digits) or an ISO 8601 time. */
export function parseSince(value: string): number | Date {
  if (/^\d+$/.test(value)) {
    const n = Number(value);
    if (n < 1 || !Number.isSafeInteger(n)) throw new CliError('--since sequence must be 1 or more', EXIT.USAGE, 'VALIDATION_FAILED');
    return n;
  }
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) {
    throw new CliError(`--since must be a stream sequence or an ISO time like 2025-01-31T12:00:00Z (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
  }
  return new Date(t);
}

const cell = (v: unknown): string => (v === null || v === undefined ? '-' : String(v));

function table(rows: PluginReport[]): string {
  if (!rows.length) return 'No plugins known yet.';
  // STATE is paused or not (the control bucket); WAITING, the processes pulling right now, is what says one runs it.
  const head = ['PLUGIN', 'STATE', 'GEN', 'WAITING', 'PENDING', 'ACK-PENDING', 'REDELIVERED', 'RETRYING', 'DEAD-LETTERS'];
  const body = rows.map((r) => [r.name, r.state, r.generation, r.waiting, r.pending, r.ackPending, r.redelivered, r.retryPending, r.deadLetters].map(cell));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function register(program: Command): void {
  const plugins = program
    .command('plugins')
    .description('Inspect and steer plugins in every running process (list, pause, resume, rewind).')
    .addHelpText('after', '\nExamples:\n  $ voxa plugins list\n  $ voxa plugins pause webhooks\n  $ voxa plugins rewind analytics --since 2025-01-01T00:00:00Z');

  plugins
    .command('list')
    .description('Each plugin with its state, consumer lag (pending), ack pending, redeliveries, retries and dead letters.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa plugins list\n  $ voxa plugins list --json')
    .action(async (_opts, cmd: Command) => {
      const rows = await withAdmin((h) => listPlugins(h, builtinNames()));
      output(cmd, { plugins: rows }, (v: { plugins: PluginReport[] }) => table(v.plugins));
    });

  for (const [verb, paused] of [
    ['pause', true],
    ['resume', false],
  ] as const) {
    plugins
      .command(`${verb} <plugin>`)
      .description(
        paused
          ? 'Stop a plugin from taking new events in every process (in-flight work finishes); events wait in the stream.'
          : 'Let a paused plugin take events again; it continues where it stopped.',
      )
      .option('--json', 'machine-readable JSON output')
      .addHelpText('after', `\nExamples:\n  $ voxa plugins ${verb} email\n  $ voxa plugins ${verb} email --json`)
      .action(async (plugin: string, _opts, cmd: Command) => {
        const state = await withAdmin(async (h) => {
          await knownPlugin(h, plugin);
          return setPaused(h, plugin, paused);
        });
        output(cmd, { plugin, state: state.paused ? 'paused' : 'running', generation: state.generation }, (v: { plugin: string; state: string }) => `${v.plugin}: ${v.state}`);
      });
  }

  plugins
    .command('rewind <plugin>')
    .description('Replay history into one plugin from a time or stream sequence (other plugins are not affected).')
    .requiredOption('--since <time|seq>', 'ISO 8601 time or events-stream sequence to replay from')
    .option('--json', 'machine-readable JSON output')
    .addHelpText(
      'after',
      '\nA plugin declaring replay "skip-processed" (the default) skips events it already handled; "reprocess" handles\nthem again once (see docs/plugins.md).\n\nExamples:\n  $ voxa plugins rewind analytics --since 2025-01-01T00:00:00Z\n  $ voxa plugins rewind webhooks --since 1200 --json',
    )
    .action(async (plugin: string, opts: { since: string }, cmd: Command) => {
      const since = parseSince(opts.since);
      const result = await withAdmin(async (h) => {
        await knownPlugin(h, plugin);
        try {
          return await rewindPlugin(h, plugin, since);
        } catch (err) {
          if (err instanceof PluginNotFoundError) throw new CliError(err.message, EXIT.NOT_FOUND, 'PLUGIN_NOT_FOUND');
          throw err;
        }
      });
      output(
        cmd,
        result,
        (r: typeof result) => `${r.plugin}: rewound to ${r.since}; ${r.pending} events to replay (consumer ${r.consumer}, generation ${r.generation})`,
      );
    });
}
