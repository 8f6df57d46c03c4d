/** The explicit list of command groups (no directory scanning). */
import type { Command } from 'commander';
import { register as start } from './start.js';
import { register as config } from './config.js';
import { register as audit } from './audit.js';
import { register as analytics } from './analytics.js';
import { register as users } from './users.js';
import { register as workspace } from './workspace.js';
import { register as plugins } from './plugins.js';
import { register as dlq } from './dlq.js';
import { register as events } from './events.js';
import { register as worker } from './worker.js';
import { register as connectors } from './connectors.js';
import { register as connections } from './connections.js';
import { register as webhooks } from './webhooks.js';
import { register as completion } from './completion.js';

export const COMMANDS: Array<(program: Command) => void> = [start, config, audit, analytics, users, workspace, plugins, dlq, events, worker, connectors, connections, webhooks, completion];
