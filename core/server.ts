/**
 * The server entry: composes a running hub process from its parts. `voxa start` runs everything (embedded
 * NATS/Redis when not configured, API + edge on one port, every built-in plugin); `voxa worker` runs chosen
 * plugins without the API. The Koa app itself is built by core/http/app.ts and never listens on its own.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { closeHub, openHub, type Hub } from './hub.js';
import { createLogger } from './log.js';
import { startEmbedded, type EmbeddedServices } from './supervisor.js';
import { buildApp } from './http/app.js';
import { answerClientError, answerConnect, answerExpectation, refuseMissingHost, trackResponse } from './http/client-error.js';
import { PluginRuntime } from '../plugins/runtime/runtime.js';
import { selectPlugins } from '../plugins/index.js';
import { startHubCollectors } from './telemetry/collectors.js';
import { shutdownTelemetry } from './telemetry/tracing.js';
import { startMetricsServer, type MetricsServer } from './telemetry/metrics-server.js';
import { withTimeout } from './timeout.js';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface RunningHub {
  hub: Hub;
  server: Server | null;
  runtime: PluginRuntime;
  /** The port the API listens on (useful with port 0). */
  port: number;
  /** Drains and stops everything: the edge's clients are told to reconnect elsewhere, the children stop last. */
  stop(): Promise<void>;
  /** For a stop that hangs: ends the embedded children at once (SIGKILL after a short grace), so none outlives the process. */
  killChildren(): Promise<void>;
}

/** How long open HTTP connections (and WebSockets that ignore their close frame) get before they are cut. */
const CONNECTION_GRACE_MS = 2000;

export interface RunOptions {
  /** Serve the API and the edge (false for `voxa worker`). */
  api: boolean;
  /** Comma list or 'all'; defaults to config.plugins. */
  plugins?: string;
  name?: string;
  logger?: Logger;
  /** Spawn nats-server / redis-server when their URLs are not configured. */
  embedded?: boolean;
  /**
   * Stops a start-up still in progress (a signal while it waits for NATS): what started is stopped, the
   * embedded children included, and runHub rejects with StartAborted.
   */
  signal?: AbortSignal;
  /** Given, as soon as they run, a way to end the embedded children at once (a second signal during start-up). */
  onChildren?: (killChildren: () => Promise<void>) => void;
}

/** runHub was stopped by its signal before it finished starting. */
export class StartAborted extends Error {
  constructor() {
    super('start-up was stopped before it finished');
    this.name = 'StartAborted';
  }
}

