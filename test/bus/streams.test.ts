/**
 * Processes starting together (a hub and its workers) declare the same streams at the same moment. Every one
 * of them must succeed: the server answers the adds that lose the race with "already in use" or, on
 * nats-server 2.9, "subjects overlap with an existing stream". (The race is real but not every round hits it:
 * thirty rounds of eight declarers made the old code fail within a run here.)
 */
import test from 'ava';
import { connect } from 'nats';
import { ensureStream, streamConfigs } from '../../core/bus/nats.js';
import { serversForFile } from '../helpers/hub.js';
import { uniqueNamespace } from '../helpers/servers.js';

const servers = serversForFile();

test('many concurrent declarations of the same streams all succeed, and the streams exist once', async (t) => {
  const conns = await Promise.all(Array.from({ length: 8 }, () => connect({ servers: servers.nats.url })));
  t.teardown(() => Promise.all(conns.map((c) => c.close())));
  const jsms = await Promise.all(conns.map((c) => c.jetstreamManager()));
  for (let round = 0; round < 30; round++) {
    const ns = uniqueNamespace();
    const cfgs = streamConfigs(ns);
    await t.notThrowsAsync(Promise.all(jsms.flatMap((jsm) => cfgs.map((cfg) => ensureStream(jsm, cfg, { update: false })))), `round ${round}`);
    for (const cfg of cfgs) t.is((await jsms[0]!.streams.info(cfg.name)).config.name, cfg.name);
  }
});
