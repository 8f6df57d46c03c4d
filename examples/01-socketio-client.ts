/**
 * A Socket.IO client for the hub's edge: log in over REST, connect with the token and our cursors in the
 * handshake, print what arrives, send a message once. It stays connected the way an app should:
 * - every (re)connect sends the current cursors, so the backlog since the last message we have comes first;
 * - after a reconnect it asks for the edits and deletes it missed (`resume` with `changesSince`, the last
 *   `serverTime` the hub gave us) to messages it already has;
 * - when the access token expires (or the edge shuts down) the hub disconnects us; we refresh the token
 *   over REST when that was the reason and connect again;
 * - the message is sent with one clientId, retried after a reconnect until acknowledged, so it lands once.
 *
 *   VOXA_URL=http://localhost:8080 VOXA_EMAIL=ana@example.com VOXA_PASSWORD='…' \
 *     node --import tsx examples/01-socketio-client.ts [conversationId] [text]
 */
import { randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';

const base = process.env.VOXA_URL ?? 'http://localhost:8080';
const [conversationId, text] = process.argv.slice(2);

async function auth(path: string, body: unknown): Promise<{ accessToken: string; refreshToken: string }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path} failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as { accessToken: string; refreshToken: string };
}

let tokens = await auth('/v1/auth/login', { email: process.env.VOXA_EMAIL, password: process.env.VOXA_PASSWORD });
/** Refresh tokens rotate: each one works once, and the answer carries the next. */
const refresh = async () => (tokens = await auth('/v1/auth/refresh', { refreshToken: tokens.refreshToken }));

// The highest seq we have seen per conversation; a real app keeps it in storage across restarts.
const cursors: Record<string, number> = {};
// The hub's time as of which we have every edit and delete (a real app stores it with the cursors).
let changesSince: string | undefined;
const clientId = `example-${randomUUID()}`;
let sent = !(conversationId && text);

// `auth` as a function is asked again on every (re)connect: the current token and cursors each time.
const socket = io(base, { transports: ['websocket'], auth: (cb) => cb({ token: tokens.accessToken, cursors }) });

let tokenExpired = false;
let attempt = 0;
async function reconnect(): Promise<void> {
  try {
    if (tokenExpired) await refresh();
    tokenExpired = false;
  } catch (err) {
    console.error('could not refresh the token; log in again:', (err as Error).message);
    process.exit(1);
  }
  const delay = Math.min(30_000, 250 * 2 ** attempt++) * (0.5 + Math.random() / 2);
  setTimeout(() => socket.connect(), delay);
}

socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
  console.error('refused:', err.message, err.data ?? '');
  // Refused by the hub itself (not a network error): Socket.IO will not retry on its own.
  if (err.data?.code === 'UNAUTHENTICATED') {
    tokenExpired = true;
    void reconnect();
  } else if (err.data?.code) {
    process.exit(1);
  }
});
socket.on('error', (e: { code?: string; message?: string }) => {
  console.log('error', e);
  if (e.code === 'UNAUTHENTICATED') tokenExpired = true; // the token expired; a disconnect follows
});
socket.on('disconnect', (reason) => {
  console.log('disconnected:', reason);
  // The hub ended the session (token expired, edge shutting down): Socket.IO leaves reconnecting to us.
  if (reason === 'io server disconnect') void reconnect();
});
socket.on('ready', async (info: { userId: string; serverTime: string }) => {
  attempt = 0;
  console.log('connected as', info.userId);
  if (changesSince === undefined) changesSince = info.serverTime; // nothing missed yet: start from now
  else {
    // Changes to messages we already have; the ack comes once they were written. Only then is the new time
    // ours: a connection lost before it would otherwise skip them.
    const ack = await socket.timeout(30_000).emitWithAck('resume', { cursors: { ...cursors }, changesSince }).catch(() => null);
    if (ack?.ok) changesSince = ack.serverTime;
  }
  if (!sent) {
    const ack = await socket.timeout(10_000).emitWithAck('send-message', { conversationId, text, clientId }).catch(() => null);
    if (ack?.ok) {
      sent = true;
      console.log(`sent seq ${ack.message.seq}`);
    } else if (ack) {
      sent = true; // refused for good (not a member, bad input): retrying would not help
      console.error(`send failed: ${ack.error.code} ${ack.error.message}`);
    } // no answer: sent again, with the same clientId, after the next connect
  }
});
socket.on('receive-message', (m: { conversationId: string; seq: number; senderId: string; text: string }) => {
  if (m.seq <= (cursors[m.conversationId] ?? 0)) return; // already have it
  cursors[m.conversationId] = m.seq;
  console.log(`[${m.conversationId} #${m.seq}] ${m.senderId}: ${m.text}`);
});
// An edit or delete: the message in its new state (a tombstone has deleted:true and no text). Idempotent.
for (const ev of ['message-updated', 'message-deleted']) {
  socket.on(ev, (m: { conversationId: string; seq: number; text: string; deleted?: boolean }) =>
    console.log(`[${m.conversationId} #${m.seq}] ${m.deleted ? '(deleted)' : `edited: ${m.text}`}`),
  );
}
for (const ev of ['typing', 'stop-typing', 'user-online', 'user-offline', 'message-status-update', 'conversation-updated']) {
  socket.on(ev, (data: unknown) => console.log(ev, data));
}
process.on('SIGINT', () => {
  socket.close();
  process.exit(0);
});
