import test from 'ava';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import nodemailer from 'nodemailer';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import type { ConfigInput } from '../../core/config.js';
import { createEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { metrics } from '../../core/telemetry/metrics.js';
import { FACTS_COLLECTION } from '../../plugins/analytics/facts.js';
import { createEmailPlugin, digestJobId } from '../../plugins/email/index.js';
import { setMuted } from '../../plugins/push/mutes.js';
import type { Plugin } from '../../plugins/runtime/types.js';
import { startServers } from '../helpers/hub.js';
import { freePort } from '../helpers/servers.js';
import { assertInvalid, bearer, eventually, openPluginApi, type PluginApi, type Session } from '../notifications/support.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let smtp: SMTPServer;
let smtpPort: number;
const inbox: ParsedMail[] = [];

test.before(async () => {
  servers = await startServers();
  smtpPort = await freePort();
  // A real SMTP server on loopback that parses everything it receives.
  smtp = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, callback) {
      simpleParser(stream)
        .then((mail) => {
          inbox.push(mail);
          callback();
        })
        .catch(callback);
    },
  });
  await new Promise<void>((r) => smtp.listen(smtpPort, '127.0.0.1', r));
});
test.after.always(async () => {
  await new Promise<void>((r) => (smtp ? smtp.close(() => r()) : r()));
  await servers?.dispose();
});

// Tests in this file share the inbox, so they run one after the other and each looks only at its own recipients.
const mailsTo = (s: Session) => inbox.filter((m) => m.to && !Array.isArray(m.to) && m.to.value[0]?.address === s.email);

/** Inspects the plugin's BullMQ queue from the outside. */
function inspectQueue(hub: Hub): { queue: Queue; close(): Promise<void> } {
  const connection = new Redis(hub.config.redisUrl!, { maxRetriesPerRequest: null });
  const queue = new Queue('email-digest', { connection, prefix: `voxa-${hub.config.natsNamespace}` });
  return {
    queue,
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}

/** Where the digests of the tests that set it link a conversation (a query after the id, to see it is kept). */
const APP_CONVERSATION_URL = 'https://app.example.test/inbox/{conversationId}?from=digest';

async function open(delaySeconds: number, runtime: boolean, plugin: Plugin = createEmailPlugin(), overrides: ConfigInput = {}): Promise<PluginApi> {
  return openPluginApi(
    servers,
    [plugin],
    { smtpUrl: `smtp://127.0.0.1:${smtpPort}`, emailDigestDelaySeconds: delaySeconds, publicUrl: 'https://chat.example.test', emailFrom: 'Voxa <noreply@example.test>', ...overrides },
    { runtime },
  );
}

/** Every http(s) URL in a text part, and every href in an HTML part. */
const urlsIn = (text: string) => text.match(/https?:\/\/\S+/g) ?? [];
const hrefsIn = (html: string) => [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]!.replaceAll('&amp;', '&'));

