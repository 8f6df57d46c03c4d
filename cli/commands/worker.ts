/**
 * `voxa worker --plugins push,email`: chosen plugins in their own process, without the API. Several workers of
 * the same plugin share its consumer; SIGINT/SIGTERM drain in-flight work and exit 0.
 */
import type { Command } from 'commander';
import { toolNatsUrl, toolRedisUrl } from '../../connectors/context.js';
import { loadConfig, maskUrl } from '../../core/config.js';
import { createLogger } from '../../core/log.js';
import { pluginNames } from '../../plugins/index.js';
import { loadRunConfig, usageError } from '../run-config.js';
import { CliError, EXIT } from '../util.js';

export function register(program: Command): void {
  program
    .command('worker')
    .description('Run chosen plugins in this process (no API); connects to NATS_URL and REDIS_URL.')
    .requiredOption('--plugins <list>', 'comma-separated built-in plugins, or "all"')
    .addHelpText(
      'after',
      () =>
        `\n${connectsTo()}\n\nExamples:\n  $ voxa worker --plugins push,email\n  $ NATS_URL=nats://nats:4222 REDIS_URL=redis://redis:6379 voxa worker --plugins webhooks`,
    )
    .action(async (opts: { plugins: string }) => {
      const loaded = await loadRunConfig({ plugins: opts.plugins }, { api: false });
      if (pluginNames(opts.plugins).length === 0) throw new CliError('--plugins names no plugin', EXIT.USAGE, 'VALIDATION_FAILED');
      // Without URLs a worker joins the services `voxa start` embeds on this machine.
      const config = {
        ...loaded,
        natsUrl: toolNatsUrl(loaded),
        redisUrl: toolRedisUrl(loaded),
      };
      const { startTelemetry } = await import('../../core/telemetry/tracing.js');
      await startTelemetry({ serviceName: 'voxa-worker' });
      const { runUntilSignalled } = await import('../../core/server.js');
      const log = createLogger(config.logLevel, 'voxa-worker');
      // A worker never spawns its own nats-server/redis-server: it joins the ones the hub uses.
      await runUntilSignalled(config, { api: false, plugins: opts.plugins, logger: log, embedded: false }, (err) =>
        usageError(err) ??
        ((err as NodeJS.ErrnoException).code === 'EADDRINUSE'
          ? new CliError(
              `worker could not start: its /metrics port ${config.workerMetricsPort} is in use (another worker on this host?); give each worker its own VOXA_METRICS_PORT, or 0 for a free one`,
              EXIT.UNAVAILABLE,
              'START_FAILED',
            )
          : new CliError(`worker could not start (NATS ${maskUrl(config.natsUrl)}): ${err.message}`, EXIT.UNAVAILABLE, 'START_FAILED')),
      );
    });
}

/**
 * The help's line on where this worker would connect, from the current environment (NATS_URL / REDIS_URL, else
 * the embedded ports `voxa start` uses), so a hub moved to other ports is not shown with the stock ones.
 */
function connectsTo(): string {
  const where = 'NATS_URL and REDIS_URL, else the nats-server and redis-server `voxa start` embeds on VOXA_EMBEDDED_NATS_PORT and VOXA_EMBEDDED_REDIS_PORT';
  let config;
  try {
    config = loadConfig();
  } catch {
    return `Connects to: ${where}; the current config does not parse (see \`voxa config check\`).`;
  }
  return `Connects to: ${maskUrl(toolNatsUrl(config))} and ${maskUrl(toolRedisUrl(config))} (from ${where}). /metrics on port ${config.workerMetricsPort} (VOXA_METRICS_PORT).`;
}
