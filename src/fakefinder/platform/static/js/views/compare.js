/* #/compare?ids=a,b: the metric histories and final figures of several runs side by side.
 */
import { api } from '../api.js';
import { byRank, isAux, lineChart, lowerIsBetter, metricKeys, seriesOf, xKey } from '../chart.js';
import { ACTIVE, COLORS, META_KEYS, badge, enc, fmtNum, h, setChildren } from '../dom.js';

// ------------------------------------------------------------------ #/compare?ids=a,b

export async function compareView(ctx, view, ids) {
  view.append(h('div', { class: 'page-head' }, h('h1', {}, 'Compare runs'),
    h('a', { href: '#/jobs', class: 'btn ghost' }, 'All jobs')));
  if (!ids.length) {
    view.append(h('div', { class: 'empty' }, 'Pick runs on the ', h('a', { href: '#/jobs' }, 'job list'), ' to compare them.'));
    return;
  }
  const runsEl = h('div', { id: 'compare-runs', class: 'run-chips' });
  const chartsEl = h('div', { id: 'compare-charts', class: 'charts', 'data-testid': 'compare-charts' });
  const tableEl = h('div', { class: 'card table-card' });
  view.append(runsEl, h('h2', {}, 'Final metrics'), tableEl, h('h2', {}, 'Curves'), chartsEl);

  async function load() {
    const data = await api(`/api/compare?ids=${ids.map(enc).join(',')}`, { signal: ctx.signal });
    if (!ctx.alive) return [];
    const runs = data.runs || [];
    const seen = new Map();
    runs.forEach((run, i) => {
      let label = run.name || run.task_id;
      if (seen.has(label)) label = `${label} (${String(run.task_id).slice(0, 8)})`;
      seen.set(label, true);
      run.label = label;
      run.color = COLORS[i % COLORS.length];
    });
    setChildren(runsEl, ...runs.map((run) => h('a', { class: 'run-chip', href: `#/jobs/${enc(run.task_id)}` },
      h('span', { class: 'swatch', style: `background:${run.color}` }), run.label, ' ', badge(run.state),
      h('span', { class: 'muted small-text' }, ` ${run.kind || ''}`))));

    const keys = [];
    for (const run of runs) for (const k of metricKeys(run.history || [])) if (!keys.includes(k)) keys.push(k);
    keys.sort(byRank);
    const keep = new Map([...chartsEl.querySelectorAll('.compare-chart')].map((el) => [el.dataset.metric, el]));
    chartsEl.replaceChildren();
    const anyX = runs.map((r) => xKey(r.history || [])).find(Boolean);
    const charts = keys.map((key) => {
      const el = keep.get(key) || h('div', { class: 'compare-chart', 'data-metric': key });
      chartsEl.append(h('section', { class: 'card' }, h('h2', {}, key), el));
      return [key, el];
    });
    // drawn once every card is in the grid, at its final width
    for (const [key, el] of charts) {
      const series = runs.map((run) => {
        const history = run.history || [];
        return { name: run.label, color: run.color, points: seriesOf(history, key, xKey(history)) };
      });
      lineChart(el, series, { xLabel: anyX || 'event', title: key });
    }
    if (!keys.length) chartsEl.append(h('div', { class: 'empty' }, 'These runs have no metric history yet.'));

    const finals = [];
    for (const run of runs) for (const k of Object.keys(run.final || {})) if (!finals.includes(k)) finals.push(k);
    finals.sort(byRank);
    const body = h('tbody', {},
      h('tr', { class: 'meta' }, h('th', {}, 'state'), runs.map((r) => h('td', {}, badge(r.state)))),
      h('tr', { class: 'meta' }, h('th', {}, 'model type'), runs.map((r) => h('td', {}, r.kind || ''))),
      finals.map((key) => {
        const values = runs.map((r) => (r.final || {})[key]);
        const nums = values.filter((v) => typeof v === 'number' && Number.isFinite(v));
        let best = null;
        if (nums.length > 1 && !META_KEYS.has(key) && !isAux(key) && new Set(nums).size > 1) {
          best = lowerIsBetter(key) ? Math.min(...nums) : Math.max(...nums);
        }
        return h('tr', { 'data-metric': key }, h('th', {}, key, h('span', { class: 'muted small-text' },
          best == null ? '' : lowerIsBetter(key) ? ' ↓' : ' ↑')),
        values.map((v) => h('td', { class: `num${best != null && v === best ? ' best' : ''}` }, fmtNum(v))));
      }));
    setChildren(tableEl, h('table', { class: 'table', id: 'compare-table', 'data-testid': 'compare-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'metric'), runs.map((r) => h('th', { 'data-run': r.task_id },
        h('span', { class: 'swatch', style: `background:${r.color}` }), r.label)))),
      body));
    return runs;
  }

  const runs = await load();
  if (runs.some((r) => ACTIVE.has(r.state))) {
    ctx.every(async () => {
      try {
        const latest = await load();
        if (!latest.some((r) => ACTIVE.has(r.state))) ctx.dispose();
      } catch (err) { /* keep the last view */ }
    }, 5000);
  }
}
