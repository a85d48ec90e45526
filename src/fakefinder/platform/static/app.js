/* fakefinder platform UI: a single page that talks to the REST API only (no framework, no build).
 *
 * Routes (hash): #/start, #/jobs, #/jobs/<id>, #/compare?ids=a,b
 * Each view gets a ViewContext: its timers, streams and pending requests end when the route changes.
 */
'use strict';

(() => {
  const TOKEN_KEY = 'fakefinder.token';
  const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'];
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);
  const ACTIVE = new Set(['queued', 'running']);
  const META_KEYS = new Set(['seq', 'stage', 'time', 'epoch', 'epochs', 'step', 'global_step']);
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d',
    '#9333ea', '#475569'];
  const SHORT_LABELS = {
    base_model: 'Base model', dataset_path: 'Dataset', epochs: 'Epochs', batch_size: 'Batch size',
    learning_rate: 'Learning rate', max_steps: 'Max steps',
  };
  const LOG_MAX_LINES = 3000;

  // ------------------------------------------------------------------ DOM helpers

  /** h('div', {class: 'x', onclick: fn}, child, [children], 'text') -> an element. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    let value;
    for (const [key, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (key === 'class') el.className = v;
      else if (key === 'value') value = v;
      else if (key === 'dataset') Object.assign(el.dataset, v);
      else if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v);
      else el.setAttribute(key, v === true ? '' : String(v));
    }
    append(el, children);
    if (value !== undefined) el.value = value;
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v);
      else el.setAttribute(key, String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child == null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
  }

  /** Replaces the children of `el` (skipping null / false, flattening arrays). */
  function setChildren(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const enc = encodeURIComponent;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function toast(message, kind = 'info') {
    const el = $('#toast');
    el.textContent = message;
    el.className = `toast ${kind}`;
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  // ------------------------------------------------------------------ formatting

  function fmtNum(v, digits = 4) {
    if (typeof v !== 'number') return v == null ? '—' : String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return String(Number(v.toPrecision(digits)));
  }

  function fmtDuration(sec) {
    if (sec == null || !Number.isFinite(sec)) return '';
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return `${sec} s`;
    const m = Math.floor(sec / 60);
    if (m < 60) return `${m} min ${sec % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function fmtTime(unix) {
    if (!unix) return '—';
    const d = new Date(unix * 1000);
    const today = new Date();
    return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function fmtBytes(n) {
    if (n == null) return '';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  function jobLabel(job) {
    return job.name || job.task_id;
  }

  function badge(state) {
    return h('span', { class: `badge state-${state || 'unknown'}`, 'data-state': state }, state || 'unknown');
  }

  function progressBar(job, id) {
    const p = job.progress || {};
    let fraction = typeof p.fraction === 'number' ? p.fraction : null;
    if (job.state === 'succeeded') fraction = 1;
    const pct = fraction == null ? 0 : Math.max(0, Math.min(1, fraction)) * 100;
    return h('div', { class: `progress state-${job.state}`, id, role: 'progressbar', 'aria-valuemin': 0,
      'aria-valuemax': 100, 'aria-valuenow': Math.round(pct) },
      h('div', { class: 'progress-fill', style: `width:${pct.toFixed(1)}%` }));
  }

  function progressText(job) {
    const p = job.progress || {};
    const parts = [];
    if (job.state === 'queued') return 'waiting for a free device';
    // the stage often is the epoch already ("epoch 3/10"): do not say it twice
    if (p.stage && !(p.epochs && /^epoch\b/i.test(p.stage))) parts.push(p.stage);
    if (p.epochs) parts.push(`epoch ${p.epoch ?? 0}/${p.epochs}`);
    if (p.total) parts.push(`step ${p.step ?? 0}/${p.total}`);
    else if (p.step != null) parts.push(`step ${p.step}`);
    if (typeof p.fraction === 'number') parts.push(`${Math.round(p.fraction * 100)}%`);
    if (job.state === 'running' && p.eta_s != null) parts.push(`ETA ${fmtDuration(p.eta_s)}`);
    return parts.join(' · ');
  }

  // ------------------------------------------------------------------ API client

  class ApiError extends Error {
    constructor(status, detail, field) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
      this.field = field || null;
    }
  }

  const getToken = () => localStorage.getItem(TOKEN_KEY) || '';

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  /** The error body: the platform's {"detail": str, "field": str}, or FastAPI's list of validation errors. */
  function readError(status, data, fallback) {
    let detail = data && typeof data === 'object' ? data.detail : data;
    let field = data && typeof data === 'object' ? data.field : null;
    if (Array.isArray(detail)) {
      const first = detail[0] || {};
      const loc = (first.loc || []).filter((part) => part !== 'body');
      if (!field && loc.length) field = loc.join('.');
      detail = detail.map((e) => {
        const where = (e.loc || []).filter((part) => part !== 'body').join('.');
        return where ? `${where}: ${e.msg}` : e.msg;
      }).join('; ');
    } else if (detail && typeof detail === 'object') {
      detail = JSON.stringify(detail);
    }
    return new ApiError(status, detail || fallback, field);
  }

  async function api(path, { method = 'GET', body, form, signal } = {}) {
    const options = { method, headers: authHeaders({ Accept: 'application/json' }), signal };
    if (form) options.body = form;
    else if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = text; }
    }
    if (response.status === 401) {
      askForToken(getToken() ? 'The saved token was refused. Enter a valid token.' : undefined);
      throw readError(401, data, 'this server needs an API token');
    }
    if (!response.ok) throw readError(response.status, data, response.statusText);
    return data;
  }

  const isAbort = (err) => err && err.name === 'AbortError';

  let kindsCache = null;
  async function getKinds(signal) {
    if (!kindsCache) {
      const data = await api('/api/kinds', { signal });
      kindsCache = data.kinds || [];
    }
    return kindsCache;
  }

  // ------------------------------------------------------------------ token prompt

  function askForToken(message) {
    const dialog = $('#token-dialog');
    if (message) $('#token-message').textContent = message;
    if (dialog.open) return;
    $('#token-input').value = getToken();
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
    $('#token-input').focus();
  }

  function closeTokenDialog() {
    const dialog = $('#token-dialog');
    if (dialog.open) dialog.close();
  }

  function updateTokenButton() {
    $('#token-button').textContent = getToken() ? 'API token ✓' : 'API token';
  }

  function setupTokenDialog() {
    $('#token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('#token-input').value.trim();
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
      closeTokenDialog();
      updateTokenButton();
      kindsCache = null;
      loadServerInfo();
      route();
    });
    $('#token-forget').addEventListener('click', () => {
      localStorage.removeItem(TOKEN_KEY);
      $('#token-input').value = '';
      updateTokenButton();
      toast('Token forgotten');
    });
    $('#token-cancel').addEventListener('click', closeTokenDialog);
    $('#token-button').addEventListener('click', () => {
      $('#token-message').textContent = 'The token is sent as "Authorization: Bearer …" and kept in this browser only.';
      askForToken();
    });
    updateTokenButton();
  }

  // ------------------------------------------------------------------ downloads (fetch + blob when a token is set)

  function filePath(path) {
    return String(path).split('/').map(enc).join('/');
  }

  /** A link to an API file: plain when no token is set, else fetched with the header and handed over as a blob. */
  function apiLink(label, url, { id, filename, open = false, cls = 'btn' } = {}) {
    const link = h('a', {
      id, 'data-testid': id, href: url, class: cls,
      target: open ? '_blank' : null, rel: open ? 'noopener' : null, download: open ? null : (filename || ''),
    }, label);
    link.addEventListener('click', async (event) => {
      if (!getToken()) return;
      event.preventDefault();
      const win = open ? window.open('', '_blank') : null;
      try {
        const blobUrl = await fetchBlobUrl(url);
        if (win) win.location.href = blobUrl;
        else {
          const a = h('a', { href: blobUrl, download: filename || '' });
          document.body.append(a);
          a.click();
          a.remove();
        }
        setTimeout(() => URL.revokeObjectURL(blobUrl), 120000);
      } catch (err) {
        if (win) win.close();
        toast(`Download failed: ${err.message}`, 'error');
      }
    });
    return link;
  }

  async function fetchBlobUrl(url) {
    const response = await fetch(url, { headers: authHeaders() });
    if (response.status === 401) {
      askForToken('The saved token was refused. Enter a valid token.');
      throw new ApiError(401, 'unauthorized');
    }
    if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
    return URL.createObjectURL(await response.blob());
  }

  // ------------------------------------------------------------------ SVG line chart

  function niceStep(span, count, integer) {
    if (!(span > 0)) return 1;
    let step = 10 ** Math.floor(Math.log10(span / count));
    const err = (count / span) * step;
    if (err <= 0.15) step *= 10;
    else if (err <= 0.35) step *= 5;
    else if (err <= 0.75) step *= 2;
    if (integer) step = Math.max(1, Math.round(step));
    return step;
  }

  function niceScale(min, max, count, integer) {
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
  function fmtTick(v, step) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(Math.max(0, Math.min(4, Math.ceil(-Math.log10(step / a)))));
    const decimals = Math.max(0, Math.min(8, Math.ceil(-Math.log10(step) - 1e-9)));
    return v.toFixed(decimals);
  }

  /**
   * Draws series [{name, color, points: [[x, y], ...]}] into `el` as an SVG line chart with a legend.
   * Clicking a legend entry hides / shows its series.
   */
  function lineChart(el, series, options = {}) {
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
      if (sr.points.length > 1) g.append(s('polyline', { points: pts, fill: 'none', stroke: sr.color, class: 'line' }));
      const dots = sr.points.length <= 120;
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
  function xKey(history) {
    if (history.some((r) => typeof r.epoch === 'number')) return 'epoch';
    if (history.some((r) => typeof r.step === 'number')) return 'step';
    if (history.some((r) => typeof r.global_step === 'number')) return 'global_step';
    return null;
  }

  function metricKeys(history) {
    const keys = [];
    for (const row of history) {
      for (const [k, v] of Object.entries(row)) {
        if (!META_KEYS.has(k) && typeof v === 'number' && Number.isFinite(v) && !keys.includes(k)) keys.push(k);
      }
    }
    return keys;
  }

  function seriesOf(history, key, x) {
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

  const isLoss = (key) => /loss/i.test(key);
  /** Values that are not a model's quality: learning rate, timings, hardware use, a fitted threshold. */
  const isAux = (key) => /^(lr|learning_rate|threshold|grad_norm)$|(^|_)(lr|pct|gb|mb|seconds|time|elapsed|s|cpu|ram|gpu|mem)(_|$)/i.test(key);
  /** Metric order in the comparison: losses, quality metrics, counters (epoch, step), run statistics. */
  const metricRank = (key) => (isLoss(key) ? 0 : META_KEYS.has(key) ? 2 : isAux(key) ? 3 : 1);
  const byRank = (a, b) => metricRank(a) - metricRank(b) || a.localeCompare(b);
  const lowerIsBetter = (key) => /loss|eer|error|mae|mse|rmse|perplexity|(^|_)time|_s$|seconds/i.test(key);

  // ------------------------------------------------------------------ views and routing

  class ViewContext {
    constructor() {
      this.alive = true;
      this.controller = new AbortController();
      this.signal = this.controller.signal;
      this.timers = [];
    }
    every(fn, ms) { this.timers.push(setInterval(fn, ms)); }
    dispose() {
      this.alive = false;
      this.controller.abort();
      this.timers.forEach(clearInterval);
    }
  }

  let current = null;

  function route() {
    if (current) current.dispose();
    const ctx = new ViewContext();
    current = ctx;
    const hash = location.hash.replace(/^#/, '') || '/jobs';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/').filter(Boolean);
    const view = $('#view');
    view.replaceChildren();
    let name = parts[0] || 'jobs';
    let run;
    if (name === 'start') run = () => startView(ctx, view);
    else if (name === 'jobs' && parts[1]) run = () => jobView(ctx, view, decodeURIComponent(parts[1]));
    else if (name === 'jobs') run = () => jobsView(ctx, view);
    else if (name === 'compare') {
      run = () => compareView(ctx, view, (params.get('ids') || '').split(',').map((x) => x.trim()).filter(Boolean));
    } else {
      location.hash = '#/jobs';
      return;
    }
    document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === name));
    view.dataset.view = name;
    Promise.resolve().then(run).catch((err) => {
      if (isAbort(err) || !ctx.alive) return;
      view.append(h('div', { class: 'alert error', id: 'view-error' }, `Could not load this page: ${err.message}`));
    });
  }

  async function loadServerInfo() {
    const el = $('#server-info');
    try {
      const info = await api('/api/health');
      const devices = (info.devices || []).map((d) => `${d.name} ${d.busy}/${d.slots}`).join(', ');
      el.textContent = [info.version && `v${info.version}`, info.executor, devices].filter(Boolean).join(' · ');
      el.title = 'version · executor · devices (busy/slots)';
    } catch (err) {
      el.textContent = err.status === 401 ? 'token needed' : 'server unreachable';
    }
  }

  // ------------------------------------------------------------------ #/start

  const startMemory = { kind: null, name: '', extra: '' };

  /** `key: value` lines (or key=value), or one JSON object -> an object. Throws with the line at fault. */
  function parseExtra(text) {
    const trimmed = text.trim();
    if (!trimmed) return {};
    if (trimmed.startsWith('{')) {
      let obj;
      try { obj = JSON.parse(trimmed); } catch (err) { throw new Error(`not valid JSON: ${err.message}`); }
      if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('JSON must be an object');
      return obj;
    }
    const out = {};
    trimmed.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const m = /^([A-Za-z_][\w.-]*)\s*[:=]\s*(.*)$/.exec(line);
      if (!m) throw new Error(`line ${i + 1}: expected "key: value", got "${line}"`);
      out[m[1]] = parseScalar(m[2]);
    });
    return out;
  }

  function parseScalar(text) {
    const t = text.trim();
    if (t === '') return '';
    if (/^(true|false|null)$/i.test(t) && t !== t.toLowerCase()) return JSON.parse(t.toLowerCase());
    if (t === '~' || t === 'None') return null;
    if (/^(yes|no)$/i.test(t)) return /^yes$/i.test(t);
    try { return JSON.parse(t); } catch (_) { /* a plain string */ }
    if (/^'.*'$/.test(t)) return t.slice(1, -1);
    return t;
  }

  function formatSetting(value) {
    if (typeof value === 'string') {
      return value === '' || parseScalar(value) !== value ? JSON.stringify(value) : value;
    }
    return JSON.stringify(value);
  }

  function flatten(tree, prefix = '', out = []) {
    for (const [k, v] of Object.entries(tree || {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) flatten(v, key, out);
      else out.push([key, v]);
    }
    return out;
  }

  /** Dotted keys whose value in `config` differs from `defaults`. */
  function changedKeys(defaults, config) {
    const base = new Map(flatten(defaults).map(([k, v]) => [k, JSON.stringify(v)]));
    return new Set(flatten(config).filter(([k, v]) => base.get(k) !== JSON.stringify(v)).map(([k]) => k));
  }

  /** YAML text as one element per line; lines of the keys in `marked` get class "changed". */
  function yamlLines(yamlText, marked) {
    const stack = [];
    return yamlText.replace(/\n$/, '').split('\n').map((line) => {
      const m = /^(\s*)([^\s:#-][^:]*|"[^"]*"|'[^']*'):(\s|$)/.exec(line);
      let path = stack.map((e) => e.key).join('.');
      if (m) {
        const indent = m[1].length;
        while (stack.length && stack[stack.length - 1].indent >= indent) stack.pop();
        stack.push({ indent, key: m[2].replace(/^["']|["']$/g, '') });
        path = stack.map((e) => e.key).join('.');
      }
      const hit = path && [...marked].some((k) => k === path || (k.startsWith(`${path}.`) && !m));
      const holds = !hit && path && m && [...marked].some((k) => k.startsWith(`${path}.`));
      return h('span', { class: hit ? 'yl changed' : holds ? 'yl ctx' : 'yl', 'data-key': path || null }, `${line}\n`);
    });
  }

  function splitCounts(ds) {
    return Object.entries(ds.splits || {}).map(([split, classes]) => {
      const total = Object.values(classes || {}).reduce((a, b) => a + (Number(b) || 0), 0);
      return [split, total, classes || {}];
    });
  }

  function datasetLabel(ds) {
    const counts = splitCounts(ds).map(([split, total]) => `${split} ${total}`).join(' · ');
    return `${ds.name} — ${ds.layout || 'unknown layout'}${counts ? ` · ${counts}` : ''}`;
  }

  async function startView(ctx, view) {
    const signal = ctx.signal;
    view.append(h('h1', {}, 'New training run'), h('p', { class: 'muted' }, 'Loading…'));
    const [kinds, dsData] = await Promise.all([getKinds(signal), api('/api/datasets', { signal })]);
    if (!ctx.alive) return;
    let datasets = dsData.datasets || [];
    view.replaceChildren();
    if (!kinds.length) {
      view.append(h('div', { class: 'alert error' }, 'The server lists no model types.'));
      return;
    }
    let kind = kinds.find((k) => k.name === startMemory.kind) || kinds[0];

    const kindSelect = h('select', { id: 'model-type', 'data-testid': 'model-type', name: 'model_type' },
      kinds.map((k) => h('option', { value: k.name }, k.name)));
    kindSelect.value = kind.name;
    const kindDescription = h('p', { id: 'kind-description', class: 'hint' });
    const kindError = h('div', { class: 'field-error', id: 'error-model_type' });
    const nameInput = h('input', { id: 'name', 'data-testid': 'name', type: 'text', placeholder: 'optional label',
      value: startMemory.name, autocomplete: 'off' });
    const nameError = h('div', { class: 'field-error', id: 'error-name' });
    const shortFields = h('div', { id: 'short-fields', class: 'fields' });
    const extra = h('textarea', { id: 'extra', 'data-testid': 'extra', rows: 6, spellcheck: 'false',
      placeholder: 'one setting per line, or a JSON object, e.g.\npretrained: false\nimage_size: 32\ntrain.num_workers: 0' });
    extra.value = startMemory.extra;
    const extraError = h('div', { class: 'field-error', id: 'error-extra' });
    const settingsFilter = h('input', { type: 'search', placeholder: 'filter settings', id: 'settings-filter' });
    const settingsList = h('div', { class: 'settings-list', id: 'settings-list' });
    const formError = h('div', { id: 'form-error', 'data-testid': 'form-error', class: 'alert error', hidden: true });
    const startButton = h('button', { id: 'start', 'data-testid': 'start', type: 'submit', class: 'primary' },
      'Start training');
    const resetButton = h('button', { id: 'reset', type: 'button', class: 'ghost' }, 'Reset to defaults');
    const preview = h('pre', { id: 'preview', 'data-testid': 'preview', class: 'code preview' }, '…');
    const previewStatus = h('span', { id: 'preview-status', class: 'muted small-text' });
    const onlyChanged = h('input', { type: 'checkbox', id: 'preview-changed', 'data-testid': 'preview-changed' });
    onlyChanged.addEventListener('change', () => preview.classList.toggle('only-changed', onlyChanged.checked));

    // dataset picker + upload
    const datasetSelect = h('select', { id: 'dataset', 'data-testid': 'dataset', name: 'dataset_path' });
    const datasetCustom = h('input', { id: 'dataset-custom', type: 'text', hidden: true,
      placeholder: 'a path inside a dataset root' });
    const datasetInfo = h('div', { id: 'dataset-info', class: 'hint' });
    const uploadFile = h('input', { id: 'upload-file', 'data-testid': 'upload-file', type: 'file', accept: '.zip,application/zip' });
    const uploadName = h('input', { id: 'upload-name', type: 'text', placeholder: 'name (default: the file name)' });
    const uploadButton = h('button', { id: 'upload', type: 'button' }, 'Upload ZIP');
    const uploadStatus = h('div', { id: 'upload-status', class: 'hint' });
    let inputs = {}; // short key -> input element
    let errors = {}; // short key -> error element

    function fillDatasets(preferred) {
      const fitting = datasets.filter((d) => (d.kinds || []).includes(kind.name));
      const previous = preferred ?? (datasetSelect.value === '__custom__' ? null : datasetSelect.value);
      setChildren(datasetSelect,
        fitting.length ? null : h('option', { value: '', disabled: true }, `no dataset fits ${kind.name} — upload one`),
        fitting.map((d) => h('option', { value: d.name, title: d.path }, datasetLabel(d))),
        h('option', { value: '__custom__' }, 'other path…'),
      );
      const wanted = kind.defaults ? kind.defaults.dataset_path : null;
      const match = (v) => v != null && fitting.find((d) => d.name === v || d.path === v);
      const chosen = match(previous) || match(wanted);
      if (chosen) datasetSelect.value = chosen.name;
      else if (wanted) { datasetSelect.value = '__custom__'; datasetCustom.value = wanted; }
      else if (fitting.length) datasetSelect.value = fitting[0].name;
      else datasetSelect.value = '__custom__';
      showDatasetInfo();
    }

    function showDatasetInfo() {
      const custom = datasetSelect.value === '__custom__';
      datasetCustom.hidden = !custom;
      const ds = datasets.find((d) => d.name === datasetSelect.value);
      if (!ds) {
        setChildren(datasetInfo, custom ? 'Relative to a dataset root, or absolute inside one.' : '');
        return;
      }
      const rows = splitCounts(ds).map(([split, total, classes]) => h('li', {},
        h('b', {}, split), ` ${total}: `,
        Object.entries(classes).map(([c, n]) => `${c} ${n}`).join(', ')));
      setChildren(datasetInfo,
        h('div', {}, `${ds.layout || 'unknown layout'} · ${ds.files ?? '?'} files · ${fmtBytes(ds.bytes)} · fits: ${(ds.kinds || []).join(', ')}`),
        rows.length ? h('ul', { class: 'splits' }, rows) : null,
        ds.note ? h('div', { class: 'note' }, ds.note) : null,
      );
    }

    function renderKind() {
      kindDescription.textContent = kind.description || '';
      shortFields.replaceChildren();
      inputs = {};
      errors = {};
      const defaults = kind.defaults || {};
      const dotted = kind.short_form || {};
      for (const key of Object.keys(dotted)) {
        const error = h('div', { class: 'field-error', id: `error-${key}` });
        errors[key] = error;
        let control;
        if (key === 'dataset_path') {
          control = h('div', { class: 'dataset-picker' }, datasetSelect, datasetCustom, datasetInfo);
        } else {
          const value = defaults[key];
          const attrs = { id: `field-${key}`, 'data-testid': `field-${key}`, name: key, 'data-key': key };
          if (typeof value === 'boolean') {
            control = h('input', Object.assign(attrs, { type: 'checkbox', checked: value }));
          } else if (typeof value === 'number') {
            control = h('input', Object.assign(attrs, { type: 'number', step: 'any', value: String(value) }));
          } else {
            control = h('input', Object.assign(attrs, { type: 'text', value: value == null ? '' : String(value),
              placeholder: value == null ? 'default' : null }));
          }
          inputs[key] = control;
        }
        const label = SHORT_LABELS[key] || key.replace(/_/g, ' ');
        shortFields.append(h('div', { class: 'field' },
          h('label', { for: key === 'dataset_path' ? 'dataset' : `field-${key}` }, label,
            h('code', { class: 'dotted' }, dotted[key])),
          control, error));
      }
      fillDatasets();
      renderSettings();
    }

    function renderSettings() {
      const filter = settingsFilter.value.trim().toLowerCase();
      const entries = flatten(kind.config).filter(([k]) => !filter || k.toLowerCase().includes(filter));
      setChildren(settingsList, ...entries.slice(0, 300).map(([k, v]) => h('button', {
        type: 'button', class: 'setting', title: 'add to extra settings',
        onclick: () => {
          const line = `${k}: ${formatSetting(v)}`;
          extra.value = extra.value.trim() ? `${extra.value.replace(/\s+$/, '')}\n${line}` : line;
          schedulePreview();
        },
      }, h('code', {}, k), h('span', { class: 'muted' }, ` ${formatSetting(v)}`))));
      if (!entries.length) settingsList.append(h('span', { class: 'muted' }, 'no match'));
    }

    function buildBody() {
      const body = { model_type: kind.name };
      const name = nameInput.value.trim();
      if (name) body.name = name;
      for (const [key, input] of Object.entries(inputs)) {
        if (input.type === 'checkbox') body[key] = input.checked;
        else if (input.type === 'number') { if (input.value.trim() !== '') body[key] = Number(input.value); }
        else if (input.value.trim() !== '') body[key] = input.value.trim();
      }
      if ('dataset_path' in (kind.short_form || {})) {
        const path = datasetSelect.value === '__custom__' ? datasetCustom.value.trim() : datasetSelect.value;
        if (path) body.dataset_path = path;
      }
      let extraValues;
      try {
        extraValues = parseExtra(extra.value);
      } catch (err) {
        err.field = 'extra';
        throw err;
      }
      return Object.assign(body, extraValues);
    }

    function clearErrors() {
      formError.hidden = true;
      formError.textContent = '';
      for (const el of view.querySelectorAll('.field-error')) el.textContent = '';
      for (const el of view.querySelectorAll('.invalid')) el.classList.remove('invalid');
    }

    function errorTarget(field) {
      if (!field) return null;
      const f = String(field).replace(/^body\./, '');
      if (f === 'extra') return [extraError, extra];
      if (f === 'model_type') return [kindError, kindSelect];
      if (f === 'name') return [nameError, nameInput];
      for (const [key, path] of Object.entries(kind.short_form || {})) {
        if (f === key || f === path || f.startsWith(`${path}.`)) {
          return [errors[key], key === 'dataset_path' ? datasetSelect : inputs[key]];
        }
      }
      return [extraError, extra];
    }

    function showError(err) {
      const field = err.field || null;
      const message = err.detail || err.message;
      // the server's messages usually start with the field already ("epochs (train.epochs): ...")
      const named = !field || field === 'extra' || String(message).startsWith(field) ? message : `${field}: ${message}`;
      formError.hidden = false;
      formError.textContent = named;
      const target = errorTarget(field);
      if (target && target[0]) {
        target[0].textContent = named;
        if (target[1]) target[1].classList.add('invalid');
      }
    }

    let previewSeq = 0;
    let previewTimer = null;
    function schedulePreview() {
      startMemory.name = nameInput.value;
      startMemory.extra = extra.value;
      clearTimeout(previewTimer);
      previewTimer = setTimeout(runPreview, 300);
    }

    async function runPreview() {
      const seq = ++previewSeq;
      let body;
      try {
        body = buildBody();
      } catch (err) {
        clearErrors();
        showError(err);
        previewStatus.textContent = `not updated: ${formError.textContent}`;
        previewStatus.classList.add('error-text');
        preview.classList.add('stale');
        return;
      }
      previewStatus.textContent = 'updating…';
      previewStatus.classList.remove('error-text');
      try {
        const result = await api('/api/config/preview', { method: 'POST', body, signal: ctx.signal });
        if (seq !== previewSeq || !ctx.alive) return;
        clearErrors();
        const changed = changedKeys(kind.config || {}, result.config || {});
        if (result.yaml) setChildren(preview, yamlLines(result.yaml, changed));
        else preview.textContent = JSON.stringify(result.config, null, 2);
        preview.classList.remove('stale');
        previewStatus.classList.remove('error-text');
        previewStatus.textContent = `resolved config · ${changed.size} setting${changed.size === 1 ? '' : 's'} differ from the defaults (marked)`;
      } catch (err) {
        if (isAbort(err) || seq !== previewSeq) return;
        clearErrors();
        showError(err);
        preview.classList.add('stale');
        previewStatus.textContent = `not updated: ${formError.textContent}`;
        previewStatus.classList.add('error-text');
      }
    }

    async function start(event) {
      event.preventDefault();
      clearErrors();
      let body;
      try {
        body = buildBody();
      } catch (err) {
        showError(err);
        return;
      }
      startButton.disabled = true;
      startButton.textContent = 'Starting…';
      try {
        const result = await api('/api/training/start', { method: 'POST', body, signal: ctx.signal });
        startMemory.name = '';
        location.hash = `#/jobs/${enc(result.task_id)}`;
      } catch (err) {
        if (isAbort(err)) return;
        showError(err);
        startButton.disabled = false;
        startButton.textContent = 'Start training';
      }
    }

    async function upload() {
      const file = uploadFile.files && uploadFile.files[0];
      if (!file) {
        uploadStatus.textContent = 'Choose a ZIP file first.';
        return;
      }
      const name = uploadName.value.trim() || file.name.replace(/\.zip$/i, '').replace(/[^\w.-]+/g, '_');
      const form = new FormData();
      form.append('file', file);
      form.append('name', name);
      uploadButton.disabled = true;
      uploadStatus.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
      try {
        const ds = await api('/api/datasets', { method: 'POST', form, signal: ctx.signal });
        const refreshed = await api('/api/datasets', { signal: ctx.signal });
        datasets = refreshed.datasets || [];
        const fits = (ds.kinds || []).includes(kind.name);
        fillDatasets(fits ? ds.name : undefined);
        uploadStatus.textContent = `Uploaded "${ds.name}" (${ds.layout || 'unknown layout'}, ${ds.files ?? '?'} files)` +
          (fits ? '' : ` — it does not fit ${kind.name} (fits: ${(ds.kinds || []).join(', ') || 'none'})`);
        uploadFile.value = '';
        uploadName.value = '';
        schedulePreview();
      } catch (err) {
        if (!isAbort(err)) uploadStatus.textContent = `Upload failed: ${err.detail || err.message}`;
      } finally {
        uploadButton.disabled = false;
      }
    }

    kindSelect.addEventListener('change', () => {
      kind = kinds.find((k) => k.name === kindSelect.value) || kinds[0];
      startMemory.kind = kind.name;
      renderKind();
      schedulePreview();
    });
    datasetSelect.addEventListener('change', () => { showDatasetInfo(); schedulePreview(); });
    resetButton.addEventListener('click', () => { extra.value = ''; renderKind(); schedulePreview(); });
    uploadButton.addEventListener('click', upload);
    settingsFilter.addEventListener('input', renderSettings);

    const form = h('form', { id: 'start-form', class: 'card form', novalidate: true, onsubmit: start },
      h('div', { class: 'field' }, h('label', { for: 'model-type' }, 'Model type'), kindSelect, kindDescription, kindError),
      h('div', { class: 'field' }, h('label', { for: 'name' }, 'Run name'), nameInput, nameError),
      shortFields,
      h('details', { class: 'upload', id: 'upload-box' },
        h('summary', {}, 'Upload a dataset (ZIP)'),
        h('div', { class: 'upload-row' }, uploadFile, uploadName, uploadButton),
        uploadStatus),
      h('div', { class: 'field' },
        h('label', { for: 'extra' }, 'Extra settings', h('span', { class: 'muted' }, ' — key: value lines or JSON')),
        extra, extraError,
        h('details', { class: 'settings' }, h('summary', {}, `All settings of this model type`),
          settingsFilter, settingsList)),
      formError,
      h('div', { class: 'actions' }, startButton, resetButton));
    form.addEventListener('input', (event) => {
      if (event.target === settingsFilter || event.target === uploadName || event.target === uploadFile) return;
      schedulePreview();
    });
    form.addEventListener('change', (event) => {
      if (event.target.type === 'checkbox') schedulePreview();
    });

    view.append(
      h('div', { class: 'page-head' }, h('h1', {}, 'New training run'),
        h('a', { href: '#/jobs', class: 'ghost btn' }, 'All jobs')),
      h('div', { class: 'two-col' }, form,
        h('section', { class: 'card preview-card' },
          h('div', { class: 'card-head' }, h('h2', {}, 'Config preview'),
            h('label', { class: 'toggle small-text', for: 'preview-changed' }, onlyChanged, 'changed only')),
          previewStatus, preview)));
    renderKind();
    runPreview();
  }

  // ------------------------------------------------------------------ #/jobs

  const jobsMemory = { state: '', kind: '', selected: new Set() };

  async function jobsView(ctx, view) {
    const signal = ctx.signal;
    let kinds = [];
    try { kinds = await getKinds(signal); } catch (err) { if (isAbort(err)) return; }
    if (!ctx.alive) return;
    const selected = jobsMemory.selected;
    const stateFilter = h('select', { id: 'filter-state', 'data-testid': 'filter-state' },
      h('option', { value: '' }, 'all states'), STATES.map((st) => h('option', { value: st }, st)));
    stateFilter.value = jobsMemory.state;
    const kindFilter = h('select', { id: 'filter-kind', 'data-testid': 'filter-kind' },
      h('option', { value: '' }, 'all model types'), kinds.map((k) => h('option', { value: k.name }, k.name)));
    kindFilter.value = jobsMemory.kind;
    const compareButton = h('button', { id: 'compare', 'data-testid': 'compare', type: 'button', class: 'primary',
      disabled: true }, 'Compare');
    const selectAll = h('input', { type: 'checkbox', id: 'select-all', title: 'select all' });
    const tbody = h('tbody', { id: 'jobs-body' });
    const empty = h('div', { class: 'empty', id: 'jobs-empty', hidden: true },
      'No jobs yet. ', h('a', { href: '#/start' }, 'Start a training run'), '.');
    const status = h('span', { class: 'muted small-text', id: 'jobs-status' });
    let jobs = [];

    function updateCompare() {
      compareButton.disabled = selected.size < 1;
      compareButton.textContent = selected.size ? `Compare (${selected.size})` : 'Compare';
      selectAll.checked = jobs.length > 0 && jobs.every((j) => selected.has(j.task_id));
    }

    function row(job) {
      const box = h('input', { type: 'checkbox', class: 'job-select', value: job.task_id,
        'data-testid': `select-${job.task_id}`, 'aria-label': `select ${jobLabel(job)}`,
        checked: selected.has(job.task_id) });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(job.task_id); else selected.delete(job.task_id);
        updateCompare();
      });
      const duration = job.started_at ? (job.finished_at || Date.now() / 1000) - job.started_at : null;
      return h('tr', { 'data-job-id': job.task_id, class: `job-row state-${job.state}` },
        h('td', { class: 'check' }, box),
        h('td', {}, h('a', { href: `#/jobs/${enc(job.task_id)}`, class: 'job-link' }, jobLabel(job)),
          job.name ? h('div', { class: 'muted mono small-text' }, job.task_id) : null),
        h('td', {}, job.type || ''),
        h('td', {}, job.kind || ''),
        h('td', {}, badge(job.state), job.stop_requested && ACTIVE.has(job.state) ? h('span', { class: 'muted' }, ' stopping') : null),
        h('td', { class: 'progress-cell' }, progressBar(job), h('div', { class: 'small-text muted' }, progressText(job))),
        h('td', { class: 'small-text' }, fmtTime(job.created_at)),
        h('td', { class: 'small-text' }, duration == null ? '' : fmtDuration(duration)));
    }

    async function refresh() {
      const q = new URLSearchParams();
      if (stateFilter.value) q.set('state', stateFilter.value);
      if (kindFilter.value) q.set('kind', kindFilter.value);
      try {
        const data = await api(`/api/training${q.toString() ? `?${q}` : ''}`, { signal });
        if (!ctx.alive) return;
        jobs = data.jobs || [];
        const present = new Set(jobs.map((j) => j.task_id));
        for (const id of [...selected]) if (!present.has(id)) selected.delete(id);
        setChildren(tbody, ...jobs.map(row));
        empty.hidden = jobs.length > 0;
        status.textContent = `updated ${new Date().toLocaleTimeString()}`;
        updateCompare();
      } catch (err) {
        if (!isAbort(err)) status.textContent = `refresh failed: ${err.message}`;
      }
    }

    stateFilter.addEventListener('change', () => { jobsMemory.state = stateFilter.value; refresh(); });
    kindFilter.addEventListener('change', () => { jobsMemory.kind = kindFilter.value; refresh(); });
    selectAll.addEventListener('change', () => {
      for (const j of jobs) { if (selectAll.checked) selected.add(j.task_id); else selected.delete(j.task_id); }
      tbody.querySelectorAll('.job-select').forEach((b) => { b.checked = selectAll.checked; });
      updateCompare();
    });
    compareButton.addEventListener('click', () => {
      const ids = jobs.map((j) => j.task_id).filter((id) => selected.has(id)).reverse();
      location.hash = `#/compare?ids=${ids.map(enc).join(',')}`;
    });

    view.append(
      h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'),
        h('a', { href: '#/start', class: 'btn primary', id: 'new-run' }, 'New run')),
      h('div', { class: 'toolbar' }, stateFilter, kindFilter, compareButton, status),
      h('div', { class: 'card table-card' },
        h('table', { class: 'table', id: 'jobs-table', 'data-testid': 'jobs-table' },
          h('thead', {}, h('tr', {}, h('th', { class: 'check' }, selectAll), h('th', {}, 'Name'), h('th', {}, 'Type'),
            h('th', {}, 'Model type'), h('th', {}, 'State'), h('th', {}, 'Progress'), h('th', {}, 'Created'),
            h('th', {}, 'Duration'))),
          tbody),
        empty));
    await refresh();
    ctx.every(refresh, 3000);
  }

  // ------------------------------------------------------------------ #/jobs/<id>

  /** Reads one SSE response: calls onEvent({event, data, id}) per frame; resolves when the body ends. */
  async function readSse(response, onEvent, signal) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const cancel = () => reader.cancel().catch(() => {});
    signal.addEventListener('abort', cancel, { once: true });
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
        buffer = buffer.slice(0, cut).replace(/\r\n?/g, '\n') + buffer.slice(cut);
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const event = parseFrame(frame);
          if (event && onEvent(event) === false) { cancel(); return; }
        }
      }
    } finally {
      signal.removeEventListener('abort', cancel);
    }
  }

  function parseFrame(frame) {
    let event = 'message';
    let id = null;
    const data = [];
    let seen = false;
    for (const line of frame.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') { event = value; seen = true; }
      else if (field === 'data') { data.push(value); seen = true; }
      else if (field === 'id') id = value;
    }
    if (!seen) return null;
    const text = data.join('\n');
    let parsed = text;
    try { parsed = text ? JSON.parse(text) : null; } catch (_) { /* plain text data */ }
    return { event, data: parsed, id };
  }

  async function jobView(ctx, view, id) {
    const signal = ctx.signal;
    const base = `/api/training/${enc(id)}`;
    let job = await api(base, { signal });
    if (!ctx.alive) return;
    let history = [];
    let historyKeys = new Set();
    let lastSeq = -Infinity;
    let following = false;
    let chartFrame = 0;

    const nameEl = h('h1', { id: 'job-name' });
    const stateEl = h('span', { id: 'job-state', 'data-testid': 'job-state', class: 'badge' });
    const metaEl = h('div', { id: 'job-meta', class: 'muted small-text' });
    const stopButton = h('button', { id: 'stop', 'data-testid': 'stop', type: 'button' }, 'Stop');
    const resumeButton = h('button', { id: 'resume', 'data-testid': 'resume', type: 'button' }, 'Resume');
    const deleteButton = h('button', { id: 'delete', 'data-testid': 'delete', type: 'button', class: 'danger' }, 'Delete');
    const progressWrap = h('div', { id: 'progress-wrap' });
    const progressTextEl = h('div', { id: 'progress-text', 'data-testid': 'progress-text', class: 'small-text' });
    const errorEl = h('pre', { id: 'job-error', 'data-testid': 'job-error', class: 'alert error code', hidden: true });
    const metricsEl = h('div', { id: 'metrics', 'data-testid': 'metrics' });
    const lossChart = h('div', { id: 'chart', 'data-testid': 'chart' });
    const metricChart = h('div', { id: 'chart-metrics', 'data-testid': 'chart-metrics' });
    const otherChart = h('div', { id: 'chart-other', 'data-testid': 'chart-other' });
    const otherKey = h('select', { id: 'chart-other-key', class: 'inline-select', 'aria-label': 'value to plot' });
    otherKey.addEventListener('change', () => drawCharts());
    const otherCard = h('section', { class: 'card', hidden: true },
      h('div', { class: 'card-head' }, h('h2', {}, 'Run statistics'), otherKey), otherChart);
    const predictionsCard = h('section', { class: 'card', id: 'predictions-card', hidden: true });
    const resultCard = h('section', { class: 'card', id: 'result-card', hidden: true });
    const outputsEl = h('div', { id: 'outputs', class: 'outputs' });
    const reportFrameWrap = h('div', { id: 'report-frame-wrap' });
    const filesEl = h('div', { id: 'files', 'data-testid': 'files' });
    const logEl = h('div', { id: 'log', 'data-testid': 'log', class: 'log', tabindex: 0 });
    const logStatus = h('span', { id: 'log-status', class: 'muted small-text' });

    function renderJob(next) {
      const wasActive = ACTIVE.has(job.state);
      job = next;
      nameEl.textContent = jobLabel(job);
      stateEl.textContent = job.state + (job.stop_requested && ACTIVE.has(job.state) ? ' (stopping)' : '');
      stateEl.className = `badge state-${job.state}`;
      stateEl.dataset.state = job.state;
      setChildren(metaEl,
        [job.type, job.kind, job.device && `on ${job.device}`, job.attempts > 1 && `attempt ${job.attempts}`]
          .filter(Boolean).join(' · '),
        h('span', { class: 'mono' }, ` · ${job.task_id}`),
        ` · created ${fmtTime(job.created_at)}`,
        job.started_at ? ` · ran ${fmtDuration((job.finished_at || Date.now() / 1000) - job.started_at)}` : '');
      setChildren(progressWrap, progressBar(job, 'progress'));
      progressTextEl.textContent = progressText(job) || (job.state === 'running' ? 'starting…' : '');
      stopButton.disabled = !ACTIVE.has(job.state) || !!job.stop_requested;
      resumeButton.disabled = !job.resumable || ACTIVE.has(job.state);
      deleteButton.disabled = ACTIVE.has(job.state);
      errorEl.hidden = !job.error;
      errorEl.textContent = job.error || '';
      renderMetrics();
      renderResult();
      renderOutputs();
      if (wasActive && TERMINAL.has(job.state)) {
        loadFiles();
        loadMetrics();
      }
    }

    function renderMetrics() {
      const entries = Object.entries(job.metrics || {});
      setChildren(metricsEl, entries.length
        ? h('table', { class: 'table compact' }, h('tbody', {}, entries.map(([k, v]) => h('tr', {},
          h('th', {}, k), h('td', { class: 'num', 'data-metric': k }, fmtNum(v))))))
        : h('div', { class: 'muted' }, 'No metrics yet.'));
    }

    function renderResult() {
      const result = job.result;
      const predictions = result && Array.isArray(result.predictions) ? result.predictions : null;
      predictionsCard.hidden = !predictions;
      if (predictions) {
        setChildren(predictionsCard, h('h2', {}, 'Predictions'),
          h('table', { class: 'table', id: 'predictions', 'data-testid': 'predictions' },
            h('thead', {}, h('tr', {}, h('th', {}, 'id'), h('th', {}, 'probability'), h('th', {}, 'label'),
              h('th', {}, 'explanation'))),
            h('tbody', {}, predictions.map((p) => h('tr', {},
              h('td', { class: 'mono' }, p.id ?? ''),
              h('td', { class: 'num' }, fmtNum(p.probability)),
              h('td', {}, p.label == null ? '' : h('span', { class: `label label-${p.label}` }, String(p.label))),
              h('td', { class: 'explanation' }, p.explanation || ''))))));
      }
      const other = result && !predictions && Object.keys(result).length ? result : null;
      resultCard.hidden = !other;
      if (other) {
        setChildren(resultCard, h('details', {}, h('summary', {}, 'Result'),
          h('pre', { class: 'code', id: 'job-result' }, JSON.stringify(other, null, 2))));
      }
    }

    function renderOutputs() {
      const files = job.files || {};
      const label = jobLabel(job).replace(/[^\w.-]+/g, '_');
      const items = [];
      if (files.artifact) {
        items.push(apiLink('Download model (ZIP)', `${base}/artifact`, { id: 'artifact-link', filename: `${label}-model.zip` }));
      }
      if (files.report) {
        items.push(apiLink('Open report', `${base}/report`, { id: 'report-link', open: true }));
        items.push(h('button', { type: 'button', id: 'report-toggle', class: 'ghost', onclick: toggleReport },
          reportFrameWrap.firstChild ? 'Hide report' : 'Show report here'));
      }
      if (!items.length) items.push(h('span', { class: 'muted' }, TERMINAL.has(job.state) ? 'No model or report.' : 'Available when the job has finished.'));
      setChildren(outputsEl, ...items);
    }

    async function toggleReport() {
      if (reportFrameWrap.firstChild) {
        reportFrameWrap.replaceChildren();
      } else {
        let src = `${base}/report`;
        if (getToken()) {
          try { src = await fetchBlobUrl(src); } catch (err) { toast(`Report: ${err.message}`, 'error'); return; }
        }
        setChildren(reportFrameWrap, h('iframe', { id: 'report-frame', src, sandbox: '', title: 'evaluation report' }));
      }
      renderOutputs();
    }

    async function loadFiles() {
      try {
        const data = await api(`${base}/files`, { signal });
        if (!ctx.alive) return;
        const files = data.files || [];
        setChildren(filesEl, files.length
          ? h('table', { class: 'table compact files' }, h('tbody', {}, files.map((f) => h('tr', {},
            h('td', {}, apiLink(f.path, `${base}/files/${filePath(f.path)}`, { cls: 'file-link mono',
              filename: String(f.path).split('/').pop() })),
            h('td', { class: 'num muted' }, fmtBytes(f.size))))))
          : h('div', { class: 'muted' }, 'No files yet.'));
      } catch (err) {
        if (!isAbort(err)) setChildren(filesEl, h('div', { class: 'muted' }, `Files: ${err.message}`));
      }
    }

    function rowKey(row) {
      return row.seq != null ? `#${row.seq}` : `${row.time}|${row.stage}|${row.epoch}|${row.step}`;
    }

    function addHistory(row) {
      const key = rowKey(row);
      if (historyKeys.has(key)) return;
      historyKeys.add(key);
      history.push(row);
      scheduleCharts();
    }

    async function loadMetrics() {
      try {
        const data = await api(`${base}/metrics`, { signal });
        if (!ctx.alive) return;
        history = [];
        historyKeys = new Set();
        (data.history || []).forEach(addHistory);
        scheduleCharts();
      } catch (err) {
        if (!isAbort(err)) setChildren(lossChart, h('div', { class: 'chart-empty' }, `Metrics: ${err.message}`));
      }
    }

    function scheduleCharts() {
      if (chartFrame) return;
      chartFrame = requestAnimationFrame(() => { chartFrame = 0; drawCharts(); });
    }

    function drawCharts() {
      const x = xKey(history);
      const keys = metricKeys(history);
      const make = (list) => list.map((k, i) => ({ name: k, color: COLORS[i % COLORS.length], points: seriesOf(history, k, x) }));
      const losses = keys.filter(isLoss);
      const aux = keys.filter((k) => !isLoss(k) && isAux(k));
      const others = keys.filter((k) => !isLoss(k) && !isAux(k));
      const xLabel = x || 'event';
      lineChart(lossChart, make(losses), { xLabel, title: 'loss', empty: 'No loss values yet.' });
      lineChart(metricChart, make(others), { xLabel, title: 'metrics', empty: 'No metrics yet.' });
      otherCard.hidden = !aux.length;
      if (aux.length) {
        const chosen = aux.includes(otherKey.value) ? otherKey.value : aux[0];
        if ([...otherKey.options].map((o) => o.value).join() !== aux.join()) {
          setChildren(otherKey, aux.map((k) => h('option', { value: k }, k)));
        }
        otherKey.value = chosen;
        lineChart(otherChart, [{ name: chosen, color: COLORS[9], points: seriesOf(history, chosen, x) }],
          { xLabel, title: chosen });
      }
    }

    function appendLog(line) {
      if (typeof line.seq === 'number') {
        if (line.seq <= lastSeq) return;
        lastSeq = line.seq;
      }
      const nearBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
      const time = line.time ? new Date(line.time * 1000).toLocaleTimeString() : '';
      const text = String(line.text ?? '');
      const cls = /error|traceback|exception/i.test(text) ? 'line err' : /warn/i.test(text) ? 'line warn' : 'line';
      logEl.append(h('div', { class: cls, 'data-seq': line.seq }, h('span', { class: 'ts' }, time), h('span', { class: 'tx' }, text)));
      while (logEl.childElementCount > LOG_MAX_LINES) logEl.firstChild.remove();
      if (nearBottom) logEl.scrollTop = logEl.scrollHeight;
    }

    async function loadTail() {
      const data = await api(`${base}/logs?tail=200`, { signal });
      (data.lines || []).forEach(appendLog);
      return data.next;
    }

    /** The log: the last 200 lines, then the stream; reconnects after a drop, ends at `event: end`. */
    async function follow() {
      if (following) return;
      following = true;
      let delay = 1000;
      let first = true;
      try {
        while (ctx.alive) {
          let ended = false;
          try {
            logStatus.textContent = first ? 'loading…' : 'reconnecting…';
            const after = await loadTail();
            if (!first) {
              api(base, { signal }).then((j) => ctx.alive && renderJob(j)).catch(() => {});
              loadMetrics();
            }
            first = false;
            const response = await fetch(`${base}/logs/stream?after=${enc(after ?? '')}`, {
              headers: authHeaders({ Accept: 'text/event-stream' }), signal,
            });
            if (response.status === 401) {
              askForToken('The saved token was refused. Enter a valid token.');
              logStatus.textContent = 'token needed';
              return;
            }
            if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
            logStatus.textContent = 'live';
            logStatus.className = 'live small-text';
            delay = 1000;
            await readSse(response, (ev) => {
              if (ev.event === 'log' && ev.data && typeof ev.data === 'object') appendLog(ev.data);
              else if (ev.event === 'log') appendLog({ text: String(ev.data ?? '') });
              else if (ev.event === 'state' && ev.data && ev.data.task_id) renderJob(ev.data);
              else if (ev.event === 'metrics' && ev.data && typeof ev.data === 'object') addHistory(ev.data);
              else if (ev.event === 'end') { ended = true; return false; }
              return true;
            }, signal);
          } catch (err) {
            if (isAbort(err) || !ctx.alive) return;
          }
          if (!ctx.alive) return;
          logStatus.className = 'muted small-text';
          if (ended) {
            logStatus.textContent = 'job finished — log complete';
            const final = await api(base, { signal });
            if (ctx.alive) renderJob(final);
            await loadMetrics();
            loadFiles();
            return;
          }
          logStatus.textContent = `connection lost — retrying in ${Math.round(delay / 1000)} s`;
          await sleep(delay);
          delay = Math.min(delay * 2, 10000);
        }
      } catch (err) {
        if (!isAbort(err) && ctx.alive) logStatus.textContent = `log: ${err.message}`;
      } finally {
        following = false;
      }
    }

    async function act(button, path, method = 'POST') {
      button.disabled = true;
      try {
        const result = await api(`${base}/${path}`, { method, signal });
        if (ctx.alive) renderJob(result);
        return result;
      } catch (err) {
        if (!isAbort(err)) toast(`${path} failed: ${err.detail || err.message}`, 'error');
        if (ctx.alive) renderJob(job);
        return null;
      }
    }

    stopButton.addEventListener('click', () => act(stopButton, 'stop'));
    resumeButton.addEventListener('click', async () => {
      const result = await act(resumeButton, 'resume');
      if (result) follow();
    });
    deleteButton.addEventListener('click', async () => {
      if (!window.confirm(`Delete ${jobLabel(job)} and its files?`)) return;
      deleteButton.disabled = true;
      try {
        await api(base, { method: 'DELETE', signal });
        toast(`Deleted ${jobLabel(job)}`);
        location.hash = '#/jobs';
      } catch (err) {
        if (!isAbort(err)) toast(`Delete failed: ${err.detail || err.message}`, 'error');
        deleteButton.disabled = ACTIVE.has(job.state);
      }
    });

    view.append(
      h('div', { class: 'page-head' },
        h('div', {}, h('div', { class: 'title-row' }, nameEl, stateEl), metaEl),
        h('div', { class: 'actions' }, stopButton, resumeButton, deleteButton,
          h('a', { href: '#/jobs', class: 'btn ghost' }, 'All jobs'))),
      h('section', { class: 'card' }, progressWrap, progressTextEl, errorEl),
      h('div', { class: 'charts' },
        h('section', { class: 'card' }, h('h2', {}, 'Loss'), lossChart),
        h('section', { class: 'card' }, h('h2', {}, 'Metrics'), metricChart),
        otherCard),
      h('div', { class: 'two-col' },
        h('section', { class: 'card' }, h('h2', {}, 'Latest metrics'), metricsEl),
        h('section', { class: 'card' }, h('h2', {}, 'Outputs'), outputsEl, h('h3', {}, 'Files'), filesEl)),
      predictionsCard,
      resultCard,
      reportFrameWrap,
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Log'), logStatus), logEl));
    renderJob(job);
    drawCharts();
    loadMetrics();
    loadFiles();
    follow();
    // a fallback in case the stream is quiet: the job (ETA, state) every few seconds while it is active
    ctx.every(() => {
      if (!ACTIVE.has(job.state)) return;
      api(base, { signal }).then((j) => { if (ctx.alive) renderJob(j); }).catch(() => {});
    }, 5000);
  }

  // ------------------------------------------------------------------ #/compare?ids=a,b

  async function compareView(ctx, view, ids) {
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

  // ------------------------------------------------------------------ boot

  window.addEventListener('hashchange', route);
  window.addEventListener('unhandledrejection', (event) => {
    if (isAbort(event.reason)) event.preventDefault();
  });
  setupTokenDialog();
  loadServerInfo();
  route();
})();
