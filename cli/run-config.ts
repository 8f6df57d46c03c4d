/**
 * The config a hub process runs with, checked the way `voxa start` and `voxa worker` need it: the schema
 * (core/config.ts), the plugin names (plugins/index.ts) and the MongoDB connection string (the driver's own
 * parser). `voxa config check` calls the same function, so it passes exactly the configs start accepts, and a
 * bad value is exit 2 naming the field everywhere; exit 4 stays for a dependency that cannot be reached.
 */
import { ConfigError, loadConfig, maskUrl, type Config, type ConfigInput } from '../core/config.js';
import { pluginNames, UnknownPluginError } from '../plugins/index.js';
import { CliError, EXIT } from './util.js';

export interface RunConfigOptions {
  /** False for `voxa worker` (no API), which changes what "all" selects. */
  api?: boolean;
}

export async function loadRunConfig(overrides: ConfigInput = {}, opts: RunConfigOptions = {}): Promise<Config> {
  try {
    const config = loadConfig(overrides);
    try {
      pluginNames(config.plugins, { api: opts.api });
    } catch (err) {
      // From --plugins the flag is named by the message itself; from the config, name the field like the schema does.
      if (err instanceof UnknownPluginError && overrides.plugins === undefined) {
        throw new ConfigError(`invalid config field "plugins" (env VOXA_PLUGINS): ${err.message}`, 'plugins');
      }
      throw err;
    }
    if (config.mongoUrl) await checkMongoUrl(config.mongoUrl);
    return config;
  } catch (err) {
    throw usageError(err) ?? err;
  }
}

/**
 * The error a start failure is reported with when it is the config's fault (exit 2), or null for anything
 * else (an unreachable dependency, exit 4). For failures inside runHub that loadRunConfig could not foresee,
 * e.g. a secrets.json with a broken key.
 */
export function usageError(err: unknown): CliError | null {
  if (err instanceof ConfigError) return new CliError(err.message, EXIT.USAGE, 'INVALID_CONFIG');
  if (err instanceof UnknownPluginError) return new CliError(err.message, EXIT.USAGE, 'UNKNOWN_PLUGIN');
  return null;
}

/**
 * Parses the connection string as the MongoDB store will, without connecting: the driver's parser is the rule,
 * so nothing here can drift from it. The driver is loaded only when MONGO_URL is set.
 */
async function checkMongoUrl(url: string): Promise<void> {
  const { MongoClient } = await import('mongodb');
  let client;
  try {
    client = new MongoClient(url);
  } catch (err) {
    throw new ConfigError(`invalid config field "mongoUrl" (env MONGO_URL): ${maskUrl((err as Error).message)}`, 'mongoUrl');
  }
  await client.close();
}
