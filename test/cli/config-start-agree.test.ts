/**
 * `voxa config check` refuses what `voxa start` refuses, with the same exit code (2) and field; and start and
 * worker report a bad value or plugin name as bad input (2), keeping 4 for a dependency they cannot reach.
 */
import test from 'ava';
import { hubEnv } from '../helpers/start-env.js';
import { runCli } from '../helpers/cli.js';

const base = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent' };

const BAD: Array<[Record<string, string>, RegExp]> = [
  [{ VOXA_SECRET_KEY: 'notbase64' }, /invalid config field "secretKey" \(env VOXA_SECRET_KEY\): must be 32 bytes, base64/],
  [{ VOXA_PLUGINS: 'nope' }, /invalid config field "plugins" \(env VOXA_PLUGINS\): unknown plugin nope; available: .*webhooks/],
  [{ VOXA_ORIGINS: 'https://app.example.com,notaurl' }, /invalid config field "corsOrigins" \(env VOXA_ORIGINS\): "notaurl" is not an origin/],
  [{ VOXA_ORIGINS: 'https://app.example.com/' }, /invalid config field "corsOrigins" \(env VOXA_ORIGINS\): "https:\/\/app.example.com\/" is not an origin/],
  [{ VOXA_PREVIOUS_SECRET_KEYS: `${Buffer.alloc(32, 3).toString('base64')},prevkey1` }, /invalid config field "previousSecretKeys" \(env VOXA_PREVIOUS_SECRET_KEYS\): each must be 32 bytes, base64/],
  [{ VOXA_AUTH_RATE_LIMIT: '1e1' }, /invalid config field "authRateLimitPerMinute" \(env VOXA_AUTH_RATE_LIMIT\): a whole number in decimal digits/],
  [{ PORT: '0x1f90' }, /invalid config field "port" \(env PORT\): a whole number in decimal digits/],
  [{ MONGO_URL: 'foo' }, /invalid config field "mongoUrl" \(env MONGO_URL\): .*mongodb:\/\//],
];

for (const [env, message] of BAD) {
  const name = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ');
  test(`config check refuses ${name} with exit 2 naming the field, as start does`, async (t) => {
    const check = await runCli({ ...base, ...(await hubEnv(t, 'voxa-config-agree-')), ...env }, ['config', 'check']);
    t.is(check.code, 2, check.stdout + check.stderr);
    t.regex(check.stderr, message);
    t.notRegex(check.stdout, /config OK/);

    const json = await runCli({ ...base, ...(await hubEnv(t, 'voxa-config-agree-')), ...env }, ['config', 'check', '--json']);
    t.is(json.code, 2);
    t.like(JSON.parse(json.stderr), { error: { code: 'INVALID_CONFIG' } });

    const start = await runCli({ ...base, ...(await hubEnv(t, 'voxa-config-agree-')), ...env }, ['start']);
    t.is(start.code, 2, start.stderr);
    t.regex(start.stderr, message);
  });
}

test('worker: a bad config value is exit 2 naming the field, before any connection is tried', async (t) => {
  const r = await runCli({ ...base, ...(await hubEnv(t, 'voxa-config-agree-')), VOXA_SECRET_KEY: 'notbase64', NATS_URL: 'nats://127.0.0.1:1', REDIS_URL: 'redis://127.0.0.1:1' }, ['worker', '--plugins', 'audit']);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /invalid config field "secretKey" \(env VOXA_SECRET_KEY\)/);
});

test('config check accepts what start accepts: origins, "*", a multi-host MongoDB URL, a 32-byte key', async (t) => {
  const r = await runCli(
    {
      ...base,
      VOXA_ORIGINS: 'https://app.example.com, http://localhost:3000,*',
      MONGO_URL: 'mongodb://a:1,b:2/db?authSource=admin',
      VOXA_SECRET_KEY: Buffer.alloc(32, 7).toString('base64'),
      VOXA_PLUGINS: 'email,push',
    },
    ['config', 'check'],
  );
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), 'config OK');
});

test('worker --help names the NATS and Redis URLs it would really use', async (t) => {
  const r = await runCli({ ...base, VOXA_EMBEDDED_NATS_PORT: '5999', VOXA_EMBEDDED_REDIS_PORT: '7111' }, ['worker', '--help']);
  t.is(r.code, 0, r.stderr);
  const line = r.stdout.split('\n').find((l) => l.startsWith('Connects to:')) ?? '';
  t.regex(line, /nats:\/\/127\.0\.0\.1:5999/);
  t.regex(line, /redis:\/\/127\.0\.0\.1:7111/);
  t.false(r.stdout.includes('127.0.0.1:4222') || r.stdout.includes('127.0.0.1:6390'), 'the stock ports are not shown');
  const external = await runCli({ ...base, NATS_URL: 'nats://user:s3cretpw@nats.internal:4333' }, ['worker', '--help']);
  t.regex(external.stdout, /nats:\/\/user:\*\*\*@nats\.internal:4333/);
  t.false(external.stdout.includes('s3cretpw'));
});
