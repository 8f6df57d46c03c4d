/**
 * A Socket.IO client for the hub's edge: log in over REST, connect with the token in the handshake, resume
 * from where we were, print what arrives, send a message.
 *
 *   VOXA_URL=http://localhost:8080 VOXA_EMAIL=ana@example.com VOXA_PASSWORD='…' \
 *     node --import tsx examples/01-socketio-client.ts [conversationId] [text]
 */
import { io } from 'socket.io-client';

const base = process.env.VOXA_URL ?? 'http://localhost:8080';
const [conversationId, text] = process.argv.slice(2);

const login = await fetch(`${base}/v1/auth/login`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email: process.env.VOXA_EMAIL, password: process.env.VOXA_PASSWORD }),
});
if (!login.ok) throw new Error(`login failed: ${login.status} ${await login.text()}`);
const { accessToken } = (await login.json()) as { accessToken: string };

// The highest seq we have seen per conversation; a real app keeps it in storage across restarts.
const cursors: Record<string, number> = {};

const socket = io(base, { transports: ['websocket'], auth: { token: accessToken } });
socket.on('connect_error', (err: Error & { data?: unknown }) => console.error('refused:', err.message, err.data));
socket.on('ready', async (info: { userId: string }) => {
  console.log('connected as', info.userId);
  // After every (re)connect: everything missed since our cursors, in order, then live.
  const ack = await socket.emitWithAck('resume', { cursors });
  console.log('resumed', ack);
  if (conversationId && text) {
    const sent = await socket.emitWithAck('send-message', { conversationId, text, clientId: `example-${Date.now()}` });
    console.log(sent.ok ? `sent seq ${sent.message.seq}` : `send failed: ${sent.error.code}`);
  }
});
socket.on('receive-message', (m: { conversationId: string; seq: number; senderId: string; text: string }) => {
  if (m.seq <= (cursors[m.conversationId] ?? 0)) return; // already have it
  cursors[m.conversationId] = m.seq;
  console.log(`[${m.conversationId} #${m.seq}] ${m.senderId}: ${m.text}`);
});
for (const ev of ['typing', 'stop-typing', 'user-online', 'user-offline', 'message-status-update', 'conversation-updated', 'error']) {
  socket.on(ev, (data: unknown) => console.log(ev, data));
}
process.on('SIGINT', () => {
  socket.close();
  process.exit(0);
});
