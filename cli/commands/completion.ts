/**
 * `voxa completion bash|zsh`: a completion script generated from the live command tree, so it never falls
 * behind the commands. zsh loads the same function through bashcompinit.
 */
import type { Command } from 'commander';
import { CliError, EXIT } from '../util.js';

interface Node {
  path: string;
  words: string[];
}

function walk(cmd: Command, path: string, out: Node[]): void {
  const subs = cmd.commands.filter((c) => c.name() !== 'help');
  const opts = cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => Boolean(x)));
  out.push({ path, words: [...subs.map((c) => c.name()), ...opts, '--help'] });
  for (const s of subs) walk(s, `${path}:${s.name()}`, out);
}

export function completionScript(program: Command, shell: 'bash' | 'zsh'): string {
  const nodes: Node[] = [];
  walk(program, 'voxa', nodes);
  const descend = nodes
    .filter((n) => n.path !== 'voxa')
    .map((n) => {
      const i = n.path.lastIndexOf(':');
      return `      "${n.path.slice(0, i)}:${n.path.slice(i + 1)}") path="${n.path}" ;;`;
    })
    .join('\n');
  const lists = nodes.map((n) => `    "${n.path}") words="${n.words.join(' ')}" ;;`).join('\n');
  const body = `_voxa_complete() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="voxa" i w words=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$path:$w" in
${descend}
    esac
  done
  case "$path" in
${lists}
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -F _voxa_complete voxa
`;
  if (shell === 'zsh') return `#compdef voxa\nautoload -U +X bashcompinit && bashcompinit\n${body}`;
  return `# bash completion for voxa\n${body}`;
}

export function register(program: Command): void {
  program
    .command('completion <shell>')
    .description('Print a shell completion script (bash or zsh).')
    .addHelpText('after', '\nExamples:\n  $ voxa completion bash > /etc/bash_completion.d/voxa\n  $ voxa completion zsh > "${fpath[1]}/_voxa"\n  $ source <(voxa completion bash)')
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new CliError(`unsupported shell "${shell}"; use bash or zsh`, EXIT.USAGE, 'VALIDATION_FAILED');
      process.stdout.write(completionScript(program, shell));
    });
}
