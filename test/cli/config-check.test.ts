/** `voxa config check` and logs never show a secret: every field marked sensitive in core/config.ts is masked. */
import { Writable } from 'node:stream';
import test from 'ava';
import { pino } from 'pino';
import { CONFIG_DOCS, loadConfig, maskUrl, redactConfig } from '../../core/config.js';
import { REDACT } from '../../core/log.js';
import { runCli } from '../helpers/cli.js';

/** A well-formed earlier secret key (32 bytes, base64): it must not be printed either. */
const PREVIOUS_KEY = Buffer.alloc(32, 5).toString('base64');
const SECRETS = ['hunter2', 'PKEY123', 'natspw123', 'redispw123', 'mongopw123', 'jwtjwtjwt', 's3s3s3', 'gcs3cret', PREVIOUS_KEY];
const ENV = {
  VOXA_SMTP_URL: 'smtp://user:hunter2@mail.example.com',
  VOXA_FCM_CREDENTIALS: '{"private_key":"PKEY123"}',
  NATS_URL: 'nats://natsuser:natspw123@127.0.0.1:1',
  REDIS_URL: 'redis://:redispw123@127.0.0.1:1',
  MONGO_URL: 'mongodb://mu:mongopw123@127.0.0.1:1/x',
  VOXA_JWT_SECRET: 'jwtjwtjwt'.repeat(4),
  VOXA_S3_SECRET_ACCESS_KEY: 's3s3s3',
  VOXA_GOOGLE_CLIENT_SECRET: 'gcs3cret',
  VOXA_PREVIOUS_SECRET_KEYS: PREVIOUS_KEY,
};

test('config check --json masks every secret and the credentials in URLs', async (t) => {
  const r = await runCli({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', ...ENV }, ['config', 'check', '--json']);
  t.is(r.code, 0, r.stderr);
  for (const s of SECRETS) t.false(r.stdout.includes(s), `${s} printed`);
  const { config } = JSON.parse(r.stdout) as { config: Record<string, unknown> };
  t.like(config, {
    smtpUrl: '[set]',
    fcmCredentials: '[set]',
    jwtSecret: '[set]',
    s3SecretAccessKey: '[set]',
    googleClientSecret: '[set]',
    previousSecretKeys: '[set]',
    natsUrl: 'nats://natsuser:***@127.0.0.1:1',
    redisUrl: 'redis://:***@127.0.0.1:1',
    mongoUrl: 'mongodb://mu:***@127.0.0.1:1/x',
  });
  t.false('secretKey' in config, 'an unset secret is left out');
});

test('maskUrl: passwords, tokens, URL lists and multi-host strings', (t) => {
  t.is(maskUrl('nats://tok3n@h:4222'), 'nats://***@h:4222');
  t.is(maskUrl('nats://a:p1@h1:4222,nats://b:p2@h2:4222'), 'nats://a:***@h1:4222,nats://b:***@h2:4222');
  t.is(maskUrl('mongodb://u:p:w@h1:1,h2:2/db?authSource=admin'), 'mongodb://u:***@h1:1,h2:2/db?authSource=admin');
  t.is(maskUrl('redis://127.0.0.1:6379/0'), 'redis://127.0.0.1:6379/0');
  t.is(maskUrl('https://example.com/a@b'), 'https://example.com/a@b');
});

test('a field named like a secret (…Secret, …Key(s), …Password, …Token, …Credentials) is marked sensitive', (t) => {
  const unmarked = Object.entries(CONFIG_DOCS)
    .filter(([f, d]) => /(secret|keys?|password|token|credentials?)$/i.test(f) && !d.sensitive)
    .map(([f]) => f);
  t.deepEqual(unmarked, []);
});

test('a logged config goes through the same masking', (t) => {
  let out = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString();
      done();
    },
  });
  const config = loadConfig({}, ENV);
  pino({ redact: REDACT }, sink).info({ config }, 'config');
  for (const s of SECRETS) t.false(out.includes(s), `${s} logged`);
  const logged = (JSON.parse(out) as { config: Record<string, unknown> }).config;
  t.is(logged.redisUrl, 'redis://:***@127.0.0.1:1');
  t.is(logged.smtpUrl, '[redacted]');
  t.deepEqual(redactConfig(config).natsUrl, logged.natsUrl);
});

test('commands that cannot reach NATS or Redis name the URL without its credentials (a NATS token in the user part too)', async (t) => {
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', VOXA_SECRET_KEY: Buffer.alloc(32, 3).toString('base64') };
  const cases: Array<[Record<string, string>, string[], string]> = [
    [{ NATS_URL: 'nats://tok3n-s3cret@127.0.0.1:1' }, ['plugins', 'list'], 'tok3n-s3cret'],
    [{ NATS_URL: 'nats://natsuser:natspw123@127.0.0.1:1' }, ['events', 'tail', '--json'], 'natspw123'],
    [{ REDIS_URL: 'redis://:redispw123@127.0.0.1:1', NATS_URL: 'nats://127.0.0.1:1' }, ['webhooks', 'redeliver', 'dlv_x'], 'redispw123'],
    [{ REDIS_URL: 'redis://r3dis-t0ken@127.0.0.1:1', NATS_URL: 'nats://127.0.0.1:1' }, ['webhooks', 'redeliver', 'dlv_x'], 'r3dis-t0ken'],
  ];
  for (const [extra, args, secret] of cases) {
    const r = await runCli({ ...env, ...extra }, args);
    t.not(r.code, 0, args.join(' '));
    t.regex(r.stderr + r.stdout, /127\.0\.0\.1:1/, `${args.join(' ')} names where it tried`);
    t.false((r.stderr + r.stdout).includes(secret), `${args.join(' ')} printed ${secret}`);
  }
});
