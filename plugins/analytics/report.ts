/**
 * Day figures computed from the facts (facts.ts). See docs/notifications.md, "Analytics", for the exact
 * definitions; the short version:
 *
 * - messages: messages created that UTC day; activeUsers: distinct senders among them.
 * - conversationsOpened: conversations created that day.
 * - first response: a customer turn starts with a customer message that follows an agent message (or opens
 *   the conversation) and ends at the next agent message; its first-response time is the time between the
 *   two. Further customer messages inside the turn do not restart it. A sample counts towards the day of the
 *   agent's reply, so a day's figure is final once the day is over.
 * - deliveries by transport, pushes and emails sent: counts of those facts.
 */
import type { DocumentStore } from '../../core/store/port.js';
import { FACTS_COLLECTION, messageFactId, type Fact, type MessageFact } from './facts.js';

export interface ResponseStats {
  /** Customer turns answered. */
  count: number;
  medianMs: number | null;
  p90Ms: number | null;
}

export interface DayStats {
  day: string;
  messages: number;
  activeUsers: number;
  conversationsOpened: number;
  firstResponse: ResponseStats;
  deliveries: Record<string, number>;
  pushesSent: number;
  emailsSent: number;
}

export interface AnalyticsReport {
  workspaceId: string;
  from: string;
  to: string;
  days: DayStats[];
  /** The whole range: sums, distinct senders over the range, percentiles over every sample. */
  totals: Omit<DayStats, 'day'>;
}

/** Nearest-rank percentile (p in (0,1]) of ascending values: the smallest value with at least p of them at or below it. */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
}

function responseStats(samples: number[]): ResponseStats {
  const sorted = [...samples].sort((a, b) => a - b);
  return { count: sorted.length, medianMs: percentile(sorted, 0.5), p90Ms: percentile(sorted, 0.9) };
}

/** Every UTC day from `from` to `to` inclusive (YYYY-MM-DD). */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += 86_400_000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

/**
 * The first-response samples answered by the agent messages of one day. For each agent message it walks back
 * by seq through the customer messages right before it; `lookup` finds messages of earlier days.
 */
async function responseSamples(agentMessages: MessageFact[], lookup: (conversationId: string, seq: number) => Promise<MessageFact | null>): Promise<number[]> {
  const samples: number[] = [];
  for (const reply of agentMessages) {
    let turnStart: MessageFact | null = null;
    for (let seq = reply.seq - 1; seq >= 1; seq--) {
      const prev = await lookup(reply.conversationId, seq);
      // A message not counted yet (still in flight) ends the walk: better a shorter sample than a wrong turn.
      if (!prev || prev.side === 'agent') break;
      if (prev.side === 'customer') turnStart = prev;
      // 'other' senders (deleted accounts) neither open nor close a turn.
    }
    if (turnStart) samples.push(Math.max(0, Date.parse(reply.at) - Date.parse(turnStart.at)));
  }
  return samples;
}

/** The report for one workspace and an inclusive range of UTC days. */
export async function buildReport(docs: DocumentStore, workspaceId: string, from: string, to: string): Promise<AnalyticsReport> {
  const known = new Map<string, MessageFact | null>();
  const lookup = async (conversationId: string, seq: number): Promise<MessageFact | null> => {
    const id = messageFactId(conversationId, seq);
    if (!known.has(id)) {
      const f = await docs.get<Fact>(FACTS_COLLECTION, id);
      known.set(id, f && f.kind === 'message' && f.workspaceId === workspaceId ? f : null);
    }
    return known.get(id)!;
  };

  const days: DayStats[] = [];
  const allSenders = new Set<string>();
  const allSamples: number[] = [];
  for (const day of daysBetween(from, to)) {
    const facts = await docs.find<Fact>(FACTS_COLLECTION, { workspaceId, day });
    const senders = new Set<string>();
    const agentMessages: MessageFact[] = [];
    const stats: DayStats = {
      day,
      messages: 0,
      activeUsers: 0,
      conversationsOpened: 0,
      firstResponse: { count: 0, medianMs: null, p90Ms: null },
      deliveries: {},
      pushesSent: 0,
      emailsSent: 0,
    };
    for (const f of facts) {
      switch (f.kind) {
        case 'message':
          stats.messages++;
          senders.add(f.senderId);
          known.set(messageFactId(f.conversationId, f.seq), f);
          if (f.side === 'agent') agentMessages.push(f);
          break;
        case 'conversation':
          stats.conversationsOpened++;
          break;
        case 'delivery':
          stats.deliveries[f.transport] = (stats.deliveries[f.transport] ?? 0) + 1;
          break;
        case 'push':
          stats.pushesSent++;
          break;
        case 'email':
          stats.emailsSent++;
          break;
      }
    }
    stats.activeUsers = senders.size;
    for (const s of senders) allSenders.add(s);
    const samples = await responseSamples(agentMessages, lookup);
    stats.firstResponse = responseStats(samples);
    allSamples.push(...samples);
    days.push(stats);
  }

  const deliveries: Record<string, number> = {};
  for (const d of days) for (const [k, v] of Object.entries(d.deliveries)) deliveries[k] = (deliveries[k] ?? 0) + v;
  const sum = (pick: (d: DayStats) => number) => days.reduce((acc, d) => acc + pick(d), 0);
  return {
    workspaceId,
    from,
    to,
    days,
    totals: {
      messages: sum((d) => d.messages),
      activeUsers: allSenders.size,
      conversationsOpened: sum((d) => d.conversationsOpened),
      firstResponse: responseStats(allSamples),
      deliveries,
      pushesSent: sum((d) => d.pushesSent),
      emailsSent: sum((d) => d.emailsSent),
    },
  };
}
