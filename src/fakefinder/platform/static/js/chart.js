/* An SVG line chart, and reading metric histories (which key is x, which are series, which are losses).
 */
import { META_KEYS, fmtNum, h, s } from './dom.js';

// ------------------------------------------------------------------ SVG line chart

export function niceStep(span, count, integer) {
  if (!(span > 0)) return 1;
  let step = 10 ** Math.floor(Math.log10(span / count));
  const err = (count / span) * step;
  if (err <= 0.15) step *= 10;
  else if (err <= 0.35) step *= 5;
  else if (err <= 0.75) step *= 2;
  if (integer) step = Math.max(1, Math.round(step));
  return step;
}

export function niceScale(min, max, count, integer) {
  if (min === max) {
    const pad = integer ? 1 : (Math.abs(min) * 0.1 || 1);
    min -= pad;
    max += pad;
  }
  const step = niceStep(max - min, count, integer);
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step * 1e-6; v += step) ticks.push(Number(v.toPrecision(12)));
  return { lo, hi: hi === lo ? lo + step : hi, ticks, step };
}

/** A tick label with as many decimals as the tick step needs. */
export function fmtTick(v, step) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(Math.max(0, Math.min(4, Math.ceil(-Math.log10(step / a)))));
  const decimals = Math.max(0, Math.min(8, Math.ceil(-Math.log10(step) - 1e-9)));
  return v.toFixed(decimals);
}

/**
 * Draws series [{name, color, points: [[x, y], ...], scatter}] into `el` as an SVG line chart (a
 * `scatter` series: its points only) with a legend.
 * Clicking a legend entry hides / shows its series.
 */
export function lineChart(el, series, options = {}) {
  el._chart = { series, options };
  el._hidden = el._hidden || new Set();
  const hidden = el._hidden;
  el.classList.add('chart');
  el.replaceChildren();
  // drawn at the element's own width, so text keeps its size (redrawn when the window resizes)
  const W = Math.max(280, Math.round(el.clientWidth || 0) || 640);
  el._drawnWidth = Math.round(el.clientWidth || 0);
  if (!el._observer && typeof ResizeObserver === 'function') {
    el._observer = new ResizeObserver(() => {
      const width = Math.round(el.clientWidth || 0);
      if (width && Math.abs(width - el._drawnWidth) > 2 && el._chart) lineChart(el, el._chart.series, el._chart.options);
    });
    el._observer.observe(el);
  }
  const H = options.height || 260;
  const M = { l: 56, r: 16, t: 14, b: 38 };
  const drawn = series.filter((sr) => sr.points.length && !hidden.has(sr.name));
  const all = drawn.flatMap((sr) => sr.points);
  if (!series.some((sr) => sr.points.length)) {
    el.append(h('div', { class: 'chart-empty' }, options.empty || 'No data yet'));
    return;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const integerX = xs.every(Number.isInteger);
  const xScale = niceScale(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1, 6, integerX);
  const yScale = niceScale(ys.length ? Math.min(...ys) : 0, ys.length ? Math.max(...ys) : 1, 5, false);
  const px = (x) => M.l + ((x - xScale.lo) / (xScale.hi - xScale.lo)) * (W - M.l - M.r);
  const py = (y) => H - M.b - ((y - yScale.lo) / (yScale.hi - yScale.lo)) * (H - M.t - M.b);

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg', role: 'img',
    'aria-label': options.title || 'chart' });
  const grid = s('g', { class: 'grid' });
  for (const t of yScale.ticks) {
    grid.append(s('line', { x1: M.l, x2: W - M.r, y1: py(t), y2: py(t) }));
    grid.append(s('text', { x: M.l - 6, y: py(t) + 4, 'text-anchor': 'end', class: 'tick' }, fmtTick(t, yScale.step)));
  }
  for (const t of xScale.ticks) {
    grid.append(s('line', { x1: px(t), x2: px(t), y1: M.t, y2: H - M.b, class: 'vgrid' }));
    grid.append(s('text', { x: px(t), y: H - M.b + 16, 'text-anchor': 'middle', class: 'tick' }, fmtTick(t, xScale.step)));
  }
  svg.append(grid);
  svg.append(s('line', { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: 'axis' }));
  svg.append(s('line', { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: 'axis' }));
  if (options.xLabel) {
    svg.append(s('text', { x: (M.l + W - M.r) / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-label' },
      options.xLabel));
  }
  for (const sr of drawn) {
    const g = s('g', { class: 'series', 'data-series': sr.name });
    const pts = sr.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    if (sr.points.length > 1 && !sr.scatter) g.append(s('polyline', { points: pts, fill: 'none', stroke: sr.color, class: 'line' }));
    const dots = sr.scatter || sr.points.length <= 120;
    sr.points.forEach(([x, y], i) => {
      if (!dots && i !== sr.points.length - 1) return;
      g.append(s('circle', { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 3.2, fill: sr.color, class: 'pt' },
        s('title', {}, `${sr.name} · ${options.xLabel || 'x'} ${fmtNum(x)}: ${fmtNum(y)}`)));
    });
    svg.append(g);
  }
  el.append(svg);

  const legend = h('div', { class: 'legend' });
  for (const sr of series) {
    legend.append(h('button', {
      type: 'button', class: `legend-item${hidden.has(sr.name) ? ' off' : ''}`, 'data-series': sr.name,
      title: hidden.has(sr.name) ? 'show' : 'hide',
      onclick: () => {
        if (hidden.has(sr.name)) hidden.delete(sr.name); else hidden.add(sr.name);
        lineChart(el, el._chart.series, el._chart.options);
      },
    }, h('span', { class: 'swatch', style: `background:${sr.color}` }), h('span', { class: 'legend-name' }, sr.name)));
  }
  el.append(legend);
}

/** The x of a history row: its epoch, else its step, else its position. */
export function xKey(history) {
  if (history.some((r) => typeof r.epoch === 'number')) return 'epoch';
  if (history.some((r) => typeof r.step === 'number')) return 'step';
  if (history.some((r) => typeof r.global_step === 'number')) return 'global_step';
  return null;
}

export function metricKeys(history) {
  const keys = [];
  for (const row of history) {
    for (const [k, v] of Object.entries(row)) {
      if (!META_KEYS.has(k) && typeof v === 'number' && Number.isFinite(v) && !keys.includes(k)) keys.push(k);
    }
  }
  return keys;
}

export function seriesOf(history, key, x) {
  const points = [];
  history.forEach((row, i) => {
    const y = row[key];
    if (typeof y !== 'number' || !Number.isFinite(y)) return;
    const xv = x ? row[x] : i + 1;
    if (typeof xv !== 'number') return;
    points.push([xv, y]);
  });
  return points;
}

export const isLoss = (key) => /loss/i.test(key);
/** Values that are not a model's quality: learning rate, timings, hardware use, a fitted threshold. */
export const isAux = (key) => /^(lr|learning_rate|threshold|grad_norm)$|(^|_)(lr|pct|gb|mb|seconds|time|elapsed|s|cpu|ram|gpu|mem)(_|$)/i.test(key);
/** Metric order in the comparison: losses, quality metrics, counters (epoch, step), run statistics. */
export const metricRank = (key) => (isLoss(key) ? 0 : META_KEYS.has(key) ? 2 : isAux(key) ? 3 : 1);
export const byRank = (a, b) => metricRank(a) - metricRank(b) || a.localeCompare(b);
export const lowerIsBetter = (key) => /loss|eer|error|mae|mse|rmse|perplexity|(^|_)time|_s$|seconds/i.test(key);
