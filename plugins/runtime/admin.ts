/**
 * Operations on running plugins, for the `voxa plugins` and `voxa dlq` commands (and tests): they only talk
 * to NATS — the KV control bucket and the consumers — so they steer every process that runs the plugin.
 */
import { DeliverPolicy, connect, type ConsumerConfig, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import {
  consumerName,
  ensureRuntimeStreams,
  isNotFound,
  openControl,
  parseConsumerName,
  readState,
  retryConsumerName,
  runtimeNames,
  updateState,
  type PluginState,
} from './control.js';
import { countDeadLetters } from './dlq.js';
import { declaredReplicas } from '../../core/bus/nats.js';

export interface AdminHandles {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  namespace: string;
  /** The hub's stream replica count (read from its events stream), for what these commands create. */
  replicas: number;
}

/**
 * Connects for a short-lived command: fails fast when NATS is not there (so the CLI can say so), and once
 * connected reconnects forever like every other connection.
 */
export async function connectAdmin(url: string, namespace: string, name = 'voxa-cli'): Promise<AdminHandles> {
  const nc = await connect({
    servers: url.split(','),
    name,
    timeout: 3000,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: false,
  });
  const jsm = await nc.jetstreamManager();
  return { nc, js: nc.jetstream(), jsm, namespace, replicas: await declaredReplicas(jsm, namespace) };
}

export class PluginNotFoundError extends Error {
  constructor(plugin: string, why: string) {
    super(`plugin ${plugin}: ${why}`);
    this.name = 'PluginNotFoundError';
  }
}

export interface PluginReport {
  name: string;
  state: 'running' | 'paused';
  generation: number;
  consumer: string | null;
  /** Events in the stream not yet delivered to the plugin (its lag); null when it has no consumer yet. */
  pending: number | null;
  /** Delivered and not yet acked. */
  ackPending: number | null;
  /** Deliveries that were redeliveries, still outstanding. */
  redelivered: number | null;
  /** Processes with a pull request waiting right now (0 does not mean none run: all may be busy). */
  waiting: number | null;
  /** Events put back by `voxa dlq retry` and not yet handled. */
  retryPending: number;
  deadLetters: number;
  rewoundTo?: PluginState['rewoundTo'];
}

/** Every plugin known from `names`, the control bucket and the consumers, with its numbers. */
export async function listPlugins(h: AdminHandles, names: string[] = []): Promise<PluginReport[]> {
  const rn = runtimeNames(h.namespace);
  const kv = await openControl(h.js, h.namespace, h.replicas);
  const all = new Set(names);
  for await (const k of await kv.keys()) all.add(k);
  const consumers = new Map<string, Awaited<ReturnType<JetStreamManager['consumers']['info']>>>();
  try {
    for await (const ci of h.jsm.consumers.list(rn.events)) {
      const p = parseConsumerName(ci.name);
      if (!p) continue;
      all.add(p.plugin);
      consumers.set(ci.name, ci);
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  const retries = new Map<string, number>();
  try {
    for await (const ci of h.jsm.consumers.list(rn.retry)) retries.set(ci.name, ci.num_pending + ci.num_ack_pending);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  const dead = await countDeadLetters(h).catch(() => ({}) as Record<string, number>);
  for (const p of Object.keys(dead)) all.add(p);
  const out: PluginReport[] = [];
  for (const name of [...all].sort()) {
    const st = await readState(kv, name);
    const ci = consumers.get(consumerName(name, st.generation));
    out.push({
      name,
      state: st.paused ? 'paused' : 'running',
      generation: st.generation,
      consumer: ci ? ci.name : null,
      pending: ci ? ci.num_pending : null,
      ackPending: ci ? ci.num_ack_pending : null,
      redelivered: ci ? ci.num_redelivered : null,
      waiting: ci ? ci.num_waiting : null,
      retryPending: retries.get(retryConsumerName(name)) ?? 0,
      deadLetters: dead[name] ?? 0,
      ...(st.rewoundTo ? { rewoundTo: st.rewoundTo } : {}),
    });
  }
  return out;
}

/** Pauses or resumes a plugin in every process (they finish in-flight work, then stop pulling). */
export async function setPaused(h: AdminHandles, plugin: string, paused: boolean): Promise<PluginState> {
  const kv = await openControl(h.js, h.namespace, h.replicas);
  return updateState(kv, plugin, (s) => ({ ...s, paused }));
}

export interface RewindResult {
  plugin: string;
  generation: number;
  consumer: string;
  since: string | number;
  /** Events the new consumer will deliver (at the moment it was created). */
  pending: number;
}

/**
 * Replays history into one plugin: creates the next generation of its consumer starting at `since` (a stream
 * sequence or a time), switches the control state to it (running processes re-bind) and deletes the old one.
 * The new consumer copies the old one's settings, so no manifest is needed here.
 */
export async function rewindPlugin(h: AdminHandles, plugin: string, since: number | Date): Promise<RewindResult> {
  const rn = runtimeNames(h.namespace);
  await ensureRuntimeStreams(h.jsm, h.namespace, h.replicas);
  const kv = await openControl(h.js, h.namespace, h.replicas);
  const state = await readState(kv, plugin);
  const oldName = consumerName(plugin, state.generation);
  let old;
  try {
    old = await h.jsm.consumers.info(rn.events, oldName);
  } catch (err) {
    if (isNotFound(err)) throw new PluginNotFoundError(plugin, 'it has no consumer yet (start the plugin once before rewinding it)');
    throw err;
  }
  const generation = state.generation + 1;
  const name = consumerName(plugin, generation);
  const keep: Array<keyof ConsumerConfig> = ['description', 'ack_policy', 'ack_wait', 'max_deliver', 'max_ack_pending', 'filter_subject', 'filter_subjects'];
  const cfg: Partial<ConsumerConfig> = { durable_name: name };
  for (const k of keep) if (old.config[k] !== undefined) (cfg as Record<string, unknown>)[k] = old.config[k];
  const sinceLabel = typeof since === 'number' ? since : since.toISOString();
  if (typeof since === 'number') {
    cfg.deliver_policy = DeliverPolicy.StartSequence;
    cfg.opt_start_seq = since;
  } else {
    cfg.deliver_policy = DeliverPolicy.StartTime;
    cfg.opt_start_time = since.toISOString();
  }
  // A leftover of an interrupted rewind to the same generation would keep its old start point: replace it.
  await h.jsm.consumers.delete(rn.events, name).catch(() => undefined);
  const created = await h.jsm.consumers.add(rn.events, cfg);
  try {
    await updateState(kv, plugin, (s) => {
      if (s.generation !== state.generation) throw new Error(`plugin ${plugin} was rewound concurrently; try again`);
      return { ...s, generation, rewoundTo: { since: sinceLabel, at: new Date().toISOString() } };
    });
  } catch (err) {
    await h.jsm.consumers.delete(rn.events, name).catch(() => undefined);
    throw err;
  }
  await h.jsm.consumers.delete(rn.events, oldName).catch(() => undefined);
  return { plugin, generation, consumer: name, since: sinceLabel, pending: created.num_pending };
}
