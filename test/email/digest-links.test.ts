/**
 * appConversationUrl: the template digests link conversations with. A wrong value stops start-up naming the
 * field (as every config field does); a set one puts the URL-encoded id wherever {conversationId} stands.
 */
import test from 'ava';
import { ConfigError, loadConfig } from '../../core/config.js';
import { conversationLink } from '../../plugins/email/digest.js';
import { runCli } from '../helpers/cli.js';

test('a wrong appConversationUrl is refused, naming the field and its env var', (t) => {
  for (const value of [
    'https://app.example.test/chats', // no placeholder
    'https://app.example.test/chats/{id}',
    'ftp://app.example.test/{conversationId}',
    'javascript:alert(1)//{conversationId}',
    'app.example.test/chats/{conversationId}', // not a URL
    'https://{conversationId}.example.test/', // the id would choose the host
  ]) {
    const err = t.throws(() => loadConfig({}, { VOXA_APP_CONVERSATION_URL: value }), { instanceOf: ConfigError }, value);
    t.is(err?.field, 'appConversationUrl', value);
    t.true(err?.message.includes('VOXA_APP_CONVERSATION_URL'), err?.message);
  }
  for (const value of ['https://app.example.test/chats/{conversationId}', 'http://localhost:3000/#/c/{conversationId}?from=email', 'https://app.example.test/open?c={conversationId}']) {
    t.is(loadConfig({}, { VOXA_APP_CONVERSATION_URL: value }).appConversationUrl, value);
  }
  t.is(loadConfig({}, {}).appConversationUrl, undefined, 'unset by default');
});

test('voxa config check refuses a wrong appConversationUrl with exit 2, naming it', async (t) => {
  const r = await runCli({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', VOXA_APP_CONVERSATION_URL: 'https://app.example.test/chats' }, ['config', 'check']);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /appConversationUrl.*VOXA_APP_CONVERSATION_URL/);
});

test('conversationLink URL-encodes the id into every placeholder; without a template there is no link', (t) => {
  t.is(conversationLink('https://app.example.test/c/{conversationId}?again={conversationId}', 'a/b c?&#'), 'https://app.example.test/c/a%2Fb%20c%3F%26%23?again=a%2Fb%20c%3F%26%23');
  t.is(conversationLink(undefined, 'c1'), null);
});
