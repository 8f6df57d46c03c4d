/**
 * voxa_notifications_sent_total has its series from the start (value 0) for each channel whose plugin runs,
 * configured or not, so dashboards and rate() have a starting point before the first notification.
 */
import test from 'ava';
import { metrics } from '../../core/telemetry/metrics.js';
import { createEmailPlugin } from '../../plugins/email/index.js';
import { createPushPlugin } from '../../plugins/push/index.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { hubForFile } from '../helpers/hub.js';

const file = hubForFile();

test('the email and push plugins start their notification series at zero, even with no SMTP or FCM configured', async (t) => {
  const series = async () => (await metrics.notificationsSent.get()).values.map((v) => `${v.labels.channel}/${v.labels.outcome}=${v.value}`).sort();
  t.deepEqual(await series(), [], 'nothing before the plugins start (a fresh process)');
  const runtime = new PluginRuntime(file.hub, [createEmailPlugin(), createPushPlugin()]);
  await runtime.start();
  t.teardown(() => runtime.stop());
  t.deepEqual(await series(), ['email/failed=0', 'email/sent=0', 'push/failed=0', 'push/sent=0']);
});
