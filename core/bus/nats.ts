/**
 * The NATS side of the hub: connecting (reconnect forever), declaring streams idempotently, and publishing
 * events with `Nats-Msg-Id` and trace headers.
 *
 * Publishing uses one reply inbox per connection and collects JetStream acks as they come back, instead of a
 * request (and a timer) per message. Awaited per-message `js.publish` tops out at a few thousand messages per
 * second from Node; collected acks do not serialise on that round trip.
 */
import {
  connect,
  createInbox,
  DiscardPolicy,
  headers as natsHeaders,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type MsgHdrs,
  type NatsConnection,
  type StreamConfig,
  type Subscription,
} from 'nats';
import type { Logger } from 'pino';
import { maskUrl } from '../config.js';
import { withNamespace } from '../events/catalog.js';

export const nanos = (ms: number): number => ms * 1_000_000;

/**
 * Errors of a first connection that mean "no server there yet" and are worth retrying: refused, timed out, cut,
 * a name that does not resolve yet (a container still starting). Anything else (an unparsable URL, refused
 * credentials, TLS) fails start-up at once: waiting would not fix it.
 */
const RETRYABLE_CONNECT = new Set(['CONNECTION_REFUSED', 'CONNECTION_TIMEOUT', 'CONNECTION_CLOSED', 'DISCONNECT', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * Connects with reconnect-forever settings (the nats.js default gives up after about 20 s). The first connection
 * is retried here, every 250 ms, until a server answers or `signal` aborts (a stop during start-up); nats.js's
 * own waitOnFirstConnect would wait the same way but could not be called off. Only "nobody there yet" errors are
 * retried (RETRYABLE_CONNECT); a bad URL or a refused credential fails at once.
 */
export async function connectNats(url: string, name: string, signal?: AbortSignal): Promise<NatsConnection> {
  for (;;) {
    if (signal?.aborted) throw abortError();
    try {
      return await connect({
        servers: url.split(','),
        name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        reconnectJitter: 100,
        timeout: 5000,
        pingInterval: 10_000,
        maxPingOut: 3,
      });
    } catch (err) {
      if (!RETRYABLE_CONNECT.has(String((err as { code?: unknown }).code))) throw err;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, 250);
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

function abortError(): Error {
  const err = new Error('stopped while waiting for NATS');
  err.name = 'AbortError';
  return err;
}

export interface StreamNames {
  events: string;
  ephemeral: string;
  deadLetter: string;
}

export function streamNames(ns: string): StreamNames {
  const p = ns ? `${ns.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}_` : '';
  return { events: `${p}VOXA_EVENTS`, ephemeral: `${p}VOXA_RT`, deadLetter: `${p}VOXA_DLQ` };
}

/** The streams the hub needs, declared in code. `nats.conf` only holds server settings. */
export function streamConfigs(ns: string, replicas = 1): Array<Partial<StreamConfig> & { name: string; subjects: string[] }> {
  const names = streamNames(ns);
  return [
    {
      name: names.events,
      description: 'Durable chat, account and admin events (the delivery log; the store is the source of truth).',
      subjects: [withNamespace(ns, 'chat.>'), withNamespace(ns, 'user.>'), withNamespace(ns, 'admin.>')],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(30 * 24 * 3600 * 1000),
      duplicate_window: nanos(2 * 60 * 1000),
      num_replicas: replicas,
    },
    {
      name: names.ephemeral,
      description: 'Typing and presence: memory only, short-lived.',
      subjects: [withNamespace(ns, 'rt.>')],
      storage: StorageType.Memory,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(60 * 1000),
      max_msgs: 100_000,
      duplicate_window: nanos(10 * 1000),
      num_replicas: replicas,
    },
    {
      name: names.deadLetter,
      description: 'Events a plugin gave up on, with the reason in headers.',
      subjects: [withNamespace(ns, 'dlq.>')],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(30 * 24 * 3600 * 1000),
      num_replicas: replicas,
    },
  ];
}

/** Creates the streams, or updates them when they exist with other settings. Safe to call at every boot. */
export async function ensureStreams(jsm: JetStreamManager, ns: string, replicas = 1): Promise<StreamNames> {
  for (const cfg of streamConfigs(ns, replicas)) await ensureStream(jsm, cfg);
  return streamNames(ns);
}

/**
 * Creates one stream if it is missing; with `update` (the default) an existing one takes the given settings.
 * Tolerates another process creating it at the same moment. Every stream the hub declares goes through here.
 */
export async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string; subjects: string[] },
  opts: { update?: boolean } = {},
): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    if (opts.update !== false) await jsm.streams.update(cfg.name, cfg);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      await jsm.streams.add(cfg);
    } catch (addErr) {
      // Another process created it between our info and add: fine. The server may say so as "already in use",
      // or (nats-server 2.9, two adds at once) as "subjects overlap with an existing stream": that one is fine
      // only if the stream that now exists is ours.
      const message = String((addErr as Error).message);
      if (/already (in use|exists)/i.test(message)) return;
      if (/subjects overlap/i.test(message) && (await jsm.streams.info(cfg.name).then(() => true, () => false))) return;
      throw addErr;
    }
  }
}

