/**
 * `npm run dashboards:check`: starts real nats-server, redis-server, a hub with traffic and a real Prometheus,
 * then evaluates every dashboard panel query and runs promtool on the alert rules. Exit code 1 on any failure.
 * The work is in test/telemetry/check.ts (shared with test/telemetry/dashboards.test.ts).
 */
import { formatReport, runDashboardsCheck } from '../test/telemetry/check.js';

const report = await runDashboardsCheck({ log: (l) => console.error(`· ${l}`) });
console.log(formatReport(report));
process.exit(report.ok ? 0 : 1);
