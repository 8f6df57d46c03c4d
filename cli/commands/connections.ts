/**
 * `voxa connections …`: connect an account or endpoint (interactive prompts built from the connector's JSON
 * Schema on a terminal; `--config file.json` / `--set key=value` otherwise), list, test, enable, disable,
 * remove, backfill, retry-failed, rotate-keys. Secrets are never printed: listings say which secret fields are set.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { loadConfig } from '../../core/config.js';
import { parseSinceArg, runBackfill, type BackfillSummary, type BackfillTarget } from '../../connectors/backfill.js';
import { ConnectionError, ConnectionService, parseConfig, type ConnectionView } from '../../connectors/connections.js';
import { DependencyError, openToolContext, type ToolContext } from '../../connectors/context.js';
import { webhookTargetProblem } from '../../connectors/net.js';
import { loopbackAuthorize } from '../../connectors/oauth2.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { getConnector } from '../../connectors/registry.js';
import { jsonSchemaOf, type Connector } from '../../connectors/types.js';
import { WebhookService } from '../../plugins/webhooks/service.js';
import { CliError, EXIT, isJson, output } from '../util.js';

/** Opens what a command needs and maps framework errors to CLI exit codes. */
export async function withContext<T>(need: { redis?: boolean; nats?: boolean }, fn: (ctx: ToolContext) => Promise<T>): Promise<T> {
  let ctx: ToolContext;
  try {
    ctx = await openToolContext(loadConfig(), need);
  } catch (err) {
    throw toCliError(err);
  }
  try {
    return await fn(ctx);
  } catch (err) {
    throw toCliError(err);
  } finally {
    await ctx.close();
  }
}

export function toCliError(err: unknown): Error {
  if (err instanceof CliError) return err;
  if (err instanceof ConnectionError) {
    return new CliError(err.message, err.code === 'NOT_FOUND' ? EXIT.NOT_FOUND : EXIT.USAGE, err.code);
  }
  if (err instanceof DependencyError) return new CliError(err.message, EXIT.UNAVAILABLE, 'UNAVAILABLE');
  const e = err as Error;
  if (e?.name === 'ConfigError') return new CliError(e.message, EXIT.USAGE, 'INVALID_CONFIG');
  return err as Error;
}

/**
 * The check REST applies to a new webhook target (webhookTargetProblem, as in plugins/webhooks/routes.ts), as a
 * usage error naming the flag, with a hint when the target is private or local.
 */
export function checkWebhookUrl(url: string, allowPrivate: boolean, flag = '--url'): void {
  const problem = webhookTargetProblem(url, allowPrivate);
  if (!problem) return;
  const hint = /not public|is local/.test(problem) ? ' (set VOXA_WEBHOOKS_ALLOW_PRIVATE=1 to allow private and loopback targets)' : '';
  throw new CliError(`${flag}: ${problem}${hint}`, EXIT.USAGE, 'VALIDATION_FAILED');
}

export function workspaceOf(cmd: Command): string {
  const ws = (cmd.optsWithGlobals() as { workspace?: string }).workspace;
  return ws ?? loadConfig().defaultWorkspaceId;
}

/** `--set a=b --set list=x,y` into an object; JSON values (numbers, booleans, arrays) are parsed when they parse. */
function parseSets(sets: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const i = s.indexOf('=');
    if (i < 1) throw new CliError(`--set takes key=value, got "${s.includes('=') ? s.slice(0, s.indexOf('=') + 1) + '…' : s}"`, EXIT.USAGE, 'VALIDATION_FAILED');
    const key = s.slice(0, i);
    const raw = s.slice(i + 1);
    let v: unknown = raw;
    try {
      v = JSON.parse(raw);
    } catch {
      v = raw;
    }
    out[key] = v;
  }
  return out;
}

type Prop = { type?: string; description?: string; enum?: string[]; items?: { enum?: string[] }; default?: unknown; 'x-secret'?: boolean; 'x-oauth'?: boolean };

