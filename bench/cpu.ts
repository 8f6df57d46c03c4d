/**
 * CPU time for the benchmarks. Unlike requests per second it barely moves when other processes compete for the
 * cores, so it shows what a change saves even on a busy machine.
 */
import { readFileSync } from 'node:fs';

/**
 * CPU time (µs) used so far by what a /proc stat file describes: a thread (`/proc/self/task/<tid>/stat`,
 * `/proc/thread-self/stat`) or the whole process (`/proc/self/stat`). Linux only; NaN elsewhere.
 * Self-contained (it names nothing outside itself but readFileSync), so a load worker can be given its source.
 */
export function cpuUsOf(file: string): number {
  try {
    const stat = readFileSync(file, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in USER_HZ ticks (100 on every Linux Node supports);
    // fields[0] here is field 3.
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
  } catch {
    return NaN;
  }
}

/** The main thread of this process (the one that runs the hub's event loop). */
export const MAIN_THREAD_STAT = `/proc/self/task/${process.pid}/stat`;