async function send(api: PluginApi, from: Session, conversationId: string, text: string): Promise<{ seq: number; id: string; createdAt: string }> {
  const r = await api.http.post(`/v1/conversations/${conversationId}/messages`).set(...bearer(from)).send({ text });
  if (r.status !== 201) throw new Error(`send: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.message;
}

test.serial('one digest per recipient with escaped content, a link to the app and a working one-click List-Unsubscribe', async (t) => {
  const api = await open(1, true, createEmailPlugin(), { appConversationUrl: APP_CONVERSATION_URL });
  const q = inspectQueue(api.hub);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const carol = await api.register('Carol');
    const group = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'group', title: 'Team <Ops> & "Co"', members: [bob.id, carol.id] });
    t.is(group.status, 201);
    const gid = group.body.conversation.id as string;
    const direct = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    const did = direct.body.conversation.id as string;
    await send(api, alice, gid, 'first <img src=x onerror=alert(1)> & "quoted"');
    await send(api, alice, gid, 'second');
    await send(api, alice, did, 'just for you, Bob');

    await eventually(async () => mailsTo(bob).length >= 1 && mailsTo(carol).length >= 1);
    // Every digest job has finished: nothing waiting, delayed or running is left that could mail again.
    await eventually(async () => {
      const c = await q.queue.getJobCounts('delayed', 'waiting', 'active');
      return (c.delayed ?? 0) + (c.waiting ?? 0) + (c.active ?? 0) === 0;
    });
    t.is(mailsTo(bob).length, 1, 'three messages, one digest');
    t.is(mailsTo(carol).length, 1);
    t.is(mailsTo(alice).length, 0, 'the sender gets nothing');

    const mail = mailsTo(bob)[0]!;
    t.is(mail.subject, '3 unread messages in 2 conversations');
    t.is(mail.from?.value[0]?.address, 'noreply@example.test');
    // Plain text keeps the characters; HTML escapes them.
    t.true(mail.text!.includes('Team <Ops> & "Co" (2 unread)'));
    t.true(mail.text!.includes('Alice: first <img src=x onerror=alert(1)> & "quoted"'));
    // Conversation links go to the app's URL (the hub has no page at /conversations/<id>).
    t.true(mail.text!.includes(`  Open: https://app.example.test/inbox/${gid}?from=digest`), mail.text);
    t.false(mail.text!.includes('https://chat.example.test/conversations/'));
    const html = mail.html as string;
    t.true(html.includes('Team &lt;Ops&gt; &amp; &quot;Co&quot;'));
    t.true(html.includes('first &lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot;'));
    t.false(html.includes('<img'));
    t.true(html.includes(`href="https://app.example.test/inbox/${did}?from=digest"`), html);
    t.false(html.includes('/conversations/'));
    t.true(html.includes('just for you, Bob'));

    // List-Unsubscribe with a signed https link, and the one-click header.
    const header = (name: string) => mail.headerLines.find((h) => h.key === name)?.line.replace(/^[^:]+:\s*/, '');
    const link = /^<(https:[^>]+)>/.exec(header('list-unsubscribe') ?? '');
    t.truthy(link, header('list-unsubscribe'));
    const url = new URL(link![1]!);
    t.is(url.origin, 'https://chat.example.test');
    t.is(url.pathname, '/v1/notifications/unsubscribe');
    t.is(url.searchParams.get('u'), bob.id);
    t.is(header('list-unsubscribe-post'), 'List-Unsubscribe=One-Click');

    // The link works without signing in; GET only confirms, POST unsubscribes; a forged token is refused.
    const path = `${url.pathname}${url.search}`;
    const page = await api.http.get(path);
    t.is(page.status, 200);
    t.regex(page.text, /<form method="post"/);
    t.true((await api.http.get('/v1/me/notifications').set(...bearer(bob))).body.email.enabled);
    const forged = await api.http.post(`${url.pathname}?u=${carol.id}&t=${url.searchParams.get('t')}`).type('form').send('List-Unsubscribe=One-Click');
    t.is(forged.status, 403);
    const one = await api.http.post(path).type('form').send('List-Unsubscribe=One-Click');
    t.is(one.status, 200);
    t.false((await api.http.get('/v1/me/notifications').set(...bearer(bob))).body.email.enabled);
    t.true((await api.http.get('/v1/me/notifications').set(...bearer(carol))).body.email.enabled);

    // Sent digests are counted for analytics.
    t.is(await api.hub.store.docs.count(FACTS_COLLECTION, { kind: 'email' }), 2);
  } finally {
    await q.close();
    await api.close();
  }
});

test.serial('without appConversationUrl a digest links no conversation: its only link is the unsubscribe one', async (t) => {
  const api = await open(0, true);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'group', title: 'Plans', members: [bob.id] });
    const cid = conv.body.conversation.id as string;
    await send(api, alice, cid, 'no link for this one');
    await eventually(async () => mailsTo(bob).length === 1);
    const mail = mailsTo(bob)[0]!;
    t.true(mail.text!.includes('Alice: no link for this one'));
    const unsubscribe = /^<([^>]+)>/.exec(mail.headerLines.find((h) => h.key === 'list-unsubscribe')!.line.replace(/^[^:]+:\s*/, ''))![1]!;
    t.regex(unsubscribe, /^https:\/\/chat\.example\.test\/v1\/notifications\/unsubscribe\?/);
    // Text and HTML alike: no "Open:" line, no conversation anchor, no link into the hub but the unsubscribe one.
    t.false(mail.text!.includes('Open'), mail.text);
    t.deepEqual(urlsIn(mail.text!), [unsubscribe]);
    const html = mail.html as string;
    t.deepEqual(hrefsIn(html), [unsubscribe]);
    t.true(html.includes('<h3>Plans <small>(1 unread)</small></h3>'), html);
    // What a link into the hub would have been: the hub serves no page there.
    t.is((await api.http.get(`/conversations/${cid}`)).status, 404);
    t.is((await api.http.get('/')).status, 404);
  } finally {
    await api.close();
  }
});

