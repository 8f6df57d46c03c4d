import test from 'ava';
import { closeBus, openBus, type Bus } from '../../core/bus/nats.js';
import { startNats, uniqueNamespace, type ManagedServer } from '../helpers/servers.js';

let nats: ManagedServer;
test.before(async () => {
  nats = await startNats();
});
test.after.always(async () => {
  await nats?.dispose();
});

async function bus(): Promise<Bus> {
  return openBus(nats.url, 'test', uniqueNamespace());
}

test('streams are created idempotently with the declared subjects', async (t) => {
  const b = await bus();
  const again = await openBus(nats.url, 'test2', b.namespace); // second boot must not fail
  const info = await b.jsm.streams.info(b.streams.events);
  t.deepEqual(info.config.subjects, [`${b.namespace}.chat.>`, `${b.namespace}.user.>`, `${b.namespace}.admin.>`]);
  const rt = await b.jsm.streams.info(b.streams.ephemeral);
  t.is(String(rt.config.storage), 'memory');
  await closeBus(again);
  await closeBus(b);
});

test('collected acks resolve per publish and Nats-Msg-Id dedupes', async (t) => {
  const b = await bus();
  const subj = `${b.namespace}.chat.w1.c1.message.created`;
  const acks = await Promise.all(
    Array.from({ length: 200 }, (_, i) => b.publisher.publish(subj, Buffer.from(String(i)), {}, `evt_${i}`)),
  );
  t.is(new Set(acks.map((a) => a.seq)).size, 200);
  const dup = await b.publisher.publish(subj, Buffer.from('again'), {}, 'evt_7');
  t.true(dup.duplicate);
  const info = await b.jsm.streams.info(b.streams.events);
  t.is(info.state.messages, 200);
  await closeBus(b);
});

test('publishing to a subject no stream captures is rejected, not left hanging', async (t) => {
  const b = await bus();
  await t.throwsAsync(b.publisher.publish(`nostream.${b.namespace}.x`, Buffer.from('x'), {}, 'e1'), { message: /no stream/ });
  await closeBus(b);
});
