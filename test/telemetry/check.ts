/**
 * The dashboards check (`npm run dashboards:check`, and test/telemetry/dashboards.test.ts): proves the shipped
 * dashboards and alerts work against a real hub.
 *
 * 1. Static rules: every dashboard has a Prometheus `datasource` variable, every panel a unit and a datasource,
 *    every rate()/increase() uses `$__rate_interval`.
 * 2. A real hub (API, edge and every built-in plugin, on real nats-server and redis-server) gets traffic: users
 *    register, send messages over REST and both socket transports, sockets resume, a webhook receives events.
 * 3. A real Prometheus scrapes the hub every second; then every panel query is evaluated through its HTTP API
 *    and must return at least one finite value, and every metric a panel or an alert names must exist in the
 *    hub's /metrics.
 * 4. `promtool check rules` and `promtool test rules` pass.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '../helpers/servers.js';

const run = promisify(execFile);
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DASHBOARDS_DIR = join(ROOT, 'dashboards', 'grafana', 'dashboards');
export const ALERTS = join(ROOT, 'dashboards', 'prometheus', 'alerts.yml');
export const ALERT_TESTS = join(ROOT, 'dashboards', 'prometheus', 'alerts.test.yml');

interface Target {
  expr: string;
  refId: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  fieldConfig?: { defaults?: { unit?: string } };
  targets?: Target[];
  panels?: Panel[];
}
export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating?: { list?: Array<{ name: string; type: string; query?: string }> };
  panels: Panel[];
}

export interface PanelQuery {
  dashboard: string;
  panel: string;
  refId: string;
  expr: string;
}

export function loadDashboards(): Array<{ file: string; dashboard: Dashboard }> {
  return readdirSync(DASHBOARDS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, dashboard: JSON.parse(readFileSync(join(DASHBOARDS_DIR, file), 'utf8')) as Dashboard }));
}

function flatPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => (p.type === 'row' ? flatPanels(p.panels ?? []) : [p]));
}

export function panelQueries(): PanelQuery[] {
  return loadDashboards().flatMap(({ dashboard }) =>
    flatPanels(dashboard.panels).flatMap((p) => (p.targets ?? []).map((t) => ({ dashboard: dashboard.title, panel: p.title, refId: t.refId, expr: t.expr }))),
  );
}

/** Problems with the dashboards as files (no Prometheus needed). */
export function staticProblems(dashboards = loadDashboards()): string[] {
  const problems: string[] = [];
  const uids = new Set<string>();
  for (const { file, dashboard: d } of dashboards) {
    if (uids.has(d.uid)) problems.push(`${file}: duplicate uid ${d.uid}`);
    uids.add(d.uid);
    if (!(d.schemaVersion >= 36)) problems.push(`${file}: schemaVersion ${d.schemaVersion} is not the current schema`);
    const ds = d.templating?.list?.find((v) => v.name === 'datasource');
    if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus') problems.push(`${file}: no "datasource" variable of type prometheus`);
    const panels = flatPanels(d.panels);
    if (panels.length === 0) problems.push(`${file}: no panels`);
    for (const p of panels) {
      const where = `${file} › ${p.title}`;
      if (!p.fieldConfig?.defaults?.unit) problems.push(`${where}: no unit`);
      if (p.datasource?.uid !== '${datasource}') problems.push(`${where}: datasource is not \${datasource}`);
      if (!p.targets?.length) problems.push(`${where}: no queries`);
      for (const t of p.targets ?? []) {
        for (const m of t.expr.matchAll(/\b(rate|irate|increase|deriv|delta)\s*\(([^[]*)\[([^\]]+)\]/g)) {
          if (m[3] !== '$__rate_interval') problems.push(`${where}: ${m[1]}() over [${m[3]}] instead of [$__rate_interval]`);
        }
      }
    }
  }
  return problems;
}

/** Metric names (voxa_*) a PromQL expression refers to. */
export function metricNames(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b(voxa_[a-z0-9_]+)\b/g)].map((m) => m[1]!))];
}

/** Sample names present in a /metrics exposition. */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    names.add(line.split(/[{ ]/)[0]!);
  }
  return names;
}

/** Metric names in the alert rules (voxa_* only; `up` is Prometheus's own). */
export function alertMetricNames(): string[] {
  const text = readFileSync(ALERTS, 'utf8');
  const exprs = [...text.matchAll(/expr:\s*(\|[\s\S]*?)(?=\n\s+for:|\n\s+labels:)|expr:\s*(.+)/g)].map((m) => m[1] ?? m[2] ?? '');
  return [...new Set(exprs.flatMap(metricNames))];
}

