/* A sweep's own panel in #/jobs/<id>: its trials as a table (settings, state, value, the job of each)
 * and the metric against each setting it searched, one scatter chart per setting.
 */
import { api, isAbort } from '../api.js';
import { lineChart } from '../chart.js';
import { COLORS, badge, enc, fmtNum, h, setChildren } from '../dom.js';

const SHOWN = { complete: COLORS[0], pruned: '#94a3b8' };

/** The points of one setting: [x, value] of each complete trial, and of each pruned one at its last value. */
export function settingSeries(trials, key, logScale) {
  return Object.entries(SHOWN).map(([state, color]) => ({
    name: state === 'complete' ? 'finished trials' : 'pruned (last value)',
    color,
    scatter: true,
    points: trials
      .filter((t) => t.state === state && typeof t.params[key] === 'number')
      .map((t) => [logScale ? Math.log10(t.params[key]) : t.params[key], state === 'complete' ? t.value : t.last])
      .filter(([x, y]) => Number.isFinite(x) && typeof y === 'number' && Number.isFinite(y)),
  }));
}

export function sweepPanel(ctx, id) {
  const summary = h('div', { class: 'small-text', id: 'sweep-summary', 'data-testid': 'sweep-summary' });
  const tbody = h('tbody', { id: 'trials-body' });
  const head = h('tr', {});
  const charts = h('div', { class: 'sweep-charts', id: 'sweep-charts' });
  const el = h('section', { class: 'card', id: 'sweep-card', hidden: true },
    h('h2', {}, 'Trials'), summary,
    h('div', { class: 'table-card' }, h('table', { class: 'table', id: 'trials-table', 'data-testid': 'trials-table' },
      h('thead', {}, head), tbody)),
    h('h3', {}, 'The metric against each setting'), charts);
  const drawn = {};

  function render(sweep) {
    const spec = sweep.sweep;
    const keys = Object.keys(spec.space);
    const best = sweep.result && sweep.result.best ? sweep.result.best.number : sweep.metrics.best_trial;
    setChildren(summary, `${spec.direction} ${spec.metric} over ${spec.trials} trial(s), ${spec.concurrency} at once`,
      best != null ? ` · best so far: trial ${best} (${fmtNum(sweep.metrics[spec.metric])})` : '');
    setChildren(head, h('th', {}, '#'), h('th', {}, 'Job'), h('th', {}, 'State'),
      keys.map((k) => h('th', { class: 'mono' }, k)), h('th', {}, spec.metric), h('th', {}, 'Note'));
    setChildren(tbody, ...sweep.trials.map((t) => h('tr', {
      'data-trial': t.number, class: t.number === best ? 'best-trial' : '' },
      h('td', {}, String(t.number)),
      h('td', {}, t.task_id ? h('a', { href: `#/jobs/${enc(t.task_id)}` }, t.name || t.task_id) : '—'),
      h('td', {}, badge(t.state)),
      keys.map((k) => h('td', { class: 'mono' }, fmtNum(t.params[k]))),
      h('td', {}, fmtNum(t.value ?? t.last)),
      h('td', { class: 'small-text muted' }, t.note || ''))));
    for (const key of keys) {
      const param = spec.space[key];
      if (!drawn[key]) {
        drawn[key] = h('div', { class: 'chart-wrap', 'data-setting': key });
        charts.append(drawn[key]);
      }
      const categorical = Array.isArray(param.choices);
      const values = categorical ? param.choices : null;
      const trials = categorical
        ? sweep.trials.map((t) => ({ ...t, params: { ...t.params, [key]: values.indexOf(t.params[key]) } }))
        : sweep.trials;
      lineChart(drawn[key], settingSeries(trials, key, !!param.log), {
        height: 220,
        xLabel: categorical ? `${key} (${values.map((v, i) => `${i}: ${v}`).join(', ')})` : param.log ? `log10 ${key}` : key,
        title: `${spec.metric} against ${key}`,
        empty: 'No trial has ended yet',
      });
    }
    el.hidden = false;
  }

  async function load() {
    try {
      const sweep = await api(`/api/sweeps/${enc(id)}`, { signal: ctx.signal });
      if (ctx.alive) render(sweep);
    } catch (err) {
      if (!isAbort(err)) setChildren(summary, `could not read the sweep: ${err.detail || err.message}`);
    }
  }
  return { el, load };
}
