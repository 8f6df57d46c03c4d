/**
 * The shipped dashboards and alerts work: a real Prometheus scrapes a real hub under traffic, every panel query
 * returns data, every metric they name exists, and promtool accepts and unit-tests the alert rules.
 */
import test from 'ava';
import { formatReport, loadDashboards, metricNames, panelQueries, runDashboardsCheck, staticProblems, type Dashboard } from './check.js';

test('dashboards follow the rules: datasource variable, units, $__rate_interval', (t) => {
  t.deepEqual(staticProblems(), []);
  const dashboards = new Set(panelQueries().map((q) => q.dashboard));
  t.deepEqual([...dashboards].sort(), ['Voxa / Connectors', 'Voxa / Edge', 'Voxa / Overview', 'Voxa / Plugins', 'Voxa / Runtime']);
});

test('the static rules catch a fixed rate window, a missing unit and a missing datasource variable', (t) => {
  // The checker must be able to fail: break a copy of a shipped dashboard in three ways.
  const [first] = loadDashboards();
  const broken = JSON.parse(JSON.stringify(first!.dashboard)) as Dashboard;
  broken.templating = { list: [] };
  const panel = broken.panels.find((p) => p.type !== 'row')!;
  delete panel.fieldConfig!.defaults!.unit;
  panel.targets![0]!.expr = 'sum(rate(voxa_http_requests_total[5m]))';
  const problems = staticProblems([{ file: 'broken.json', dashboard: broken }]);
  t.true(problems.some((p) => p.includes('no "datasource" variable')));
  t.true(problems.some((p) => p.endsWith(`${panel.title}: no unit`)));
  t.true(problems.some((p) => p.includes('rate() over [5m] instead of [$__rate_interval]')));
  t.deepEqual(metricNames('histogram_quantile(0.99, sum by (le) (rate(voxa_http_request_duration_seconds_bucket[$__rate_interval])))'), [
    'voxa_http_request_duration_seconds_bucket',
  ]);
});

test('a real Prometheus scraping a hub under traffic returns data for every panel; promtool passes', async (t) => {
  t.timeout(240_000);
  const report = await runDashboardsCheck();
  t.log(formatReport(report));
  t.deepEqual(report.staticProblems, []);
  t.true(report.promtool.ok, report.promtool.output);
  t.deepEqual(report.missingMetrics, [], 'every metric a panel or alert names is exposed by the hub');
  t.true(report.panels.length >= 40);
  t.deepEqual(
    report.panels.filter((p) => !p.ok).map((p) => `${p.dashboard} › ${p.panel}: ${p.reason}`),
    [],
  );
  t.true(report.ok);
});
