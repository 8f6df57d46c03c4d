/**
 * Short-lived records of the sign-in flows, and the schedule that deletes them once they can no longer
 * matter. Each one exists to make something single-use, and each stops mattering at a known point:
 *
 * - a used TOTP step (`totp_steps`): codes are only accepted for now ± TOTP_DRIFT_STEPS steps, so a claim
 *   older than a few steps can never be contested again;
 * - a used recovery code (`totp_recovery_used`): once its hash is gone from the user's record the code is
 *   refused without the claim. The claim is marked `settledAt` only after that removal committed, so a
 *   claim whose removal never happened (a crash in between) is never pruned and keeps the code dead;
 * - a used Google sign-in state (`oidc_used_states`): its flow cookie expires FLOW_TTL_MS after the flow
 *   started, and the callback refuses an expired flow before it even looks for the state;
 * - an invite code (`user_invites`): refused once past its expiresAt (core/auth/invites.ts).
 *
 * Every hub process prunes on a timer; deletes are idempotent, so several processes doing it is harmless.
 * The pruner itself is generic (rules of collection, time field and retention): the webhooks plugin runs one
 * for its delivery log too.
 */
import type { Logger } from 'pino';
import type { DocumentStore } from '../store/port.js';
import { INVITES_COLLECTION } from './invites.js';

export const TOTP_STEPS_COLLECTION = 'totp_steps';
export const RECOVERY_USED_COLLECTION = 'totp_recovery_used';
export const OIDC_USED_STATES_COLLECTION = 'oidc_used_states';

/** Lifetime of a Google sign-in flow (its sealed cookie), from start to callback. */
export const OIDC_FLOW_TTL_MS = 10 * 60_000;

/** Room for clocks of different hub processes disagreeing, added to every retention below. */
const CLOCK_SKEW_MS = 5 * 60_000;

/** What is pruned: documents of `collection` whose `field` (an ISO time) is older than `retainMs`. */
export interface PruneRule {
  collection: string;
  field: string;
  retainMs: number;
}

export const PRUNE_RULES: readonly PruneRule[] = [
  // A code is good for at most three 30 s steps; keep the claim well past that.
  { collection: TOTP_STEPS_COLLECTION, field: 'at', retainMs: 5 * 60_000 + CLOCK_SKEW_MS },
  // A request that read the user before the code was used up could still be in flight: give it a day.
  { collection: RECOVERY_USED_COLLECTION, field: 'settledAt', retainMs: 24 * 3600_000 },
  { collection: OIDC_USED_STATES_COLLECTION, field: 'at', retainMs: OIDC_FLOW_TTL_MS + CLOCK_SKEW_MS },
  // An expired invite code is refused on its own; its record only has to go.
  { collection: INVITES_COLLECTION, field: 'expiresAt', retainMs: CLOCK_SKEW_MS },
];

/** Deletes every expired record as of `now`, rule by rule in order; returns how many per collection. */
export async function pruneRecords(docs: DocumentStore, now: Date = new Date(), rules: readonly PruneRule[] = PRUNE_RULES): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const batch = 1000;
  for (const rule of rules) {
    const cutoff = new Date(now.getTime() - rule.retainMs).toISOString();
    let total = 0;
    for (;;) {
      const n = await docs.deleteBefore(rule.collection, rule.field, cutoff, batch);
      total += n;
      if (n < batch) break;
    }
    out[rule.collection] = total;
  }
  return out;
}

/** A running prune schedule. */
export interface Pruner {
  /** Stops the timer and waits for a prune in progress, so the store can be closed after it. */
  stop(): Promise<void>;
  /** Runs one prune now (also what the timer calls). */
  runOnce(now?: Date): Promise<Record<string, number>>;
}

/**
 * Prunes every `intervalMs` (0: never) by `rules` (default: the sign-in records above; `what` names them in
 * the logs). The first run comes after at most a minute, so a hub that is restarted more often than the
 * interval still prunes. The timer is unref'd: it never keeps a process alive.
 */
export function startPruner(
  docs: DocumentStore,
  intervalMs: number,
  log?: Logger,
  opts: { rules?: readonly PruneRule[]; what?: string } = {},
): Pruner {
  const what = opts.what ?? 'expired sign-in records';
  let timer: NodeJS.Timeout | null = null;
  const inFlight = new Set<Promise<void>>();
  let stopped = false;

  const runOnce = (now?: Date): Promise<Record<string, number>> => {
    const p = pruneRecords(docs, now, opts.rules);
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    inFlight.add(settled);
    void settled.then(() => inFlight.delete(settled));
    return p;
  };

  const schedule = (delay: number) => {
    if (stopped || intervalMs <= 0) return;
    timer = setTimeout(() => {
      timer = null;
      runOnce()
        .then((counts) => {
          const total = Object.values(counts).reduce((a, b) => a + b, 0);
          if (total > 0) log?.debug({ pruned: counts }, `pruned ${what}`);
        })
        .catch((err: unknown) => log?.warn({ err }, `pruning ${what} failed; will retry`))
        .finally(() => schedule(intervalMs));
    }, delay);
    timer.unref();
  };
  schedule(Math.min(intervalMs, 60_000));

  return {
    runOnce,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await Promise.all(inFlight);
    },
  };
}
