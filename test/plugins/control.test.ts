import test from 'ava';
import { filterSubjectOf } from '../../core/events/catalog.js';
import { backoffFor, narrowestFilter, parseConsumerName, resolvePolicy, singleFilterFor } from '../../plugins/runtime/control.js';
import { dedupeKey } from '../../plugins/runtime/idempotency.js';

test('narrowest single filter: one type, same-shape types merged by token, mixed shapes by common prefix', (t) => {
  const f = (...types: Parameters<typeof filterSubjectOf>[0][]) => narrowestFilter(types.map((x) => filterSubjectOf(x, 'ns')));
  t.is(f('message.created'), 'ns.chat.*.*.message.created');
  t.is(f('message.created', 'message.deleted'), 'ns.chat.*.*.message.*');
  t.is(f('message.created', 'conversation.created'), 'ns.chat.*.*.*.created');
  t.is(f('message.created', 'workspace.updated'), 'ns.>');
  t.is(narrowestFilter(['a.b', 'c.d.e']), undefined, 'nothing in common: the whole stream');
  t.is(narrowestFilter([]), undefined);
  // NATS 2.9 refuses filters that cut across stream subjects: mixed scopes read the whole stream.
  t.is(singleFilterFor(['message.created', 'user.login'], 'ns'), undefined);
  t.is(singleFilterFor(['message.created', 'message.seen'], 'ns'), 'ns.chat.*.*.message.*');
  t.is(singleFilterFor(['user.login', 'user.logout'], ''), 'user.*.*.user.*');
});

test('retry policy defaults, backoff per attempt (last repeats) and consumer names', (t) => {
  const p = resolvePolicy({ backoffMs: [10, 20] });
  t.deepEqual([backoffFor(p, 1), backoffFor(p, 2), backoffFor(p, 7)], [10, 20, 20]);
  t.like(resolvePolicy(), { maxDeliveries: 5, ackWaitMs: 30_000 });
  t.deepEqual(parseConsumerName('web-hooks2-g12'), { plugin: 'web-hooks2', generation: 12 });
  t.is(parseConsumerName('web-hooks-retry'), null);
  t.is(dedupeKey({ replay: 'reprocess' }, 'evt_1', 2), 'evt_1@g2');
  t.is(dedupeKey({ replay: 'reprocess' }, 'evt_1', 0), 'evt_1');
  t.is(dedupeKey({}, 'evt_1', 3), 'evt_1');
});