/** Asks for every missing field on a terminal. Without a TTY, names the missing required fields instead. */
async function promptMissing(connector: Connector, given: Record<string, unknown>, interactive: boolean): Promise<Record<string, unknown>> {
  const schema = jsonSchemaOf(connector) as { properties?: Record<string, Prop>; required?: string[] };
  const props = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const missing = Object.keys(props).filter((k) => given[k] === undefined && !props[k]!['x-oauth']);
  if (missing.length === 0) return given;
  const missingRequired = missing.filter((k) => required.has(k));
  if (!interactive) {
    if (missingRequired.length === 0) return given;
    throw new CliError(
      `missing ${missingRequired.join(', ')}; not prompting without a terminal — pass --config file.json or --set key=value (see \`voxa connectors spec ${connector.id}\`)`,
      EXIT.USAGE,
      'INPUT_REQUIRED',
    );
  }
  const { input, password, select, checkbox, confirm } = await import('@inquirer/prompts');
  const out = { ...given };
  for (const k of missing) {
    const p = props[k]!;
    const message = `${k}${p.description ? ` — ${p.description}` : ''}${required.has(k) ? '' : ' (optional)'}`;
    let v: unknown;
    if (p.enum) v = await select({ message, choices: p.enum.map((e) => ({ value: e })) });
    else if (p.type === 'array' && p.items?.enum) v = await checkbox({ message, choices: p.items.enum.map((e) => ({ value: e })), required: required.has(k) });
    else if (p.type === 'boolean') v = await confirm({ message, default: Boolean(p.default) });
    else if (p['x-secret']) v = await password({ message, mask: '*' });
    else v = await input({ message, ...(typeof p.default === 'string' ? { default: p.default } : {}) });
    if (v === '' && !required.has(k)) continue;
    out[k] = p.type === 'number' || p.type === 'integer' ? Number(v) : v;
  }
  return out;
}

/**
 * Opens the consent URL in a browser, best effort (the URL is printed either way): the command in
 * `VOXA_BROWSER` or `BROWSER` (split on spaces; the URL is its last argument), else the desktop's opener.
 * Detached and unwaited-for, so a browser that keeps running does not hold the CLI, and a missing opener
 * (a server over SSH) only means the user copies the printed URL.
 */
export function openBrowser(url: string, env: NodeJS.ProcessEnv = process.env): void {
  const configured = (env.VOXA_BROWSER ?? env.BROWSER ?? '').trim();
  const [cmd, ...args] = configured
    ? configured.split(/\s+/)
    : process.platform === 'darwin'
      ? ['open']
      : process.platform === 'win32'
        ? ['cmd', '/c', 'start', '""']
        : ['xdg-open'];
  try {
    const child = spawn(cmd!, [...args, url], { stdio: 'ignore', detached: true });
    child.on('error', () => undefined);
    child.unref();
  } catch {
    // Nothing to open it with: the printed URL is the way.
  }
}

function renderConnection(c: ConnectionView): string {
  const reason = c.statusReason ? ` (${c.statusReason})` : '';
  const secrets = c.secretFields.length ? `  secrets: ${c.secretFields.map((f) => `${f}=[set]`).join(' ')}` : '';
  return `${c.id}  ${c.connector.padEnd(13)} ${c.status}${reason}  ${c.name}${secrets}`;
}

/** What `backfill` replays into, per connector. */
async function backfillTarget(ctx: ToolContext, queues: ConnectorQueues, id: string): Promise<{ target: BackfillTarget; view: ConnectionView }> {
  const svc = new ConnectionService(ctx.hub);
  const rec = await svc.getRecord(id);
  if (rec.connector === 'webhook') return { target: new WebhookService(ctx.hub, queues).backfillTarget(rec), view: await svc.get(id) };
  const storage = await import('../../plugins/storage-sync/service.js').catch(() => null);
  if (storage && (rec.connector === 'google-drive' || rec.connector === 'dropbox')) {
    return { target: await storage.StorageSync.backfillTarget(ctx.hub, rec), view: await svc.get(id) };
  }
  throw new CliError(`connector ${rec.connector} has no backfill`, EXIT.USAGE, 'NOT_SUPPORTED');
}

