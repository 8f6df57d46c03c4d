/**
 * The server entry: composes a running hub process from its parts. `voxa start` runs everything (embedded
 * NATS/Redis when not configured, API + edge on one port, every built-in plugin); `voxa worker` runs chosen
 * plugins without the API. The Koa app itself is built by core/http/app.ts and never listens on its own.
 */
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { closeHub, openHub, type Hub } from './hub.js';
import { createLogger } from './log.js';
import { startEmbedded, type EmbeddedServices } from './supervisor.js';
import { buildApp } from './http/app.js';
import { PluginRuntime } from '../plugins/runtime/runtime.js';
import { selectPlugins } from '../plugins/index.js';
import { startHubCollectors } from './telemetry/collectors.js';
import { shutdownTelemetry } from './telemetry/tracing.js';
import { startMetricsServer, type MetricsServer } from './telemetry/metrics-server.js';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface RunningHub {
  hub: Hub;
  server: Server | null;
  runtime: PluginRuntime;
  /** The port the API listens on (useful with port 0). */
  port: number;
  stop(): Promise<void>;
}

export interface RunOptions {
  /** Serve the API and the edge (false for `voxa worker`). */
  api: boolean;
  /** Comma list or 'all'; defaults to config.plugins. */
  plugins?: string;
  name?: string;
  logger?: Logger;
  /** Spawn nats-server / redis-server when their URLs are not configured. */
  embedded?: boolean;
}

export async function runHub(config: Config, opts: RunOptions): Promise<RunningHub> {
  const name = opts.name ?? (opts.api ? 'voxa-hub' : 'voxa-worker');
  const log = opts.logger ?? createLogger(config.logLevel, name);
  let embedded: EmbeddedServices | null = null;
  if (opts.embedded !== false && (!config.natsUrl || !config.redisUrl)) {
    embedded = await startEmbedded({ natsUrl: config.natsUrl, redisUrl: config.redisUrl, dataDir: config.dataDir, projectRoot: PROJECT_ROOT, natsPort: config.embeddedNatsPort, natsMonitorPort: config.embeddedNatsMonitorPort, redisPort: config.embeddedRedisPort }, log);
    config = { ...config, natsUrl: embedded.natsUrl, redisUrl: embedded.redisUrl };
  }
  let hub: Hub;
  try {
    hub = await openHub(config, { name, logger: log });
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  const plugins = await selectPlugins(opts.plugins ?? config.plugins, { api: opts.api });
  const runtime = new PluginRuntime(hub, plugins);
  let server: Server | null = null;
  if (opts.api) {
    const app = buildApp(hub, { pluginRoutes: runtime.routes() });
    server = createServer(app.callback());
    server.keepAliveTimeout = 65_000;
  }
  await runtime.start({ httpServer: server ?? undefined });
  const stopCollectors = startHubCollectors(hub);
  let port = 0;
  let metricsServer: MetricsServer | null = null;
  if (server) {
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(config.port, config.host, () => resolve());
    });
    port = (server.address() as { port: number }).port;
    log.info({ port, plugins: plugins.map((p) => p.manifest.name), store: hub.store.kind }, `Voxa Hub listening on http://localhost:${port}`);
  } else {
    metricsServer = await startMetricsServer({ port: config.workerMetricsPort, host: config.host });
    log.info({ plugins: plugins.map((p) => p.manifest.name), metricsPort: metricsServer.port }, 'Voxa worker running');
  }

  let stopping: Promise<void> | null = null;
  return {
    hub,
    server,
    runtime,
    port,
    stop() {
      stopping ??= (async () => {
        stopCollectors();
        if (server) {
          const closed = new Promise<void>((r) => server!.close(() => r()));
          server.closeIdleConnections();
          setTimeout(() => server!.closeAllConnections(), 2000).unref();
          await closed;
        }
        await runtime.stop();
        await metricsServer?.close();
        await closeHub(hub);
        await embedded?.stop();
      })();
      return stopping;
    },
  };
}

/**
 * Flushes the last spans, for at most `timeoutMs`. An unreachable collector is logged, not thrown: the hub
 * itself has stopped cleanly by then, so the exit code stays 0 and the stop is not held up by the OTLP
 * exporter's own 10 s timeout.
 */
async function flushSpans(log: Logger, timeoutMs = 3000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  try {
    await Promise.race([shutdownTelemetry(), timeout]);
  } catch (err) {
    log.warn({ err }, 'could not flush the last spans (is the OTLP collector reachable?)');
  } finally {
    clearTimeout(timer);
  }
}

/** Stops cleanly on SIGINT/SIGTERM; a second signal exits at once. */
export function stopOnSignals(running: { stop(): Promise<void> }, log: Logger): void {
  let signalled = false;
  const handler = (signal: NodeJS.Signals) => {
    if (signalled) {
      log.warn('second signal: exiting now');
      process.exit(130);
    }
    signalled = true;
    log.info({ signal }, 'stopping');
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