test.serial('an attachment-only message previews as "Attachment" in the digest, not as a blank line', async (t) => {
  const api = await open(0, true, createEmailPlugin(), { appConversationUrl: APP_CONVERSATION_URL });
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    const cid = conv.body.conversation.id as string;
    const up = await api.http.post(`/v1/conversations/${cid}/files`).set(...bearer(alice)).attach('file', Buffer.from('quarterly numbers'), { filename: 'q3.txt', contentType: 'text/plain' });
    t.is(up.status, 201, JSON.stringify(up.body));
    const sent = await api.http.post(`/v1/conversations/${cid}/messages`).set(...bearer(alice)).send({ text: '', attachments: [up.body.file.id] });
    t.is(sent.status, 201, JSON.stringify(sent.body));
    t.is(sent.body.message.text, '');
    await eventually(async () => mailsTo(bob).length === 1);
    const mail = mailsTo(bob)[0]!;
    t.is(mail.subject, '1 unread message in 1 conversation');
    t.true(mail.text!.split('\n').includes('  Alice: Attachment'), mail.text);
    t.false(/^ {2}Alice: *$/m.test(mail.text!), 'no blank preview');
    t.true((mail.html as string).includes('<li><b>Alice</b>: Attachment</li>'), mail.html as string);
    t.true(mail.text!.includes(`  Open: https://app.example.test/inbox/${cid}?from=digest`));
  } finally {
    await api.close();
  }
});

test.serial('a digest is dropped when the user reads in time: on message.seen, or when the job finds nothing unread', async (t) => {
  const api = await open(3600, true);
  const q = inspectQueue(api.hub);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    const cid = conv.body.conversation.id as string;
    const m = await send(api, alice, cid, 'are you there?');
    const job = await eventually(async () => q.queue.getJob(digestJobId(bob.id)));
    t.true(await job.isDelayed());

    // Bob reads: the message.seen event removes the pending digest.
    const read = await api.http.post(`/v1/conversations/${cid}/read`).set(...bearer(bob)).send({ seq: m.seq });
    t.true(read.status === 200 || read.status === 204);
    await eventually(async () => (await q.queue.getJob(digestJobId(bob.id))) === undefined);

    // Second path: the job runs but the user already read (marker moved without an event reaching us).
    await send(api, alice, cid, 'one more');
    const again = await eventually(async () => q.queue.getJob(digestJobId(bob.id)));
    const conv2 = await api.hub.store.getConversation(cid);
    await api.hub.store.setReadMarker(cid, bob.id, conv2!.lastSeq, () => []);
    await again.promote(); // run it now instead of in an hour
    await eventually(async () => (await q.queue.getJob(digestJobId(bob.id))) === undefined);
    t.is(mailsTo(bob).length, 0);
  } finally {
    await q.close();
    await api.close();
  }
});

