/** `voxa start`: the whole hub in one process (written in the next commit). */
import type { Command } from 'commander';

export function register(program: Command): void {
  program.command('start').description('Run the whole hub (API, edge, every plugin) on embedded defaults.');
}