export async function promtool(): Promise<{ ok: boolean; output: string }> {
  try {
    const a = await run('promtool', ['check', 'rules', ALERTS]);
    const b = await run('promtool', ['test', 'rules', ALERT_TESTS], { cwd: dirname(ALERT_TESTS) });
    return { ok: true, output: `${a.stdout}${a.stderr}${b.stdout}${b.stderr}` };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}` };
  }
}

// ---- a real Prometheus --------------------------------------------------------------------------------------

export interface RunningPrometheus {
  url: string;
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  stop(): Promise<void>;
}

/** Starts Debian's prometheus scraping `target` (host:port) every second, with temp storage. */
export async function startPrometheus(target: string): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-prom-'));
  const port = await freePort();
  const conf = join(dir, 'prometheus.yml');
  writeFileSync(
    conf,
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: voxa\n    static_configs:\n      - targets: ['${target}']\n`,
  );
  const child: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${conf}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`prometheus did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    async query(expr) {
      const res = await fetch(`${url}/api/v1/query`, { method: 'POST', body: new URLSearchParams({ query: expr }) });
      const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: unknown } };
      if (body.status !== 'success') throw new Error(`query failed: ${body.error ?? res.status}`);
      if (body.data!.resultType !== 'vector') throw new Error(`unexpected result type ${body.data!.resultType}`);
      return body.data!.result as Array<{ metric: Record<string, string>; value: [number, string] }>;
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A panel query as Grafana would send it: template variables replaced by concrete values. */
export function concreteExpr(expr: string): string {
  return expr.replaceAll('$__rate_interval', '1m').replaceAll('${__rate_interval}', '1m').replaceAll('$__interval', '15s');
}

// ---- the whole check ----------------------------------------------------------------------------------------

export interface PanelResult extends PanelQuery {
  ok: boolean;
  series: number;
  reason?: string;
}

export interface CheckReport {
  ok: boolean;
  staticProblems: string[];
  panels: PanelResult[];
  /** Metrics a panel or alert names that the hub's /metrics does not expose. */
  missingMetrics: string[];
  promtool: { ok: boolean; output: string };
}

/** A local webhook receiver that accepts everything (the far end of the webhook connector). */
async function startReceiver(): Promise<{ url: string; count: () => number; close(): Promise<void> }> {
  let n = 0;
  const srv: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      n++;
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/hook`, count: () => n, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

async function poll<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface CheckOptions {
  log?: (line: string) => void;
}

/**
 * Runs everything. Needs nats-server, redis-server, prometheus and promtool on PATH. The imports of the hub are
 * dynamic so a caller can start tracing before them.
 */
