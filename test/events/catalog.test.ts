import test from 'ava';
import { readFileSync } from 'node:fs';
import { streamConfigs } from '../../core/bus/nats.js';
import { checkEventData, createEvent, EnvelopeSchema, EVENT_TYPES, isDurable, subjectOf, typeFromSubject, type EventType } from '../../core/events/catalog.js';
import { renderConfigDoc, renderEventsDoc } from '../../scripts/gen-docs.js';

/** NATS subject matching: `*` is one token, `>` the rest. */
function matches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (f[i] !== '*' && f[i] !== s[i]) return false;
  }
  return f.length === s.length;
}

for (const ns of ['', 'tns1']) {
  test(`every event type lands in exactly one stream, the right one (namespace "${ns}")`, (t) => {
    const streams = streamConfigs(ns);
    for (const type of EVENT_TYPES) {
      const subject = subjectOf({ type, workspaceId: 'w1', conversationId: 'c9', userId: 'u7' }, ns);
      const owners = streams.filter((s) => s.subjects.some((f) => matches(f, subject)));
      t.is(owners.length, 1, `${type} → ${subject}`);
      t.is(owners[0]!.name.endsWith(isDurable(type) ? 'VOXA_EVENTS' : 'VOXA_RT'), true, type);
      t.is(typeFromSubject(subject, ns), type, `subject of ${type} parses back`);
    }
  });
}

test('the generated docs are up to date with the catalog and the config schema', (t) => {
  t.is(readFileSync(new URL('../../docs/events.md', import.meta.url), 'utf8'), renderEventsDoc(), 'run: node --import tsx scripts/gen-docs.ts');
  t.is(readFileSync(new URL('../../docs/config.md', import.meta.url), 'utf8'), renderConfigDoc(), 'run: node --import tsx scripts/gen-docs.ts');
});

test('events carry the envelope the contract names and refuse a missing scope id', (t) => {
  const e = createEvent('message.seen', { workspaceId: 'w1', conversationId: 'c1', actor: { type: 'user', id: 'u1' }, data: { conversationId: 'c1', userId: 'u1', seq: 3 } });
  t.true(EnvelopeSchema.safeParse(e).success);
  t.deepEqual(Object.keys(e).sort(), ['actor', 'conversationId', 'data', 'id', 'time', 'type', 'v', 'workspaceId']);
  t.throws(() => createEvent('message.seen', { workspaceId: 'w1', actor: { type: 'user', id: 'u1' }, data: { conversationId: 'c1', userId: 'u1', seq: 3 } }));
  t.throws(() => createEvent('user.login', { workspaceId: 'w1', actor: { type: 'user', id: 'u1' }, data: { method: 'password' } }));
});

test('checkEventData reports a type the catalog does not know instead of throwing', (t) => {
  const unknown = checkEventData({ type: 'message.pinned' as EventType, data: {} });
  t.truthy(unknown);
  t.deepEqual(unknown!.issues[0]!.path, ['type']);
  t.notThrows(() => checkEventData({ type: 'toString' as EventType, data: {} }));
  t.is(checkEventData({ type: 'user.logout', data: {} }), undefined);
});
