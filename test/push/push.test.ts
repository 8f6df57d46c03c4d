import test from 'ava';
import type { Redis } from 'ioredis';
import type { Conversation, Message } from '../../core/domain.js';
import { createEvent, type AnyEvent } from '../../core/events/catalog.js';
import { metrics } from '../../core/telemetry/metrics.js';
import { FACTS_COLLECTION } from '../../plugins/analytics/facts.js';
import { DEVICES_COLLECTION, deviceId } from '../../plugins/push/devices.js';
import { createPushPlugin, MAX_PUSH_AGE_MS, mentions } from '../../plugins/push/index.js';
import { RetryableError, type Plugin } from '../../plugins/runtime/types.js';
import { startServers } from '../helpers/hub.js';
import { isMuted } from '../../plugins/push/mutes.js';
import { assertInvalid, bearer, eventually, openPluginApi, type PluginApi, type Session } from '../notifications/support.js';
import { startFcmStandIn, type FcmStandIn } from './fcm-standin.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let fcm: FcmStandIn;
test.before(async () => {
  [servers, fcm] = await Promise.all([startServers(), startFcmStandIn()]);
});
test.after.always(async () => {
  await fcm?.close();
  await servers?.dispose();
});

const info = { attempt: 1, streamSeq: 1, subject: 'x' };
let tokenCounter = 0;
/** Tokens unique across the file (the stand-in is shared), shaped like FCM's. */
const newToken = (label: string) => `${label}${tokenCounter++}:APA91b${'x'.repeat(40)}`;

interface World {
  api: PluginApi;
  plugin: Plugin;
  alice: Session;
  bob: Session;
  carol: Session;
}

async function world(runtime = false): Promise<World> {
  const plugin = createPushPlugin({ connect: fcm.connect, baseBackoffMs: 50 });
  const api = await openPluginApi(servers, [plugin], { fcmCredentials: JSON.stringify(fcm.serviceAccount) }, { runtime });
  return { api, plugin, alice: await api.register('Alice'), bob: await api.register('Bob'), carol: await api.register('Carol Ann') };
}

async function addDevice(w: World, who: Session, token: string, platform = 'android'): Promise<void> {
  const r = await w.api.http.post('/v1/devices').set(...bearer(who)).send({ token, platform });
  if (r.status !== 201 && r.status !== 200) throw new Error(`device: ${r.status}`);
}