export async function runDashboardsCheck(opts: CheckOptions = {}): Promise<CheckReport> {
  const log = opts.log ?? (() => undefined);
  const { startServers, testConfig } = await import('../helpers/hub.js');
  const { runHub } = await import('../../core/server.js');
  const { ConnectionService } = await import('../../connectors/connections.js');
  const { generateSecret } = await import('../../connectors/webhook/signing.js');
  const { wsClient, sioClient } = await import('../edge/support.js');

  const problems = staticProblems();
  const promtoolResult = await promtool();
  log(`static: ${problems.length} problem(s); promtool: ${promtoolResult.ok ? 'ok' : 'FAILED'}`);

  const servers = await startServers();
  const receiver = await startReceiver();
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => servers.dispose(), () => receiver.close()];
  try {
    const config = testConfig(servers, { host: '127.0.0.1', port: 0, plugins: 'all', webhooksAllowPrivate: true });
    const hub = await runHub(config, { api: true, embedded: false, plugins: 'all', name: 'voxa-check' });
    cleanups.unshift(async () => {
      await hub.stop();
      rmSync(config.dataDir, { recursive: true, force: true });
    });
    const base = `http://127.0.0.1:${hub.port}`;
    log(`hub listening on ${base}`);

    const api = async (method: string, path: string, token?: string, body?: unknown) => {
      const res = await fetch(base + path, {
        method,
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {} }; // eslint-disable-line @typescript-eslint/no-explicit-any
    };
    const register = async (name: string) => {
      const r = await api('POST', '/v1/auth/register', undefined, { email: `${name}.${Date.now()}@example.test`, password: 'correct horse battery', name });
      if (r.status !== 201) throw new Error(`register failed: ${r.status} ${JSON.stringify(r.body)}`);
      return { id: r.body.user.id as string, token: r.body.accessToken as string };
    };
    const ana = await register('Ana');
    const ben = await register('Ben');
    const conv = await api('POST', '/v1/conversations', ana.token, { type: 'direct', members: [ben.id] });
    if (conv.status !== 201) throw new Error(`conversation failed: ${conv.status}`);
    const convId = conv.body.conversation.id as string;

    // A webhook subscription, so the webhook connector's queue runs real jobs against a local receiver.
    await new ConnectionService(hub.hub).create(hub.hub.config.defaultWorkspaceId, 'webhook', {
      url: receiver.url,
      events: ['message.created'],
      secret: generateSecret(),
    });

    const ws = await wsClient(base, ben.token);
    const sio = await sioClient(base, ana.token);
    cleanups.unshift(() => ws.close(), () => sio.close());

    const prom = await startPrometheus(`127.0.0.1:${hub.port}`);
    cleanups.unshift(() => prom.stop());
    log(`prometheus on ${prom.url}`);

    // Traffic while Prometheus scrapes: REST sends, socket sends on both transports, reads, a 404, resumes.
    let sent = 0;
    const traffic = async (rounds: number) => {
      for (let i = 0; i < rounds; i++) {
        await api('POST', `/v1/conversations/${convId}/messages`, ana.token, { text: `rest ${sent}`, clientId: `rest-${sent}` });
        await ws.request('send-message', { conversationId: convId, text: `ws ${sent}`, clientId: `ws-${sent}` });
        await sio.request('send-message', { conversationId: convId, text: `sio ${sent}`, clientId: `sio-${sent}` });
        await api('GET', `/v1/conversations/${convId}/messages?limit=20`, ben.token);
        await api('GET', '/v1/conversations/cnv_does_not_exist/messages', ben.token);
        sent++;
        await new Promise((r) => setTimeout(r, 150));
      }
    };
    await traffic(5);
    // Resumes on both transports: reconnect with a cursor behind the head.
    const wsR = await wsClient(base, ben.token, { cursors: { [convId]: 1 } });
    const sioR = await sioClient(base, ana.token, { cursors: { [convId]: 1 } });
    cleanups.unshift(() => wsR.close(), () => sioR.close());
    await traffic(10);
    await poll('webhook deliveries', async () => receiver.count() > 0);
    await poll('plugin consumers with lag samples', async () => (await prom.query('voxa_plugin_consumer_pending_events')).length > 0);
    await poll('ten scrapes of the hub', async () => {
      const r = await prom.query('count_over_time(up{job="voxa"}[1m])');
      return r.length > 0 && Number(r[0]!.value[1]) >= 10;
    });
    await traffic(5);
    await poll('a scrape after the traffic', async () => {
      const r = await prom.query('time() - timestamp(up{job="voxa"})');
      return r.length > 0 && Number(r[0]!.value[1]) < 1.5;
    });
    await new Promise((r) => setTimeout(r, 1500));

    const exposition = await (await fetch(`${base}/metrics`)).text();
    const exposed = exposedNames(exposition);
    const queries = panelQueries();
    const named = new Set([...queries.flatMap((q) => metricNames(q.expr)), ...alertMetricNames()]);
    const missingMetrics = [...named].filter((n) => !exposed.has(n)).sort();

    const panels: PanelResult[] = [];
    for (const q of queries) {
      try {
        const result = await prom.query(concreteExpr(q.expr));
        const finite = result.filter((s) => Number.isFinite(Number(s.value[1])));
        const missing = metricNames(q.expr).filter((n) => !exposed.has(n));
        const reason =
          result.length === 0
            ? `no series${missing.length ? ` (not exposed by the hub: ${missing.join(', ')})` : ''}`
            : finite.length === 0
              ? 'only NaN values (no observations in the window)'
              : undefined;
        panels.push({ ...q, ok: !reason, series: finite.length, ...(reason ? { reason } : {}) });
      } catch (err) {
        panels.push({ ...q, ok: false, series: 0, reason: (err as Error).message });
      }
    }
    const ok = problems.length === 0 && promtoolResult.ok && missingMetrics.length === 0 && panels.every((p) => p.ok);
    return { ok, staticProblems: problems, panels, missingMetrics, promtool: promtoolResult };
  } finally {
    for (const c of cleanups) await Promise.resolve(c()).catch(() => undefined);
  }
}

/** A readable report. */
export function formatReport(r: CheckReport): string {
  const lines: string[] = [];
  lines.push(`Dashboards check: ${r.ok ? 'PASS' : 'FAIL'}`);
  lines.push(`  static rules: ${r.staticProblems.length === 0 ? 'ok' : ''}`);
  for (const p of r.staticProblems) lines.push(`    ✗ ${p}`);
  lines.push(`  promtool check rules + test rules: ${r.promtool.ok ? 'ok' : 'FAILED'}`);
  if (!r.promtool.ok) lines.push(r.promtool.output.replace(/^/gm, '    '));
  lines.push(`  metrics named by panels and alerts missing from /metrics: ${r.missingMetrics.length ? r.missingMetrics.join(', ') : 'none'}`);
  const good = r.panels.filter((p) => p.ok).length;
  lines.push(`  panel queries with data: ${good}/${r.panels.length}`);
  for (const p of r.panels) {
    lines.push(`    ${p.ok ? '✓' : '✗'} ${p.dashboard} › ${p.panel} [${p.refId}]: ${p.ok ? `${p.series} series` : p.reason}`);
  }
  return lines.join('\n');
}
