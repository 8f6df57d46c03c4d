/**
 * `voxa worker --plugins push,email`: chosen plugins in their own process, without the API. Several workers of
 * the same plugin share its consumer; SIGINT/SIGTERM drain in-flight work and exit 0.
 */
import type { Command } from 'commander';
import { toolNatsUrl, toolRedisUrl } from '../../connectors/context.js';
import { ConfigError, loadConfig, maskUrl } from '../../core/config.js';
import { createLogger } from '../../core/log.js';
import { pluginNames, UnknownPluginError } from '../../plugins/index.js';
import { CliError, EXIT } from '../util.js';

export function register(program: Command): void {
  program
    .command('worker')
    .description('Run chosen plugins in this process (no API); connects to NATS_URL and REDIS_URL.')
    .requiredOption('--plugins <list>', 'comma-separated built-in plugins, or "all"')
    .addHelpText(
      'after',
      '\nDefaults: the nats-server and redis-server `voxa start` embeds (nats://127.0.0.1:4222, redis://127.0.0.1:6390). /metrics on VOXA_METRICS_PORT (9464).\n\nExamples:\n  $ voxa worker --plugins push,email\n  $ NATS_URL=nats://nats:4222 REDIS_URL=redis://redis:6379 voxa worker --plugins webhooks',
    )
    .action(async (opts: { plugins: string }) => {
      let config;
      try {
        config = loadConfig({ plugins: opts.plugins });
      } catch (err) {
        if (err instanceof ConfigError) throw new CliError(err.message, EXIT.USAGE, 'INVALID_CONFIG');
        throw err;
      }
      try {
        if (pluginNames(opts.plugins).length === 0) throw new CliError('--plugins names no plugin', EXIT.USAGE, 'VALIDATION_FAILED');
      } catch (err) {
        if (err instanceof UnknownPluginError) throw new CliError(err.message, EXIT.USAGE, 'UNKNOWN_PLUGIN');
        throw err;
      }
      // Without URLs a worker joins the services `voxa start` embeds on this machine.
      config = {
        ...config,
        natsUrl: toolNatsUrl(config),
        redisUrl: toolRedisUrl(config),
      };
      const { startTelemetry } = await import('../../core/telemetry/tracing.js');
      await startTelemetry({ serviceName: 'voxa-worker' });
      const { runHub, stopOnSignals } = await import('../../core/server.js');
      const log = createLogger(config.logLevel, 'voxa-worker');
      // A worker never spawns its own nats-server/redis-server: it joins the ones the hub uses.
      const running = await runHub(config, { api: false, plugins: opts.plugins, logger: log, embedded: false }).catch((err: Error) => {
        throw new CliError(`worker could not start (NATS ${maskUrl(config.natsUrl)}): ${err.message}`, EXIT.UNAVAILABLE, 'START_FAILED');
      });
      stopOnSignals(running, log, config.stopTimeoutMs);
    });
}