test.serial('preferences: off means no digest is scheduled, muted conversations are left out, bad input is 400', async (t) => {
  const plugin = createEmailPlugin();
  const api = await open(3600, false, plugin);
  const q = inspectQueue(api.hub);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const dave = await api.register('Dave');
    t.deepEqual((await api.http.get('/v1/me/notifications').set(...bearer(bob))).body, { email: { enabled: true, delaySeconds: 3600 } });
    const put = await api.http.put('/v1/me/notifications').set(...bearer(bob)).send({ email: { enabled: false } });
    t.deepEqual(put.body, { email: { enabled: false, delaySeconds: 3600 } });
    const put2 = await api.http.put('/v1/me/notifications').set(...bearer(dave)).send({ email: { delaySeconds: 0 } });
    t.deepEqual(put2.body, { email: { enabled: true, delaySeconds: 0 } });
    for (const body of [{ email: { delaySeconds: -1 } }, { email: { enabled: 'yes' } }, { email: { enabled: true, extra: 1 } }, { sms: {} }]) {
      const bad = await api.http.put('/v1/me/notifications').set(...bearer(bob)).send(body);
      t.is(bad.status, 400, JSON.stringify(body));
      t.is(bad.body.error.code, 'VALIDATION_FAILED');
    }
    // Queries and bodies are strict like on core routes, and a refused request changes nothing.
    assertInvalid(t, await api.http.put('/v1/me/notifications?x=1').set(...bearer(bob)).send({ email: { enabled: true } }), 'query.x', 'PUT ?x=1');
    assertInvalid(t, await api.http.put('/v1/me/notifications').set(...bearer(bob)).send({ email: { enabled: true }, $set: {} }), 'body.$set', 'PUT $set');
    assertInvalid(t, await api.http.get('/v1/me/notifications').set(...bearer(bob)).send({ a: 1 }), 'body.a', 'GET {a:1}');
    assertInvalid(t, await api.http.get('/v1/me/notifications?x=1').set(...bearer(bob)), 'query.x', 'GET ?x=1');
    t.deepEqual((await api.http.get('/v1/me/notifications').set(...bearer(bob))).body, { email: { enabled: false, delaySeconds: 3600 } }, 'still off');
    assertInvalid(t, await api.http.get('/v1/notifications/unsubscribe?u=a&u=b&t=c'), 'query.u', 'repeated u');
    assertInvalid(t, await api.http.post('/v1/notifications/unsubscribe?u=a&t=c&x=1'), 'query.x', 'unsubscribe ?x=1');
    const doc = (await api.http.get('/v1/openapi.json')).body;
    t.falsy(doc.paths['/v1/notifications/unsubscribe']?.post?.security, 'the unsubscribe link needs no token');
    t.deepEqual(doc.paths['/v1/me/notifications']?.put?.security, [{ bearer: [] }]);

    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'group', title: 'G', members: [bob.id, dave.id] });
    const cid = conv.body.conversation.id as string;
    const muted = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [dave.id] });
    const mid = muted.body.conversation.id as string;
    await setMuted(api.hub.store.docs, dave.id, mid, true);
    const msg = await send(api, alice, cid, 'hello both');
    await send(api, alice, mid, 'secret muted talk');
    // Feed the event straight to the handler (no runtime in this test).
    await plugin.handle(
      createEvent('message.created', { workspaceId: api.hub.config.defaultWorkspaceId, conversationId: cid, actor: { type: 'user', id: alice.id }, data: { message: { ...msg, conversationId: cid, senderId: alice.id, text: 'hello both', clientId: null } } }),
      { attempt: 1, streamSeq: 1, subject: 'x' },
    );
    t.is(await q.queue.getJob(digestJobId(bob.id)), undefined, 'email off: nothing scheduled');
    // Dave's delay is 0: his digest goes out at once and leaves the muted conversation out.
    await eventually(async () => mailsTo(dave).length === 1);
    const mail = mailsTo(dave)[0]!;
    t.is(mail.subject, '1 unread message in 1 conversation');
    t.true(mail.text!.includes('hello both'));
    t.false(mail.text!.includes('secret muted talk'));
  } finally {
    await q.close();
    await api.close();
  }
});

test.serial('a digest that failed for good does not block the next one; a muted conversation schedules none', async (t) => {
  // SMTP refuses (a greylisting server, an outage) until `failing` is cleared, then delivers to the test inbox.
  let failing = true;
  const real = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true });
  const flaky = nodemailer.createTransport({
    name: 'flaky',
    version: '1',
    send(mail, callback) {
      if (failing) return callback(new Error('451 temporary failure'), undefined as never);
      void real.sendMail(mail.data).then((info) => callback(null, info as never), (err: Error) => callback(err, undefined as never));
    },
  });
  const plugin = createEmailPlugin({ transport: flaky, retry: { attempts: 1, backoffMs: 10 } });
  const api = await open(0, true, plugin);
  const q = inspectQueue(api.hub);
  try {
    const alice = await api.register('Alice');
    const erin = await api.register('Erin');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [erin.id] });
    const cid = conv.body.conversation.id as string;
    await send(api, alice, cid, 'lost to the outage');
    // The one attempt fails; the job is gone, not kept as failed under the user's id.
    await eventually(async () => (await q.queue.getFailedCount()) === 0 && (await q.queue.getJobCounts('delayed', 'waiting', 'active')).delayed === 0 && (await notificationsSent('email', 'failed')) > 0);
    await eventually(async () => (await q.queue.getJob(digestJobId(erin.id))) === undefined);
    failing = false;
    await send(api, alice, cid, 'after the outage');
    await eventually(async () => mailsTo(erin).length === 1);
    t.true(mailsTo(erin)[0]!.text!.includes('after the outage'), 'the next message makes a digest again');

    // A muted conversation's message schedules nothing (it would only send the other unread again).
    await api.http.put('/v1/me/notifications').set(...bearer(erin)).send({ email: { delaySeconds: 3600 } });
    const group = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'group', title: 'Noisy', members: [erin.id] });
    await setMuted(api.hub.store.docs, erin.id, group.body.conversation.id as string, true);
    await send(api, alice, group.body.conversation.id as string, 'noise');
    await new Promise((r) => setTimeout(r, 1000));
    t.is(await q.queue.getJob(digestJobId(erin.id)), undefined, 'no digest for a muted conversation');
    await send(api, alice, cid, 'not muted');
    await eventually(async () => (await q.queue.getJob(digestJobId(erin.id))) !== undefined);
    t.pass();
  } finally {
    await q.close();
    await api.close();
  }
});

