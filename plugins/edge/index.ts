/**
 * The WebSocket edge plugin: Socket.IO and plain WebSocket on the API's port, one session layer under both.
 * See docs/websocket.md for the protocol and plugins/edge/edge.ts for how delivery works.
 *
 * `startEdge(hub, httpServer)` runs it without the plugin runtime (tests, benchmarks, embedding); the plugin
 * wraps the same function. The edge reads chat, typing and presence subjects through its own core NATS
 * subscriptions (one per workspace with local users) rather than a JetStream consumer: it needs every event in
 * every process at the lowest latency, keeps no consumer state, and repairs gaps from the store, which is the
 * source of truth. From the runtime it takes only membership events (a JetStream consumer survives NATS
 * reconnects, so a removal is never missed); they are applied once whichever path brings them first.
 */
import type { Server as HttpServer } from 'node:http';
import type { Hub } from '../../core/hub.js';
import { definePlugin } from '../runtime/types.js';
import { Edge, type EdgeOptions } from './edge.js';
import { attachSocketIO, attachWs } from './transports.js';

export { Edge, DEFAULT_EDGE_OPTIONS, type EdgeOptions } from './edge.js';

export interface RunningEdge {
  edge: Edge;
  /** Closes every client connection (they reconnect elsewhere and resume) and detaches from the server. */
  close(): Promise<void>;
}

/** Attaches the edge to an http.Server (usually the API's). Does not listen and does not close the server. */
export function startEdge(hub: Hub, httpServer: HttpServer, opts: Partial<EdgeOptions> = {}): RunningEdge {
  const edge = new Edge(hub, opts);
  const sio = attachSocketIO(edge, httpServer);
  const ws = attachWs(edge, httpServer);
  let closing: Promise<void> | null = null;
  return {
    edge,
    close() {
      closing ??= (async () => {
        await edge.shutdown();
        await Promise.all([sio.close(), ws.close()]);
      })();
      return closing;
    },
  };
}

let running: RunningEdge | null = null;

export const edgePlugin = definePlugin({
  manifest: {
    name: 'edge',
    description: 'Delivers chat to Socket.IO and WebSocket clients: messages, typing, presence, receipts, resume.',
    // Everything else arrives through the edge's own core subscriptions (see above).
    events: ['conversation.created', 'conversation.updated'],
    mode: 'broadcast',
  },
  async start(ctx) {
    if (!ctx.httpServer) {
      ctx.log.warn('edge: no http server in this process (worker mode); the edge runs where the API listens');
      return;
    }
    running = startEdge(ctx.hub, ctx.httpServer);
    ctx.log.info('edge: Socket.IO at /socket.io and WebSocket at /ws');
  },
  async handle(event) {
    running?.edge.membershipEvent(event);
  },
  async stop() {
    await running?.close();
    running = null;
  },
});

export default edgePlugin;