export async function runHub(config: Config, opts: RunOptions): Promise<RunningHub> {
  const name = opts.name ?? (opts.api ? 'voxa-hub' : 'voxa-worker');
  const log = opts.logger ?? createLogger(config.logLevel, name);
  let embedded: EmbeddedServices | null = null;
  if (opts.embedded !== false && (!config.natsUrl || !config.redisUrl)) {
    // The children can be ended from the moment the first is spawned, not only once all are up: a second signal
    // while one is still starting must not leave it running.
    embedded = await startEmbedded(
      { natsUrl: config.natsUrl, redisUrl: config.redisUrl, dataDir: config.dataDir, projectRoot: PROJECT_ROOT, natsPort: config.embeddedNatsPort, natsMonitorPort: config.embeddedNatsMonitorPort, redisPort: config.embeddedRedisPort },
      log,
      opts.onChildren,
    );
    config = { ...config, natsUrl: embedded.natsUrl, redisUrl: embedded.redisUrl };
  }
  let server: Server | null = null;
  // Every accepted socket, upgraded WebSockets included (server.closeAllConnections() does not reach those).
  const sockets = new Set<Socket>();
  /** Dependencies start-up is waiting for; what the port answers about until the app takes over. */
  const waitingFor = new Set<string>();
  let handle: RequestListener = startingHandler(() => [...waitingFor].sort());
  let port = 0;
  if (opts.api) {
    // The port is open from the start: while the hub opens (NATS down at start-up keeps it waiting), probes and
    // clients get an answer (503 naming what is awaited) instead of a refused connection.
    // requireHostHeader off: Node's own refusal of an HTTP/1.1 request without Host is an empty 400; the hub's
    // (refuseMissingHost) has the JSON error body.
    server = createServer({ requireHostHeader: false }, (req, res) => {
      if (!refuseMissingHost(req, res)) handle(req, res);
    });
    server.keepAliveTimeout = 65_000;
    // Before the app's listener, so a response is known from its request's first moment.
    server.prependListener('request', trackResponse);
    // What Node would otherwise answer by itself, with no body or not at all: bytes that are no HTTP request, an
    // Expect other than 100-continue, the CONNECT method.
    server.on('clientError', answerClientError);
    server.on('checkExpectation', answerExpectation);
    server.on('connect', answerConnect);
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(config.port, config.host, () => resolve());
      });
    } catch (err) {
      // e.g. the port is taken: nothing else has started but the embedded children.
      await embedded?.stop();
      throw err;
    }
    port = (server.address() as { port: number }).port;
  }
  const closeEarly = async () => {
    if (server) await new Promise<void>((r) => server!.close(() => r()));
    await embedded?.stop();
  };
  let hub: Hub;
  try {
    hub = await openHub(config, {
      name,
      logger: log,
      onWait: (dependency, waiting) => void (waiting ? waitingFor.add(dependency) : waitingFor.delete(dependency)),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    await closeEarly();
    throw opts.signal?.aborted ? new StartAborted() : err;
  }
  let plugins: Awaited<ReturnType<typeof selectPlugins>>;
  let runtime: PluginRuntime;
  try {
    plugins = await selectPlugins(opts.plugins ?? config.plugins, { api: opts.api });
    runtime = new PluginRuntime(hub, plugins);
  } catch (err) {
    await closeHub(hub).catch(() => undefined);
    await closeEarly();
    throw err;
  }
  // The app takes the port over only once the plugins (the WebSocket edge among them) have started: until then
  // /readyz keeps saying 503, so a load balancer sends nothing to an instance whose /ws would still be a 404.
  const appHandler = server ? buildApp(hub, { pluginRoutes: runtime.routes() }).callback() : null;
  let stopCollectors = (): void => undefined;
  let metricsServer: MetricsServer | null = null;
  let stopping: Promise<void> | null = null;
  // Also what undoes a start that failed part-way: each step copes with what never started.
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // Every step runs even when one before it failed (a plugin that throws must not leave the store open or
      // the children running); the first failure is reported once all are done.
      let failure: { err: unknown } | null = null;
      const step = async (fn: () => unknown): Promise<void> => {
        try {
          await fn();
        } catch (err) {
          failure ??= { err };
        }
      };
      await step(stopCollectors);
      // No new connections; idle keep-alive ones end now, requests in progress finish.
      const closed = server ? new Promise<void>((r) => server!.close(() => r())) : Promise.resolve();
      server?.closeIdleConnections();
      const cut = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, CONNECTION_GRACE_MS);
      cut.unref();
      // The plugins stop before the server is waited for: the edge tells its WebSocket clients to reconnect
      // elsewhere (close 1001), and until it does, their sockets would hold server.close() open.
      await step(() => runtime.stop());
      await closed;
      clearTimeout(cut);
      await step(() => metricsServer?.close());
      await step(() => closeHub(hub));
      await step(() => embedded?.stop());
      if (failure) throw (failure as { err: unknown }).err;
    })();
    return stopping;
  };
  try {
    waitingFor.add('plugins');
    await runtime.start({ httpServer: server ?? undefined });
    waitingFor.delete('plugins');
    if (appHandler) handle = appHandler;
    stopCollectors = startHubCollectors(hub);
    if (server) {
      log.info({ port, plugins: plugins.map((p) => p.manifest.name), store: hub.store.kind }, `Voxa Hub listening on http://localhost:${port}`);
    } else {
      metricsServer = await startMetricsServer({ port: config.workerMetricsPort, host: config.host });
      log.info({ plugins: plugins.map((p) => p.manifest.name), metricsPort: metricsServer.port }, 'Voxa worker running');
    }
  } catch (err) {
    // e.g. the API port is taken: undo everything started so far, the embedded children included.
    await stop().catch(() => undefined);
    throw err;
  }

  return {
    hub,
    server,
    runtime,
    port,
    stop,
    async killChildren() {
      await embedded?.stopNow();
    },
  };
}

/**
 * What the API port answers while the hub is still opening: /healthz says the process is alive, /readyz is 503
 * naming the dependencies start-up waits for (the same shape as the real one), anything else is 503
 * UNAVAILABLE with Retry-After. A WebSocket upgrade finds no listener yet and is closed.
 */
function startingHandler(waiting: () => string[]): RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const failing = waiting();
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && path === '/healthz') return send(200, { status: 'ok' });
    const note = failing.length ? `waiting for ${failing.join(' and ')}` : 'opening';
    if (req.method === 'GET' && path === '/readyz') {
      const checks = Object.fromEntries((failing.length ? failing : ['hub']).map((d) => [d, { ok: false, ms: 0, error: `the hub is starting: ${note}` }]));
      return send(503, { status: 'unavailable', failing: Object.keys(checks), checks });
    }
    send(503, { error: { code: 'UNAVAILABLE', message: `The hub is starting (${note}); try again shortly.`, details: { failing } } }, { 'retry-after': '5' });
  };
}

