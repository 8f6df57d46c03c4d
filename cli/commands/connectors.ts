/** `voxa connectors list|spec <id>`: what can be connected, and the config each connector takes. */
import type { Command } from 'commander';
import { CONNECTORS, getConnector } from '../../connectors/registry.js';
import { jsonSchemaOf } from '../../connectors/types.js';
import { CliError, EXIT, output } from '../util.js';

export function register(program: Command): void {
  const connectors = program
    .command('connectors')
    .description('List the connectors this hub can connect, and show the configuration each one takes.')
    .addHelpText('after', '\nExamples:\n  $ voxa connectors list\n  $ voxa connectors spec webhook --json');

  connectors
    .command('list')
    .description('List every connector with its auth kind.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connectors list\n  $ voxa connectors list --json')
    .action((_opts: unknown, cmd: Command) => {
      const rows = CONNECTORS.map((c) => ({ id: c.id, displayName: c.displayName, authKind: c.authKind, description: c.description }));
      output(cmd, rows, (r: typeof rows) => r.map((c) => `${c.id.padEnd(14)} ${c.authKind.padEnd(14)} ${c.displayName} — ${c.description}`).join('\n'));
    });

  connectors
    .command('spec <id>')
    .description('Show a connector\'s config as JSON Schema (secret fields are marked x-secret).')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa connectors spec webhook\n  $ voxa connectors spec google-drive --json > drive.schema.json')
    .action((id: string, _opts: unknown, cmd: Command) => {
      const c = getConnector(id);
      if (!c) throw new CliError(`unknown connector "${id}"; see \`voxa connectors list\``, EXIT.NOT_FOUND, 'NOT_FOUND');
      const spec = {
        id: c.id,
        displayName: c.displayName,
        authKind: c.authKind,
        secretFields: c.secretFields,
        ...(c.rateLimit ? { rateLimit: c.rateLimit } : {}),
        ...(c.oauth ? { oauth: { scopes: c.oauth.scopes } } : {}),
        configSchema: jsonSchemaOf(c),
      };
      output(cmd, spec, (s: typeof spec) => {
        const props = (s.configSchema.properties ?? {}) as Record<string, { type?: string; description?: string; 'x-secret'?: boolean; 'x-oauth'?: boolean }>;
        const req = new Set((s.configSchema.required ?? []) as string[]);
        const lines = Object.entries(props).map(
          ([k, p]) => `  ${k.padEnd(16)} ${(p.type ?? 'value').padEnd(8)} ${req.has(k) ? 'required' : 'optional'}${p['x-secret'] ? ', secret' : ''}${p['x-oauth'] ? ', set by sign-in' : ''}  ${p.description ?? ''}`,
        );
        return `${s.displayName} (${s.id}, ${s.authKind})\nconfig:\n${lines.join('\n')}`;
      });
    });
}
