/**
 * Stopping an embedded child that is frozen (SIGSTOP: a hung server, a debugger, a suspended job): a stopped
 * process does not act on SIGTERM until it is continued, so without SIGCONT it would always wait out the grace
 * and then be killed without flushing.
 */
import test from 'ava';
import { SupervisedChild } from '../../core/supervisor.js';
import { createLogger } from '../../core/log.js';
import { freePort } from '../helpers/servers.js';

test('stopping a frozen child continues it, so it exits on SIGTERM instead of being killed after the grace', async (t) => {
  const port = await freePort();
  const child = new SupervisedChild(
    { name: 'redis-server', cmd: 'redis-server', args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], port },
    createLogger('silent', 'test'),
  );
  await child.start();
  const proc = (child as unknown as { child: import('node:child_process').ChildProcess }).child;
  t.truthy(proc.pid);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  process.kill(proc.pid!, 'SIGSTOP');
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  await child.stop(5000);
  const how = await exit;
  t.not(how.signal, 'SIGKILL', 'it was not killed after the grace');
  t.is(how.code, 0, 'redis-server handled SIGTERM and exited cleanly');
});