function isStreamNotFound(err: unknown): boolean {
  const e = err as { code?: string; api_error?: { err_code?: number }; message?: string };
  return e?.api_error?.err_code === 10059 || /stream not found/i.test(String(e?.message));
}

export interface PublishAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

export class PublishError extends Error {
  constructor(
    message: string,
    readonly retryable = true,
  ) {
    super(message);
    this.name = 'PublishError';
  }
}

interface Pending {
  resolve: (ack: PublishAck) => void;
  reject: (err: Error) => void;
  deadline: number;
}

/**
 * Publishes to JetStream and collects the acks on a single wildcard inbox subscription. Each publish returns a
 * promise for its ack; unanswered publishes fail after `timeoutMs` (the outbox then retries them).
 */
export class JetStreamPublisher {
  private readonly pending = new Map<string, Pending>();
  private readonly prefix = createInbox();
  private readonly sub: Subscription;
  private counter = 0;
  private readonly sweeper: NodeJS.Timeout;
  private connected = true;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5000,
  ) {
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (_err, msg) => {
        const token = msg.subject.slice(this.prefix.length + 1);
        const p = this.pending.get(token);
        if (!p) return; // a late ack after a timeout: the outbox already took over
        this.pending.delete(token);
        if (msg.headers?.code === 503) return p.reject(new PublishError('no stream is listening on this subject', false));
        try {
          const body = JSON.parse(new TextDecoder().decode(msg.data)) as {
            stream?: string;
            seq?: number;
            duplicate?: boolean;
            error?: { description?: string };
          };
          if (body.error) return p.reject(new PublishError(body.error.description ?? 'publish failed'));
          p.resolve({ stream: body.stream ?? '', seq: body.seq ?? 0, duplicate: Boolean(body.duplicate) });
        } catch (err) {
          p.reject(new PublishError(`unreadable publish ack: ${(err as Error).message}`));
        }
      },
    });
    // One timer for all pending publishes instead of one per message. Map iteration is insertion order, so
    // the oldest deadlines come first.
    this.sweeper = setInterval(() => this.expire(), Math.min(250, Math.max(10, timeoutMs / 4)));
    this.sweeper.unref();
    void this.watchStatus();
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect') {
        this.connected = false;
        this.failAll('disconnected from NATS');
      } else if (s.type === 'reconnect') this.connected = true;
    }
  }

  /** False while the connection is down: callers skip publishing and leave the event to the outbox. */
  get isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  publish(subject: string, data: Uint8Array, hdrs: Record<string, string>, msgId?: string): Promise<PublishAck> {
    if (!this.isConnected) return Promise.reject(new PublishError('NATS is not connected'));
    const h: MsgHdrs = natsHeaders();
    for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
    if (msgId) h.set('Nats-Msg-Id', msgId);
    const token = (++this.counter).toString(36);
    return new Promise<PublishAck>((resolve, reject) => {
      this.pending.set(token, { resolve, reject, deadline: Date.now() + this.timeoutMs });
      try {
        this.nc.publish(subject, data, { reply: `${this.prefix}.${token}`, headers: h });
      } catch (err) {
        this.pending.delete(token);
        reject(new PublishError((err as Error).message));
      }
    });
  }

  private expire(): void {
    const now = Date.now();
    for (const [token, p] of this.pending) {
      if (p.deadline > now) break;
      this.pending.delete(token);
      p.reject(new PublishError('timed out waiting for the JetStream ack'));
    }
  }

  private failAll(reason: string): void {
    for (const [token, p] of this.pending) {
      this.pending.delete(token);
      p.reject(new PublishError(reason));
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.failAll('publisher closed');
    this.sub.unsubscribe();
  }
}