/**
 * Flushes the last spans, for at most `timeoutMs`. An unreachable collector is logged, not thrown: the hub
 * itself has stopped cleanly by then, so the exit code stays 0 and the stop is not held up by the OTLP
 * exporter's own 10 s timeout.
 */
async function flushSpans(log: Logger, timeoutMs = 3000): Promise<void> {
  await withTimeout(shutdownTelemetry(), timeoutMs, 'the span exporter').catch((err: unknown) =>
    log.warn({ err }, 'could not flush the last spans (is the OTLP collector reachable?)'),
  );
}

/** A repeat of the stop signal within this long is the same request delivered twice, not a second one. */
const REPEAT_SIGNAL_MS = 1000;

/**
 * SIGINT/SIGTERM while runHub is still starting: aborts the returned signal (pass it to runHub, which then stops
 * what it started, the embedded children included, and rejects with StartAborted). `release()` hands the
 * signals over once start-up is done (to stopOnSignals). Without this, a Ctrl-C while start-up waited for NATS
 * ended the process at once and left an embedded redis-server running.
 */
export function abortStartOnSignals(log: Logger): { signal: AbortSignal; release(): void; onChildren(kill: () => Promise<void>): void } {
  const controller = new AbortController();
  let signalledAt = 0;
  let killChildren: (() => Promise<void>) | null = null;
  const handler = (signal: NodeJS.Signals) => {
    if (signalledAt) {
      // npm passes a Ctrl-C on as well: the same request twice. A later one asks again, for a start-up step
      // that does not return (only the wait for NATS can be called off): end the children and exit now.
      if (Date.now() - signalledAt < REPEAT_SIGNAL_MS) return;
      log.warn('second signal: exiting now');
      void (killChildren?.() ?? Promise.resolve()).catch(() => undefined).finally(() => process.exit(130));
      return;
    }
    signalledAt = Date.now();
    log.info({ signal }, 'stopping before start-up finished');
    controller.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    onChildren(kill) {
      killChildren = kill;
    },
    release() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/**
 * What `voxa start` and `voxa worker` run: runHub with SIGINT/SIGTERM honoured from the first moment. A signal
 * during start-up stops what had started (exit 0); after it, stopOnSignals' clean stop. `failed` turns a start
 * error into what the command reports.
 */
export async function runUntilSignalled(config: Config, opts: Omit<RunOptions, 'signal' | 'onChildren'> & { logger: Logger }, failed: (err: Error) => Error): Promise<void> {
  const log = opts.logger;
  const early = abortStartOnSignals(log);
  let running: RunningHub;
  try {
    running = await runHub(config, { ...opts, signal: early.signal, onChildren: early.onChildren });
  } catch (err) {
    if (err instanceof StartAborted) {
      log.info('stopped');
      process.exit(0);
    }
    throw failed(err as Error);
  }
  early.release();
  if (early.signal.aborted) {
    // The signal came after the hub had opened (while the plugins started): stop it now.
    await running.stop();
    log.info('stopped');
    process.exit(0);
  }
  stopOnSignals(running, log, config.stopTimeoutMs);
}

/**
 * Stops cleanly on SIGINT/SIGTERM. A second signal (a second later or more), or a stop still running after
 * `deadlineMs` (config.stopTimeoutMs, VOXA_STOP_TIMEOUT_MS), exits soon: the embedded children are ended
 * first either way (a few seconds at most), so none outlives the hub.
 */
export function stopOnSignals(running: { stop(): Promise<void>; killChildren?(): Promise<void> }, log: Logger, deadlineMs: number): void {
  let signalledAt = 0;
  let exiting = false;
  const exitNow = (code: number) => {
    if (exiting) return;
    exiting = true;
    void (running.killChildren?.() ?? Promise.resolve()).catch(() => undefined).finally(() => process.exit(code));
  };
  const handler = (signal: NodeJS.Signals) => {
    if (signalledAt) {
      // One Ctrl-C under `npm start` arrives twice: the terminal signals the whole foreground group, and npm
      // passes it on to its child as well. Only a signal that comes later is somebody asking again.
      if (Date.now() - signalledAt < REPEAT_SIGNAL_MS) return;
      log.warn('second signal: exiting now');
      exitNow(130);
      return;
    }
    signalledAt = Date.now();
    log.info({ signal }, 'stopping');
    setTimeout(() => {
      log.error({ timeoutMs: deadlineMs }, 'the stop did not finish in time; exiting now');
      exitNow(1);
    }, deadlineMs).unref();
    running
      .stop()
      .then(() => flushSpans(log))
      .then(() => {
        log.info('stopped');
        process.exit(0);
      })
      .catch((err) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
