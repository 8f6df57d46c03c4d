/**
 * A plain WebSocket client for the hub's edge (`/ws`): the token goes in the first frame (never in the URL),
 * frames are `{type, data, ackId?}`, and a frame with `ackId` is answered `{type:"ack", ackId, data}`.
 * Reconnects with backoff and resumes from its cursors, so nothing is lost or seen twice, and asks for the edits and
 * deletes it missed to messages it already has (`changesSince`). The message is sent
 * with one clientId per run, again after a reconnect until it is acknowledged, so it lands exactly once.
 *
 *   VOXA_URL=http://localhost:8080 VOXA_TOKEN=<access token> node --import tsx examples/02-websocket-client.ts [conversationId] [text]
 */
import { randomUUID } from 'node:crypto';
import { WebSocket } from 'ws';

const base = process.env.VOXA_URL ?? 'http://localhost:8080';
const token = process.env.VOXA_TOKEN;
if (!token) throw new Error('set VOXA_TOKEN to an access token (from POST /v1/auth/login)');
const [conversationId, text] = process.argv.slice(2);

const cursors: Record<string, number> = {};
// The hub's time as of which we have every edit and delete (a real app stores it with the cursors).
let changesSince: string | undefined;
let attempt = 0;
let sent = !(conversationId && text);
const clientId = `example-${randomUUID()}`;

function connect(): void {
  const ws = new WebSocket(base.replace(/^http/, 'ws') + '/ws');
  let nextAck = 0;
  const acks = new Map<number, (data: unknown) => void>();
  const request = (type: string, data: unknown) =>
    new Promise<any>((resolve) => { // eslint-disable-line @typescript-eslint/no-explicit-any
      const ackId = ++nextAck;
      acks.set(ackId, resolve);
      ws.send(JSON.stringify({ type, data, ackId }));
    });

  // Cursors in the auth frame: the backlog comes before any live message, in one round trip.
  ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', data: { token, cursors } })));
  ws.on('message', async (raw) => {
    const frame = JSON.parse(raw.toString()) as { type: string; data: any; ackId?: number }; // eslint-disable-line @typescript-eslint/no-explicit-any
    switch (frame.type) {
      case 'ack':
        acks.get(frame.ackId!)?.(frame.data);
        acks.delete(frame.ackId!);
        return;
      case 'ready':
        attempt = 0;
        console.log('connected as', frame.data.userId);
        if (changesSince === undefined) changesSince = frame.data.serverTime as string; // nothing missed yet
        else {
          // Changes to messages we already have; the new time is ours only once the ack says they were written.
          const ack = await request('resume', { cursors: { ...cursors }, changesSince });
          if (ack.ok) changesSince = ack.serverTime as string;
        }
        if (!sent) {
          // The same clientId on every try: a send retried after a lost ack is not stored twice.
          const ack = await request('send-message', { conversationId, text, clientId });
          sent = true; // acknowledged: stored, or refused for good (not a member, bad input)
          console.log(ack.ok ? `sent seq ${ack.message.seq}` : `send failed: ${ack.error.code}`);
        }
        return;
      case 'receive-message': {
        const m = frame.data as { conversationId: string; seq: number; senderId: string; text: string };
        if (m.seq <= (cursors[m.conversationId] ?? 0)) return;
        cursors[m.conversationId] = m.seq;
        console.log(`[${m.conversationId} #${m.seq}] ${m.senderId}: ${m.text}`);
        return;
      }
      case 'message-updated':
      case 'message-deleted': {
        // The message in its new state (a tombstone has deleted:true and no text); applying it twice is harmless.
        const m = frame.data as { conversationId: string; seq: number; text: string; deleted?: boolean };
        console.log(`[${m.conversationId} #${m.seq}] ${m.deleted ? '(deleted)' : `edited: ${m.text}`}`);
        return;
      }
      default:
        console.log(frame.type, frame.data);
    }
  });
  ws.on('close', (code, reason) => {
    if (code === 4001) {
      console.error('unauthenticated:', reason.toString(), '— get a fresh token');
      process.exit(1);
    }
    const delay = Math.min(30_000, 250 * 2 ** attempt++) * (0.5 + Math.random() / 2);
    console.log(`closed ${code} ${reason.toString()}; reconnecting in ${Math.round(delay)} ms`);
    setTimeout(connect, delay);
  });
  ws.on('error', () => undefined); // 'close' follows
}

connect();