/** Everything a process needs to talk to NATS. */
export interface Bus {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  publisher: JetStreamPublisher;
  namespace: string;
  streams: StreamNames;
  /**
   * Copies of each stream (and of the plugin runtime's stream and KV bucket) kept by a NATS cluster: config
   * natsReplicas, 1 on a single server, 3 on a three-node cluster.
   */
  replicas: number;
}

/** After this long without a first connection, a process says in its log that it is waiting for NATS (then every NATS_WAIT_REPEAT_MS). */
export const NATS_WAIT_LOG_MS = 2000;
const NATS_WAIT_REPEAT_MS = 30_000;

export async function openBus(
  url: string,
  name: string,
  namespace: string,
  opts: { ensure?: boolean; replicas?: number; log?: Logger; onWait?: (waiting: boolean) => void; signal?: AbortSignal } = {},
): Promise<Bus> {
  // The first connection is awaited (a bus without one cannot declare streams or consumers), but not in
  // silence: a process started while NATS is down says what it waits for until it answers.
  opts.onWait?.(true);
  const started = Date.now();
  let warned = false;
  const say = () => {
    warned = true;
    opts.log?.warn({ natsUrl: maskUrl(url), waitedMs: Date.now() - started }, 'waiting for NATS: start-up goes on when it answers');
  };
  const first = setTimeout(() => {
    say();
    repeat = setInterval(say, NATS_WAIT_REPEAT_MS);
    repeat.unref();
  }, NATS_WAIT_LOG_MS);
  first.unref();
  let repeat: NodeJS.Timeout | undefined;
  let nc: NatsConnection;
  try {
    nc = await connectNats(url, name, opts.signal);
  } finally {
    clearTimeout(first);
    clearInterval(repeat);
    opts.onWait?.(false);
  }
  if (warned) opts.log?.info({ waitedMs: Date.now() - started }, 'NATS answered; starting');
  const jsm = await nc.jetstreamManager();
  const replicas = opts.replicas ?? 1;
  const streams = opts.ensure === false ? streamNames(namespace) : await ensureStreams(jsm, namespace, replicas);
  return { nc, js: nc.jetstream(), jsm, publisher: new JetStreamPublisher(nc), namespace, streams, replicas };
}

/**
 * The replica count the hub declared its events stream with, for a tool that declares streams or buckets of its
 * own (the CLI's plugin commands) and has no hub config to read it from; 1 when the stream does not exist yet.
 */
export async function declaredReplicas(jsm: JetStreamManager, namespace: string): Promise<number> {
  try {
    return (await jsm.streams.info(streamNames(namespace).events)).config.num_replicas || 1;
  } catch {
    return 1;
  }
}

export async function closeBus(bus: Bus): Promise<void> {
  bus.publisher.close();
  if (!bus.nc.isClosed()) await bus.nc.drain().catch(() => bus.nc.close());
}