async function openConv(w: World, body: object): Promise<Conversation> {
  const r = await w.api.http.post('/v1/conversations').set(...bearer(w.alice)).send(body);
  if (r.status !== 201) throw new Error(`conversation: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.conversation;
}

/** Sends through the API and returns the message.created event the hub published for it. */
async function sendEvent(w: World, from: Session, conv: Conversation, text: string): Promise<AnyEvent> {
  const r = await w.api.http.post(`/v1/conversations/${conv.id}/messages`).set(...bearer(from)).send({ text });
  if (r.status !== 201) throw new Error(`send: ${r.status}`);
  const message = r.body.message as Message;
  return createEvent('message.created', { workspaceId: conv.workspaceId, conversationId: conv.id, actor: { type: 'user', id: from.id }, data: { message } });
}

/** Marks a user as connected the way the edge does (plugins/edge/presence.ts: a per-user sorted set of devices by expiry). */
async function connectSocket(w: World, userId: string): Promise<void> {
  const redis = w.api.hub.redis as Redis;
  await redis.zadd(`voxa:${w.api.hub.config.natsNamespace}:presence:user:${userId}`, Date.now() + 60_000, 'socket-1');
}

const sentTo = (token: string) => fcm.requests.filter((r) => r.message.token === token);

test('mentions: @name, @name without spaces and @userId, as whole words', (t) => {
  const u = { id: 'usr_1', name: 'Carol Ann' };
  t.true(mentions('hi @Carol Ann', u));
  t.true(mentions('hi @carolann!', u));
  t.true(mentions('@usr_1 look', u));
  t.false(mentions('mail carol@CarolAnn.test', u));
  t.false(mentions('@usr_12', u));
});

test('device routes: idempotent per token, a token moves to the latest user, only own devices can be deleted', async (t) => {
  const w = await world();
  try {
    const token = newToken('dev');
    const first = await w.api.http.post('/v1/devices').set(...bearer(w.bob)).send({ token, platform: 'ios' });
    t.is(first.status, 201);
    t.false(JSON.stringify(first.body).includes(token), 'the token is not echoed');
    t.is((await w.api.http.post('/v1/devices').set(...bearer(w.bob)).send({ token, platform: 'ios' })).status, 200);
    t.is((await w.api.http.get('/v1/devices').set(...bearer(w.bob))).body.devices.length, 1);
    // The same physical device signs in as Carol: it is hers now.
    t.is((await w.api.http.post('/v1/devices').set(...bearer(w.carol)).send({ token, platform: 'ios' })).status, 200);
    t.is((await w.api.http.get('/v1/devices').set(...bearer(w.bob))).body.devices.length, 0);
    t.is((await w.api.http.delete(`/v1/devices/${encodeURIComponent(token)}`).set(...bearer(w.bob))).status, 404);
    t.is((await w.api.http.delete(`/v1/devices/${encodeURIComponent(token)}`).set(...bearer(w.carol))).status, 204);
    t.is(await w.api.hub.store.docs.get(DEVICES_COLLECTION, deviceId(token)), null);
    for (const body of [{ token, platform: 'blackberry' }, { token: 'has spaces in it', platform: 'web' }, { platform: 'web' }, { token, platform: 'web', extra: 1 }]) {
      const bad = await w.api.http.post('/v1/devices').set(...bearer(w.bob)).send(body);
      t.is(bad.status, 400, JSON.stringify(body));
      t.is(bad.body.error.code, 'VALIDATION_FAILED');
    }
    t.is((await w.api.http.post('/v1/devices').send({ token, platform: 'web' })).status, 401);
  } finally {
    await w.api.close();
  }
});

test('push routes refuse what core routes refuse, and change nothing when they do', async (t) => {
  const w = await world();
  try {
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const mute = `/v1/conversations/${conv.id}/mute`;
    // An unknown field or an operator object in a body the route does not take is an error, not ignored.
    for (const [body, field] of [[{ x: 1 }, 'body.x'], [{ $ne: null }, 'body.$ne']] as const) {
      assertInvalid(t, await w.api.http.put(mute).set(...bearer(w.bob)).send(body), field, `PUT mute ${JSON.stringify(body)}`);
    }
    t.false(await isMuted(w.api.hub.store.docs, w.bob.id, conv.id), 'a refused PUT mutes nothing');
    assertInvalid(t, await w.api.http.put(`${mute}?x=1`).set(...bearer(w.bob)), 'query.x', 'PUT mute ?x=1');
    t.false(await isMuted(w.api.hub.store.docs, w.bob.id, conv.id));
    assertInvalid(t, await w.api.http.put('/v1/conversations/not%20an%20id/mute').set(...bearer(w.bob)), 'params.id');
    // `{}` and no body at all are both fine.
    t.deepEqual((await w.api.http.put(mute).set(...bearer(w.bob)).send({})).body, { conversationId: conv.id, muted: true });
    assertInvalid(t, await w.api.http.delete(mute).set(...bearer(w.bob)).send({ x: 1 }), 'body.x', 'DELETE mute {x:1}');
    t.true(await isMuted(w.api.hub.store.docs, w.bob.id, conv.id), 'a refused DELETE unmutes nothing');

    assertInvalid(t, await w.api.http.get('/v1/devices').set(...bearer(w.bob)).send({ a: 1 }), 'body.a', 'GET devices {a:1}');
    assertInvalid(t, await w.api.http.get('/v1/devices?limit=abc').set(...bearer(w.bob)), 'query.limit', 'GET devices ?limit=abc');
    const token = newToken('strict');
    assertInvalid(t, await w.api.http.post('/v1/devices?x=1').set(...bearer(w.bob)).send({ token, platform: 'web' }), 'query.x', 'POST devices ?x=1');
    assertInvalid(t, await w.api.http.post('/v1/devices').set(...bearer(w.bob)).send({ token: { $ne: null }, platform: 'web' }), 'body.token', 'POST devices operator');
    t.is((await w.api.http.get('/v1/devices').set(...bearer(w.bob))).body.devices.length, 0, 'no device registered by a refused request');
    await addDevice(w, w.bob, token);
    assertInvalid(t, await w.api.http.delete(`/v1/devices/${encodeURIComponent(token)}`).set(...bearer(w.bob)).send({ x: 1 }), 'body.x', 'DELETE device {x:1}');
    t.is((await w.api.http.get('/v1/devices').set(...bearer(w.bob))).body.devices.length, 1, 'the device is still there');
    const doc = (await w.api.http.get('/v1/openapi.json')).body;
    t.deepEqual(doc.paths['/v1/conversations/{id}/mute']?.put?.parameters.map((p: { name: string }) => p.name), ['id']);
    t.truthy(doc.paths['/v1/conversations/{id}/mute']?.delete?.responses['404']);
    t.deepEqual(doc.paths['/v1/devices']?.post?.requestBody.content['application/json'].schema.required, ['token', 'platform']);
  } finally {
    await w.api.close();
  }
});

test('a direct message pushes every device of the recipient once, collapsed, high priority, even when redelivered', async (t) => {
  const w = await world();
  try {
    const android = newToken('a');
    const ios = newToken('i');
    await addDevice(w, w.bob, android, 'android');
    await addDevice(w, w.bob, ios, 'ios');
    const aliceDevice = newToken('self');
    await addDevice(w, w.alice, aliceDevice);
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const event = await sendEvent(w, w.alice, conv, `Lunch? ${'very long '.repeat(40)}`);
    await w.plugin.handle(event, info);
    await w.plugin.handle(event, { ...info, attempt: 2 }); // redelivered
    await w.plugin.handle(event, { ...info, attempt: 3 });

    t.is(sentTo(android).length, 1);
    t.is(sentTo(ios).length, 1);
    t.is(sentTo(aliceDevice).length, 0, 'the sender is not pushed');
    const m = sentTo(android)[0]!;
    t.is(m.project, 'voxa-test');
    t.regex(m.authorization, /^Bearer ya29\.standin-/);
    const msg = m.message;
    t.deepEqual(msg.data, { conversationId: conv.id, seq: '1' });
    t.is(msg.notification?.title, 'Alice');
    const body = msg.notification?.body ?? '';
    t.true(body.startsWith('Lunch? very long'));
    t.true([...body].length <= 120);
    t.is(msg.android?.collapse_key, conv.id);
    t.is(msg.android?.priority, 'high');
    t.is(msg.apns?.headers?.['apns-collapse-id'], conv.id);
    t.is(msg.apns?.headers?.['apns-priority'], '10');
    t.is(msg.webpush?.headers?.['Topic'], conv.id);
    // Counted for analytics, once per device.
    t.is(await w.api.hub.store.docs.count(FACTS_COLLECTION, { kind: 'push' }), 2);
  } finally {
    await w.api.close();
  }
});

test('groups: conversation title, normal priority unless mentioned; no push with a connected socket or a muted conversation', async (t) => {
  const w = await world();
  try {
    const bobT = newToken('b');
    const carolT = newToken('c');
    await addDevice(w, w.bob, bobT);
    await addDevice(w, w.carol, carolT, 'web');
    const conv = await openConv(w, { type: 'group', title: 'Ops team', members: [w.bob.id, w.carol.id] });

    await w.plugin.handle(await sendEvent(w, w.alice, conv, 'deploy at 5, @CarolAnn please check'), info);
    const toBob = sentTo(bobT)[0]!.message;
    const toCarol = sentTo(carolT)[0]!.message;
    t.is(toBob.notification?.title, 'Ops team');
    t.is(toBob.android?.priority, 'normal');
    t.is(toCarol.android?.priority, 'high', 'mentioned');
    t.is(toCarol.webpush?.headers?.['Urgency'], 'high');

    // Bob has a socket open; Carol mutes the group.
    await connectSocket(w, w.bob.id);
    const muted = await w.api.http.put(`/v1/conversations/${conv.id}/mute`).set(...bearer(w.carol));
    t.is(muted.status, 200);
    t.deepEqual(muted.body, { conversationId: conv.id, muted: true });
    await w.plugin.handle(await sendEvent(w, w.alice, conv, 'second'), info);
    t.is(sentTo(bobT).length, 1);
    t.is(sentTo(carolT).length, 1);

    // Unmuted: Carol hears about the next one again.
    t.is((await w.api.http.delete(`/v1/conversations/${conv.id}/mute`).set(...bearer(w.carol))).status, 200);
    await w.plugin.handle(await sendEvent(w, w.alice, conv, 'third'), info);
    t.is(sentTo(carolT).length, 2);
    // Only members may mute.
    const other = await openConv(w, { type: 'direct', members: [w.bob.id] });
    t.is((await w.api.http.put(`/v1/conversations/${other.id}/mute`).set(...bearer(w.carol))).status, 403);
    t.is((await w.api.http.put('/v1/conversations/cnv_nope/mute').set(...bearer(w.carol))).status, 404);
  } finally {
    await w.api.close();
  }
});

test('private pushes carry no text and no names, only the conversation and seq', async (t) => {
  const w = await world();
  try {
    await w.api.hub.store.updateWorkspaceSettings(w.api.hub.config.defaultWorkspaceId, { privatePush: true }, () => []);
    const token = newToken('p');
    await addDevice(w, w.bob, token, 'ios');
    const conv = await openConv(w, { type: 'group', title: 'Secret project', members: [w.bob.id] });
    await w.plugin.handle(await sendEvent(w, w.alice, conv, 'the password is swordfish'), info);
    const sent = sentTo(token);
    t.is(sent.length, 1);
    const raw = JSON.stringify(sent[0]!.message);
    t.false(raw.includes('swordfish'));
    t.false(raw.includes('Alice'));
    t.false(raw.includes('Secret project'));
    t.deepEqual(sent[0]!.message.data, { conversationId: conv.id, seq: '1' });
  } finally {
    await w.api.close();
  }
});

test('unregistered and invalid tokens remove the device; quota and server errors are retried, honouring Retry-After, once per device', async (t) => {
  const w = await world();
  try {
    const gone = newToken('gone');
    const invalid = newToken('inv');
    const quota = newToken('quota');
    const flaky = newToken('flaky');
    const fine = newToken('fine');
    for (const tk of [gone, invalid, quota, flaky, fine]) await addDevice(w, w.bob, tk);
    fcm.script(gone, 'unregistered');
    fcm.script(invalid, 'invalid');
    fcm.script(quota, 'quota');
    fcm.script(flaky, 'unavailable');
    fcm.retryAfterSeconds = 2;
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const event = await sendEvent(w, w.alice, conv, 'hello');

    const err = await t.throwsAsync(w.plugin.handle(event, info), { instanceOf: RetryableError });
    // Retry-After: 2 from the 429 sets the delay (not the 50 ms test backoff).
    t.true((err as RetryableError).delayMs! > 1000 && (err as RetryableError).delayMs! <= 2000, String((err as RetryableError).delayMs));
    t.is(await w.api.hub.store.docs.get(DEVICES_COLLECTION, deviceId(gone)), null);
    t.is(await w.api.hub.store.docs.get(DEVICES_COLLECTION, deviceId(invalid)), null);
    t.truthy(await w.api.hub.store.docs.get(DEVICES_COLLECTION, deviceId(quota)));
    t.is(fcm.delivered(fine).length, 1);

    // Redelivered before Retry-After has passed: no request is spent at all.
    const before = fcm.requests.length;
    await t.throwsAsync(w.plugin.handle(event, { ...info, attempt: 2 }), { instanceOf: RetryableError });
    t.is(fcm.requests.length, before);

    // After it: the two failed devices are sent, the others are not touched again.
    await eventually(() => retryWindowPassed(w, event));
    t.is(fcm.delivered(quota).length, 1);
    t.is(fcm.delivered(flaky).length, 1);
    t.is(fcm.delivered(fine).length, 1);
    t.is(sentTo(gone).length, 1);
    t.is(sentTo(invalid).length, 1);
    await w.plugin.handle(event, { ...info, attempt: 4 });
    t.is(fcm.delivered(quota).length, 1, 'still once after another redelivery');
  } finally {
    fcm.retryAfterSeconds = 1;
    await w.api.close();
  }
});

/** Redelivers until the handler stops asking for a retry (it refuses while FCM's Retry-After is running). */
async function retryWindowPassed(w: World, event: AnyEvent): Promise<boolean> {
  try {
    await w.plugin.handle(event, { ...info, attempt: 3 });
    return true;
  } catch (err) {
    if (err instanceof RetryableError) return false;
    throw err;
  }
}

test('through the plugin runtime: a message sent over the API reaches the recipient device once', async (t) => {
  const w = await world(true);
  try {
    const token = newToken('rt');
    await addDevice(w, w.bob, token);
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    await sendEvent(w, w.alice, conv, 'via the runtime');
    const [sent] = await eventually(async () => (fcm.delivered(token).length ? fcm.delivered(token) : null));
    t.is(sent?.message.notification?.body, 'via the runtime');
    t.is(fcm.delivered(token).length, 1);
  } finally {
    await w.api.close();
  }
});

test('a message the recipient has read is not pushed, not even to a device registered after it (rewind)', async (t) => {
  const w = await world();
  try {
    const first = newToken('old');
    await addDevice(w, w.bob, first);
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const read = await sendEvent(w, w.alice, conv, 'seen on the laptop');
    await w.plugin.handle(read, info);
    t.is(sentTo(first).length, 1);
    t.is((await w.api.http.post(`/v1/conversations/${conv.id}/read`).set(...bearer(w.bob)).send({ seq: 1 })).status, 200);

    // A new phone, then the event comes again as a skip-processed rewind would bring it: the claim is per
    // device, so only the read marker stops this one.
    const later = newToken('new');
    await addDevice(w, w.bob, later);
    await w.plugin.handle(read, info);
    t.is(sentTo(later).length, 0);
    t.is(sentTo(first).length, 1);

    // Unread messages still reach every device.
    await w.plugin.handle(await sendEvent(w, w.alice, conv, 'not read yet'), info);
    t.is(sentTo(later).length, 1);
    t.is(sentTo(first).length, 2);
  } finally {
    await w.api.close();
  }
});

test('messages older than the push age bound are not pushed', async (t) => {
  const w = await world();
  try {
    const token = newToken('age');
    await addDevice(w, w.bob, token);
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const aged = async (ms: number): Promise<AnyEvent> => {
      const e = (await sendEvent(w, w.alice, conv, `from ${ms} ms ago`)) as Extract<AnyEvent, { type: 'message.created' }>;
      e.data.message.createdAt = new Date(Date.now() - ms).toISOString();
      return e;
    };
    await w.plugin.handle(await aged(MAX_PUSH_AGE_MS + 60_000), info);
    t.is(sentTo(token).length, 0);
    await w.plugin.handle(await aged(MAX_PUSH_AGE_MS - 60_000), info);
    t.is(sentTo(token).length, 1);
  } finally {
    await w.api.close();
  }
});

/** voxa_notifications_sent_total for one channel and outcome, read from prom-client. */
async function notificationsSent(outcome: string): Promise<number> {
  return (await metrics.notificationsSent.get()).values.find((v) => v.labels.channel === 'push' && v.labels.outcome === outcome)?.value ?? 0;
}

// Serial: it runs before the concurrent tests of this file, so no other push moves the counter meanwhile.
test.serial('voxa_notifications_sent_total{channel="push"} counts pushes FCM accepted (sent) and requests it refused (failed)', async (t) => {
  const w = await world();
  try {
    const ok = newToken('count-ok');
    const gone = newToken('count-gone');
    for (const tk of [ok, gone]) await addDevice(w, w.bob, tk);
    fcm.script(gone, 'unregistered');
    const sent = await notificationsSent('sent');
    const failed = await notificationsSent('failed');
    const conv = await openConv(w, { type: 'direct', members: [w.bob.id] });
    const event = await sendEvent(w, w.alice, conv, 'count me');
    await w.plugin.handle(event, info);
    await w.plugin.handle(event, { ...info, attempt: 2 }); // redelivered: nothing is sent again
    t.is(fcm.delivered(ok).length, 1);
    t.is(await notificationsSent('sent'), sent + 1);
    t.is(await notificationsSent('failed'), failed + 1);
  } finally {
    await w.api.close();
  }
});
