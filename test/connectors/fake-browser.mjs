/* global fetch */
// A stand-in for a web browser in OAuth tests: `VOXA_BROWSER="node test/connectors/fake-browser.mjs"`. It loads
// the URL it is given, follows redirects (the consent page → the CLI's loopback callback, as a browser would)
// and appends what it saw as one JSON line to $FAKE_BROWSER_LOG.
import { appendFileSync } from 'node:fs';

const url = process.argv.at(-1);
let line;
try {
  const res = await fetch(url, { redirect: 'follow' });
  line = { url, finalUrl: res.url, status: res.status, body: await res.text() };
} catch (err) {
  line = { url, error: String(err) };
}
if (process.env.FAKE_BROWSER_LOG) appendFileSync(process.env.FAKE_BROWSER_LOG, JSON.stringify(line) + '\n');
