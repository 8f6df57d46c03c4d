/** `voxa start`: the whole hub in one process. */
import type { Command } from 'commander';
import { createLogger } from '../../core/log.js';
import { loadRunConfig, usageError } from '../run-config.js';
import { CliError, EXIT } from '../util.js';

export function register(program: Command): void {
  program
    .command('start')
    .description('Run the whole hub: API and WebSocket edge on one port, every built-in plugin, embedded NATS and Redis unless NATS_URL/REDIS_URL are set.')
    .option('--port <port>', 'port for the API and the edge (default 8080 or $PORT)')
    .option('--plugins <list>', 'comma-separated plugins to run in-process, or "all"')
    .addHelpText('after', '\nExamples:\n  $ voxa start\n  $ PORT=9000 voxa start --plugins edge,webhooks\n  $ NATS_URL=nats://nats:4222 REDIS_URL=redis://redis:6379 voxa start')
    .action(async (opts: { port?: string; plugins?: string }) => {
      // Every config check before anything is spawned: a bad value or plugin name is exit 2, not a failed start.
      const config = await loadRunConfig({ ...(opts.port ? { port: opts.port as unknown as number } : {}), ...(opts.plugins ? { plugins: opts.plugins } : {}) }, { api: true });
      const { startTelemetry } = await import('../../core/telemetry/tracing.js');
      await startTelemetry({ serviceName: 'voxa-hub' });
      const { runUntilSignalled } = await import('../../core/server.js');
      const log = createLogger(config.logLevel, 'voxa-hub');
      await runUntilSignalled(config, { api: true, logger: log }, (err) => usageError(err) ?? new CliError(err.message, EXIT.UNAVAILABLE, 'START_FAILED'));
    });
}