/** voxa_notifications_sent_total for one channel and outcome, read from prom-client. */
async function notificationsSent(channel: string, outcome: string): Promise<number> {
  return (await metrics.notificationsSent.get()).values.find((v) => v.labels.channel === channel && v.labels.outcome === outcome)?.value ?? 0;
}

test.serial('voxa_notifications_sent_total counts each digest the SMTP server took (sent) and each attempt it did not (failed)', async (t) => {
  const sentBefore = await notificationsSent('email', 'sent');
  const api = await open(0, true);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    await send(api, alice, conv.body.conversation.id as string, 'counted');
    await eventually(async () => mailsTo(bob).length === 1);
    await eventually(async () => (await notificationsSent('email', 'sent')) === sentBefore + 1);
    t.is(await notificationsSent('email', 'sent'), sentBefore + 1);
  } finally {
    await api.close();
  }

  // An SMTP server that is not there: the attempt counts as failed, and nothing as sent.
  const failedBefore = await notificationsSent('email', 'failed');
  const sentAfter = await notificationsSent('email', 'sent');
  const down = await open(0, true, createEmailPlugin({ transport: nodemailer.createTransport({ host: '127.0.0.1', port: await freePort(), connectionTimeout: 2000 }) }));
  try {
    const alice = await down.register('Alice');
    const bob = await down.register('Bob');
    const conv = await down.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    await send(down, alice, conv.body.conversation.id as string, 'never delivered');
    await eventually(async () => (await notificationsSent('email', 'failed')) > failedBefore);
    t.is(await notificationsSent('email', 'sent'), sentAfter);
    t.is(mailsTo(bob).length, 0);
  } finally {
    await down.close();
  }
});

test.serial('stop returns after the close grace when Redis stops answering mid-digest; the digest completes once it answers again', async (t) => {
  // Servers of their own, since this test freezes Redis (SIGSTOP: connections stay open, nothing answers).
  const own = await startServers();
  t.teardown(() => own.dispose());
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown): void => void rejections.push(reason);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => void process.off('unhandledRejection', onRejection));
  // An SMTP stand-in that holds each mail until the test lets it go, so a digest is running when Redis freezes.
  let sending: (() => void) | null = null;
  let release: () => void = () => undefined;
  const released = new Promise<void>((r) => (release = r));
  const sent: string[] = [];
  const transport = nodemailer.createTransport<{ messageId: string }>({
    name: 'held',
    version: '1',
    send(mail, callback) {
      sending?.();
      void released.then(() => {
        sent.push(String(mail.data.subject));
        callback(null, { messageId: mail.message.messageId() });
      });
    },
  });
  const plugin = createEmailPlugin({ transport, closeGraceMs: 300 });
  const api = await openPluginApi(own, [plugin], { smtpUrl: 'smtp://127.0.0.1:1', emailDigestDelaySeconds: 0 }, { runtime: true });
  const q = inspectQueue(api.hub);
  try {
    const alice = await api.register('Alice');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(alice)).send({ type: 'direct', members: [bob.id] });
    await new Promise<void>((resolve) => {
      sending = resolve;
      void send(api, alice, conv.body.conversation.id as string, 'in flight when Redis hangs');
    });
    own.redis.freeze();
    t.teardown(() => own.redis.thaw());
    // The digest finishes now, and BullMQ's job completion waits on the frozen Redis: before, stop() waited
    // for it for ever, and held the hub's whole stop until VOXA_STOP_TIMEOUT_MS. The bound is generous (the
    // grace is 300 ms): it only tells a stop that returns from one that does not.
    release();
    const outcome = await Promise.race([
      plugin.stop!().then(() => 'stopped'),
      new Promise<string>((r) => setTimeout(() => r('still waiting'), 20_000).unref()),
    ]);
    t.is(outcome, 'stopped');
    own.redis.thaw();
    // Once Redis answers again, the close finishes in the background: the job completes (and is removed)
    // instead of being left active.
    await eventually(async () => (await q.queue.getJob(digestJobId(bob.id))) === undefined);
    t.deepEqual(sent, ['1 unread message in 1 conversation']);
    t.deepEqual(rejections.map((r) => String((r as Error)?.message ?? r)), []);
  } finally {
    own.redis.thaw();
    await q.close();
    await api.close();
  }
});
