/**
 * `voxa events tail`: live events, one line each, until Ctrl-C. Reads through ordered consumers starting at
 * new messages (one on the durable stream, one on the ephemeral one), so it sees each event once even if
 * the outbox republished it, and nothing is left behind on the server when it exits.
 */
import type { Command } from 'commander';
import { DeliverPolicy, type ConsumerMessages } from 'nats';
import { EVENT_TYPES, EnvelopeSchema, filterSubjectOf, isDurable, withNamespace, type EventType } from '../../core/events/catalog.js';
import { streamNames } from '../../core/bus/nats.js';
import { CliError, EXIT, isJson } from '../util.js';
import { withAdmin } from './plugins.js';

export function register(program: Command): void {
  const events = program
    .command('events')
    .description('Look at the event stream.')
    .addHelpText('after', '\nExamples:\n  $ voxa events tail --type message.created');
  events
    .command('tail')
    .description('Print live events, one line each (JSON lines with --json), until Ctrl-C.')
    .option('--type <type>', 'only this event type (see docs/events.md)')
    .option('--workspace <id>', 'only this workspace')
    .option('--json', 'one JSON line per event')
    .addHelpText('after', '\nExamples:\n  $ voxa events tail\n  $ voxa events tail --type message.created --workspace default\n  $ voxa events tail --json | jq .data')
    .action(async (opts: { type?: string; workspace?: string }, cmd: Command) => {
      if (opts.type && !EVENT_TYPES.includes(opts.type as EventType)) {
        throw new CliError(`unknown event type "${opts.type}"; one of: ${EVENT_TYPES.join(', ')}`, EXIT.USAGE, 'VALIDATION_FAILED');
      }
      if (opts.workspace !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(opts.workspace)) {
        throw new CliError(`--workspace "${opts.workspace}" is not a workspace id`, EXIT.USAGE, 'VALIDATION_FAILED');
      }
      const json = isJson(cmd);
      await withAdmin(async (h) => {
        const names = streamNames(h.namespace);
        const ws = opts.workspace ?? '*';
        const type = opts.type as EventType | undefined;
        // Every subject has the workspace as its second token: <scope>.<workspace>.…  NATS 2.9 takes one
        // filter per consumer, inside one stream subject, hence one consumer per scope for a workspace.
        const targets: Array<{ stream: string; filter?: string }> = type
          ? [{ stream: isDurable(type) ? names.events : names.ephemeral, filter: filterSubjectOf(type, h.namespace, ws) }]
          : opts.workspace
            ? [
                ...['chat', 'user', 'admin'].map((scope) => ({ stream: names.events, filter: withNamespace(h.namespace, `${scope}.${ws}.>`) })),
                { stream: names.ephemeral, filter: withNamespace(h.namespace, `rt.${ws}.>`) },
              ]
            : [{ stream: names.events }, { stream: names.ephemeral }];
        for (const stream of new Set(targets.map((t) => t.stream))) {
          try {
            await h.jsm.streams.info(stream);
          } catch {
            throw new CliError(`stream ${stream} does not exist: start the hub once in namespace "${h.namespace}"`, EXIT.NOT_FOUND, 'STREAM_NOT_FOUND');
          }
        }
        const iters: ConsumerMessages[] = [];
        for (const t of targets) {
          const c = await h.js.consumers.get(t.stream, { deliver_policy: DeliverPolicy.New, ...(t.filter ? { filterSubjects: t.filter } : {}) });
          iters.push(await c.consume({ max_messages: 256 }));
        }
        const decoder = new TextDecoder();
        const print = (data: Uint8Array, subject: string): void => {
          let line: string;
          try {
            const e = EnvelopeSchema.parse(JSON.parse(decoder.decode(data)));
            if (json) line = JSON.stringify(e);
            else {
              const where = e.conversationId ? ` conv=${e.conversationId}` : e.userId ? ` user=${e.userId}` : '';
              line = `${e.time} ${e.type.padEnd(20)} ws=${e.workspaceId}${where} actor=${e.actor.type}:${e.actor.id} id=${e.id}`;
            }
          } catch {
            line = json ? JSON.stringify({ subject, malformed: true }) : `(malformed event on ${subject})`;
          }
          process.stdout.write(line + '\n');
        };
        const done = new Promise<void>((resolve) => {
          const stop = (): void => {
            for (const it of iters) it.stop();
            resolve();
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
        process.stderr.write(`tailing ${type ?? 'all events'}${opts.workspace ? ` in workspace ${ws}` : ''} (Ctrl-C to stop)\n`);
        await Promise.race([
          done,
          Promise.all(
            iters.map(async (it) => {
              for await (const m of it) print(m.data, m.subject);
            }),
          ),
        ]);
      });
    });
}
