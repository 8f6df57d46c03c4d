import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Config } from '../config.js';
import type { Store } from './port.js';

/** SQLite under dataDir by default; MongoDB when MONGO_URL is set. */
export async function createStore(config: Pick<Config, 'mongoUrl' | 'mongoDb' | 'dataDir'>): Promise<Store> {
  if (config.mongoUrl) {
    const { MongoStore } = await import('./mongo.js');
    return new MongoStore(config.mongoUrl, config.mongoDb);
  }
  mkdirSync(config.dataDir, { recursive: true });
  const { SqliteStore } = await import('./sqlite.js');
  return new SqliteStore(join(config.dataDir, 'voxa.db'));
}