export function register(program: Command): void {
  const connections = program
    .command('connections')
    .description('Configure connections (a connector set up in a workspace): add, list, test, enable, disable, remove, backfill.')
    .addHelpText(
      'after',
      '\nExamples:\n  $ voxa connections add google-drive\n  $ voxa connections list --json\n  $ voxa connections disable con_01j…\n  $ voxa connections enable con_01j… && voxa connections backfill con_01j… --since 2026-10-01   # send what came in while it was off',
    );

  connections
    .command('add <connector>')
    .description('Add a connection. Prompts for the config on a terminal; otherwise give --config or --set.')
    .option('--config <file>', 'JSON file with the connector config (see `voxa connectors spec <id>`)')
    .option('--set <key=value>', 'one config field (repeatable; JSON values are parsed)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--name <name>', 'a name to recognise the connection by')
    .option('--test', 'check the credentials right after adding')
    .option('--no-browser', 'OAuth2 sign-in: only print the consent URL (default: also open it with $VOXA_BROWSER, $BROWSER or the desktop opener)')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText(
      'after',
      '\nExamples:\n  $ voxa connections add google-drive                       # prompts, then opens the Google consent page\n  $ voxa connections add dropbox --set clientId=abc123 --no-browser   # prints the consent URL to open elsewhere\n  $ voxa connections add webhook --config hook.json --json\n  $ voxa connections add dropbox --set clientId=abc123 --set folderPath=/Voxa',
    )
    .action(async (connectorId: string, opts: { config?: string; set?: string[]; name?: string; test?: boolean; browser?: boolean }, cmd: Command) => {
      const connector = getConnector(connectorId);
      if (!connector) throw new CliError(`unknown connector "${connectorId}"; see \`voxa connectors list\``, EXIT.NOT_FOUND, 'NOT_FOUND');
      let given: Record<string, unknown> = {};
      if (opts.config) {
        try {
          given = JSON.parse(readFileSync(opts.config, 'utf8')) as Record<string, unknown>;
        } catch (err) {
          throw new CliError(`--config ${opts.config}: ${(err as Error).message.split('\n')[0]}`, EXIT.USAGE, 'VALIDATION_FAILED');
        }
      }
      given = { ...given, ...parseSets(opts.set) };
      const interactive = Boolean(process.stdin.isTTY && process.stdout.isTTY) && !isJson(cmd);
      let input = await promptMissing(connector, given, interactive);
      if (connector.oauth && !input.refreshToken) {
        const authorizeUrl = String(input[connector.oauth.authorizeUrlField ?? ''] ?? connector.oauth.authorizeUrl);
        const tokenUrl = String(input[connector.oauth.tokenUrlField ?? ''] ?? connector.oauth.tokenUrl);
        const clientId = String(input.clientId ?? '');
        if (!clientId) throw new CliError('clientId is required for sign-in', EXIT.USAGE, 'INPUT_REQUIRED');
        const tokens = await loopbackAuthorize(
          {
            authorizeUrl,
            tokenUrl,
            clientId,
            ...(input.clientSecret ? { clientSecret: String(input.clientSecret) } : {}),
            scopes: connector.oauth.scopes,
            ...(connector.oauth.extraAuthorizeParams ? { extraAuthorizeParams: connector.oauth.extraAuthorizeParams } : {}),
          },
          (url) => {
            process.stderr.write(`Open this URL in a browser to connect ${connector.displayName}:\n\n  ${url}\n\nWaiting for the redirect…\n`);
            if (opts.browser !== false) openBrowser(url);
          },
        ).catch((err: Error) => {
          throw new CliError(`sign-in failed: ${err.message}`, EXIT.FAIL, 'AUTH_FAILED');
        });
        input = { ...input, ...tokens };
      }
      try {
        parseConfig(connector, input);
      } catch (err) {
        throw toCliError(err);
      }
      await withContext({}, async (ctx) => {
        if (connector.id === 'webhook' && typeof input.url === 'string') checkWebhookUrl(input.url, ctx.hub.config.webhooksAllowPrivate, 'url');
        const svc = new ConnectionService(ctx.hub);
        const view = await svc.create(workspaceOf(cmd), connector.id, input, opts.name);
        let test: { ok: boolean; detail: string } | undefined;
        if (opts.test) test = await connector.test(await svc.resolve(view.id), svc.contextFor(view.id));
        output(cmd, { connection: view, ...(test ? { test } : {}) }, (r: { connection: ConnectionView; test?: { ok: boolean; detail: string } }) =>
          `added ${renderConnection(r.connection)}${r.test ? `\ntest: ${r.test.ok ? 'ok' : 'FAILED'} — ${r.test.detail}` : ''}`,
        );
        if (test && !test.ok) process.exitCode = EXIT.FAIL;
      });
    });

  connections
    .command('list')
    .description('List connections with their status; a broken one says why (e.g. a revoked grant).')
    .option('--connector <id>', 'only connections of this connector')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connections list\n  $ voxa connections list --connector google-drive --json')
    .action(async (opts: { connector?: string }, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const rows = await new ConnectionService(ctx.hub).list(workspaceOf(cmd), opts.connector);
        output(cmd, isJson(cmd) ? { connections: rows } : rows, (r: ConnectionView[]) => (r.length ? r.map(renderConnection).join('\n') : 'no connections'));
      });
    });

  connections
    .command('test <id>')
    .description('Check a connection\'s credentials against the real service; exits 1 when the check fails.')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connections test con_01j…')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const svc = new ConnectionService(ctx.hub);
        const rec = await svc.getRecord(id, workspaceOf(cmd));
        const connector = getConnector(rec.connector);
        if (!connector) throw new CliError(`connector ${rec.connector} is not installed`, EXIT.FAIL);
        const r = await connector.test(await svc.resolve(rec), svc.contextFor(id)).catch((err: Error) => ({ ok: false, detail: err.message }));
        output(cmd, { id, ...r }, (x: { ok: boolean; detail: string }) => `${x.ok ? 'ok' : 'FAILED'} — ${x.detail}`);
        if (!r.ok) process.exitCode = EXIT.FAIL;
      });
    });

  for (const [name, status, doc] of [
    ['enable', 'active', 'Enable a connection (a webhook resumes its pending deliveries).'],
    [
      'disable',
      'disabled',
      'Disable a connection: nothing is sent or synced while it is off. Events that arrive meanwhile are not queued for it (enabling does not send them); `voxa connections backfill <id> --since …` sends those. Deliveries queued before it was disabled wait and resume on enable.',
    ],
  ] as const) {
    connections
      .command(`${name} <id>`)
      .description(doc)
      .option('--workspace <id>', 'workspace (default: the configured default workspace)')
      .option('--json', 'machine-readable JSON output')
      .addHelpText('after', `\nExamples:\n  $ voxa connections ${name} con_01j…`)
      .action(async (id: string, _opts: unknown, cmd: Command) => {
        const rec = await withContext({}, (ctx) => new ConnectionService(ctx.hub).getRecord(id, workspaceOf(cmd)));
        await withContext({ redis: status === 'active' && rec.connector === 'webhook' }, async (ctx) => {
          let view: ConnectionView;
          if (status === 'active' && rec.connector === 'webhook') {
            const queues = new ConnectorQueues(ctx.hub);
            try {
              const w = new WebhookService(ctx.hub, queues);
              await w.enable(id, workspaceOf(cmd));
              view = await w.connections.get(id);
            } finally {
              await queues.close();
            }
          } else view = await new ConnectionService(ctx.hub).setStatus(id, status, status === 'disabled' ? 'disabled by a user' : null, workspaceOf(cmd));
          output(cmd, { connection: view }, (r: { connection: ConnectionView }) => renderConnection(r.connection));
        });
      });
  }

  connections
    .command('remove <id>')
    .description('Remove a connection and its sealed secrets.')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connections remove con_01j…')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        // Job queues are opened only for a webhook (its pending deliveries' jobs go with its log).
        let queues: ConnectorQueues | undefined;
        const webhooks = () => new WebhookService(ctx.hub, (queues = new ConnectorQueues(ctx.hub)));
        const { deliveries } = await WebhookService.removeConnection(ctx.hub, id, { workspaceId: workspaceOf(cmd), webhooks }).finally(() => queues?.close());
        if (deliveries === undefined) output(cmd, { removed: id }, () => `removed ${id}`);
        else output(cmd, { removed: id, deliveries }, (r: { deliveries: number }) => `removed ${id} and its ${r.deliveries} deliveries`);
      });
    });

  connections
    .command('backfill <id>')
    .description('Replay history from a date or stream sequence into this connection alone; idempotent.')
    .requiredOption('--since <when>', 'a date (2026-10-01), an ISO timestamp, or a stream sequence number')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connections backfill con_01j… --since 2026-10-01\n  $ voxa connections backfill whk… --since 1200 --json')
    .action(async (id: string, opts: { since: string }, cmd: Command) => {
      let since;
      try {
        since = parseSinceArg(opts.since);
      } catch (err) {
        throw new CliError((err as Error).message, EXIT.USAGE, 'VALIDATION_FAILED');
      }
      await withContext({ redis: true, nats: true }, async (ctx) => {
        const queues = new ConnectorQueues(ctx.hub);
        try {
          const rec = await new ConnectionService(ctx.hub).getRecord(id, workspaceOf(cmd));
          if (rec.status !== 'active') throw new CliError(`connection ${id} is ${rec.status}; enable it first`, EXIT.FAIL, 'CONFLICT');
          const { target } = await backfillTarget(ctx, queues, id);
          const bar = await progressBar(!isJson(cmd) && Boolean(process.stderr.isTTY));
          const summary = await runBackfill(ctx.nats!, rec, target, since, bar.update);
          bar.stop();
          output(cmd, summary, (s: BackfillSummary) =>
            [
              `backfill ${s.connectionId}: ${s.events} events read (seq ${s.fromSeq ?? '-'}…${s.toSeq ?? '-'}), ${s.deferred} folded into transcripts, ${s.ignored} not relevant; ` +
                `${s.written} written, ${s.skipped} already done, ${s.failed} failed`,
              ...s.failures.map((f) => `  failed${f.eventId ? ` ${f.eventId}` : ''}${f.conversationId ? ` (${f.conversationId})` : ''}: ${f.reason}`),
            ].join('\n'),
          );
          if (summary.failed > 0) process.exitCode = EXIT.FAIL;
        } finally {
          await queues.close();
        }
      });
    });

  connections
    .command('retry-failed <id>')
    .description('Re-queue the failed jobs of one connection (uploads, deliveries) kept by its connector queue.')
    .option('--workspace <id>', 'workspace (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connections retry-failed con_01j…\n  $ voxa connections retry-failed con_01j… --json')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withContext({ redis: true }, async (ctx) => {
        const rec = await new ConnectionService(ctx.hub).getRecord(id, workspaceOf(cmd));
        const queues = new ConnectorQueues(ctx.hub);
        try {
          // Jobs name their connection: connectionId (storage sync) or subscriptionId (a webhook's drain job).
          const ofThis = (job: { data: unknown }): boolean => {
            const d = (job.data ?? {}) as { connectionId?: string; subscriptionId?: string };
            return d.connectionId === id || d.subscriptionId === id;
          };
          let retried = await queues.retryFailed(rec.connector, undefined, ofThis);
          // A webhook held by a failing head waits in a delayed (not failed) drain job: send its head now too.
          if (rec.connector === 'webhook') retried += await new WebhookService(ctx.hub, queues).retryNow(id);
          // A disabled connection's re-queued jobs would find it off and stop again: say so.
          const note = rec.status !== 'active' ? `connection is ${rec.status}; enable it for the jobs to do anything` : null;
          output(cmd, { id, connector: rec.connector, retried, ...(note ? { note } : {}) }, (r: { retried: number; note?: string }) =>
            `re-queued ${r.retried} failed job${r.retried === 1 ? '' : 's'} of ${id}${r.note ? ` (${r.note})` : ''}`,
          );
        } finally {
          await queues.close();
        }
      });
    });

  connections
    .command('rotate-keys')
    .description('Re-encrypt every connection\'s secrets under the current VOXA_SECRET_KEY (old keys in VOXA_PREVIOUS_SECRET_KEYS).')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ VOXA_SECRET_KEY=<new> VOXA_PREVIOUS_SECRET_KEYS=<old> voxa connections rotate-keys')
    .action(async (_opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const r = await new ConnectionService(ctx.hub).rotateKeys();
        output(cmd, r, (x: typeof r) => `re-encrypted ${x.rotated} of ${x.total} connections${x.failed.length ? `; ${x.failed.length} failed: ${x.failed.map((f) => `${f.id} (${f.reason})`).join(', ')}` : ''}`);
        if (r.failed.length) process.exitCode = EXIT.FAIL;
      });
    });
}

/** cli-progress on a terminal; silent otherwise (pipes, --json, CI). */
async function progressBar(tty: boolean): Promise<{ update: (done: number, total: number) => void; stop: () => void }> {
  if (!tty) return { update: () => undefined, stop: () => undefined };
  const { SingleBar, Presets } = (await import('cli-progress')).default;
  const bar = new SingleBar({ format: 'backfill [{bar}] {value}/{total} events', stream: process.stderr }, Presets.shades_classic);
  let started = false;
  return {
    update(done, total) {
      if (!started) {
        bar.start(total, done);
        started = true;
      } else bar.update(done);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
