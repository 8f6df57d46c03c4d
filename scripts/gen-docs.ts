/**
 * Writes docs/events.md and docs/config.md from the event catalog and the config schema, so the docs cannot
 * drift: test/events/catalog.test.ts fails when the committed files differ from what this renders.
 * Run: node --import tsx scripts/gen-docs.ts
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { describeConfig } from '../core/config.js';
import { EVENTS, EVENT_TYPES, isDurable, subjectOf } from '../core/events/catalog.js';
import { streamConfigs } from '../core/bus/nats.js';

export function renderEventsDoc(): string {
  const lines = [
    '# Events',
    '',
    'Generated from `core/events/catalog.ts` by `scripts/gen-docs.ts`; do not edit by hand.',
    '',
    'Every event travels in the envelope `{ id, type, time, workspaceId, conversationId?, userId?, actor, data, v }`.',
    'Durable events are published to JetStream with the headers `Nats-Msg-Id` = `id` (JetStream drops a republish',
    'inside its duplicate window), `Voxa-Event-Type` = `type` and the W3C `traceparent` of the change: while tracing',
    'is on (`VOXA_TRACING`, see observability.md) the trace continues in every consumer; while it is off each event',
    'carries one of its own, not sampled, so logs downstream can still be correlated by trace id. Ephemeral',
    'events (typing, presence) are plain core-NATS publishes without headers, which the memory stream keeps briefly.',
    'Consumers deduplicate by `id`. With `VOXA_NATS_NAMESPACE` set, subjects start with `<namespace>.` and stream',
    'names with `<NAMESPACE>_`.',
    '',
    '## Streams',
    '',
    '| stream | storage | subjects | purpose |',
    '| --- | --- | --- | --- |',
    ...streamConfigs('').map((s) => `| \`${s.name}\` | ${s.storage} | ${s.subjects.map((x) => `\`${x}\``).join(', ')} | ${s.description} |`),
    '',
    '## Catalog',
    '',
    '| type | subject (example) | stream | meaning |',
    '| --- | --- | --- | --- |',
    ...EVENT_TYPES.map((t) => {
      const subject = subjectOf({ type: t, workspaceId: 'w1', conversationId: 'c9', userId: 'u7' });
      return `| \`${t}\` | \`${subject}\` | ${isDurable(t) ? 'durable' : 'ephemeral'} | ${EVENTS[t].doc} |`;
    }),
    '',
    '## Payload schemas (`data`)',
    '',
  ];
  for (const t of EVENT_TYPES) {
    lines.push(`### ${t}`, '', '```json', JSON.stringify(z.toJSONSchema(EVENTS[t].data, { unrepresentable: 'any' }), null, 2), '```', '');
  }
  return lines.join('\n');
}

export function renderConfigDoc(): string {
  return [
    '# Configuration',
    '',
    'Generated from `core/config.ts` by `scripts/gen-docs.ts`; do not edit by hand. Values come from the defaults,',
    'then the JSON file named by `VOXA_CONFIG`, then the environment. `voxa config check` validates them and names',
    'the first bad field.',
    '',
    'Fields marked **secret** are shown only as `[set]` (by `voxa config check` and in logs); fields marked **URL**',
    'are shown with the credentials in them masked (`redis://:***@host:6379`).',
    '',
    '| env | field | default | meaning |',
    '| --- | --- | --- | --- |',
    ...describeConfig().map((r) => `| \`${r.env}\` | \`${r.field}\` | ${r.default === undefined ? '—' : `\`${JSON.stringify(r.default)}\``} | ${r.doc}${r.sensitive === 'secret' ? ' **secret**' : r.sensitive === 'url' ? ' **URL**' : ''} |`),
    '',
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const docs = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs');
  writeFileSync(join(docs, 'events.md'), renderEventsDoc());
  writeFileSync(join(docs, 'config.md'), renderConfigDoc());
  console.log('wrote docs/events.md and docs/config.md');
}
