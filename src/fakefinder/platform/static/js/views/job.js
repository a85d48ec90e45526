/* #/jobs/<id>: one job live: its progress, metric chart, log stream, report, downloads, stop and resume;
 * an evaluation's heatmaps, a predict job's overlays, a trained model's predict form.
 */
import { api, apiLink, askForToken, authHeaders, fetchBlobUrl, filePath, getToken, isAbort } from '../api.js';
import { isAux, isLoss, lineChart, metricKeys, seriesOf, xKey } from '../chart.js';
import { ACTIVE, COLORS, LOG_MAX_LINES, TERMINAL, enc, fmtBytes, fmtDuration, fmtNum, fmtTime, h, jobLabel, progressBar, progressText, setChildren, sleep, toast } from '../dom.js';
import { drawnHeatmaps, heatmapsPanel, predictPanel } from './heatmaps.js';
import { sweepPanel } from './sweep.js';

// ------------------------------------------------------------------ #/jobs/<id>

/** Reads one SSE response: calls onEvent({event, data, id}) per frame; resolves when the body ends. */
export async function readSse(response, onEvent, signal) {
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

export function parseFrame(frame) {
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

/** The loss, metric and run-statistics charts over the job's metric rows (deduplicated, redrawn once a frame). */
function chartsPanel(ctx, base) {
  let history = [];
  let keys = new Set();
  let frame = 0;
  const lossChart = h('div', { id: 'chart', 'data-testid': 'chart' });
  const metricChart = h('div', { id: 'chart-metrics', 'data-testid': 'chart-metrics' });
  const otherChart = h('div', { id: 'chart-other', 'data-testid': 'chart-other' });
  const otherKey = h('select', { id: 'chart-other-key', class: 'inline-select', 'aria-label': 'value to plot' });
  const otherCard = h('section', { class: 'card', hidden: true },
    h('div', { class: 'card-head' }, h('h2', {}, 'Run statistics'), otherKey), otherChart);
  const el = h('div', { class: 'charts' },
    h('section', { class: 'card' }, h('h2', {}, 'Loss'), lossChart),
    h('section', { class: 'card' }, h('h2', {}, 'Metrics'), metricChart),
    otherCard);

  function draw() {
    const x = xKey(history);
    const names = metricKeys(history);
    const make = (list) => list.map((k, i) => ({ name: k, color: COLORS[i % COLORS.length], points: seriesOf(history, k, x) }));
    const aux = names.filter((k) => !isLoss(k) && isAux(k));
    const xLabel = x || 'event';
    lineChart(lossChart, make(names.filter(isLoss)), { xLabel, title: 'loss', empty: 'No loss values yet.' });
    lineChart(metricChart, make(names.filter((k) => !isLoss(k) && !isAux(k))), { xLabel, title: 'metrics', empty: 'No metrics yet.' });
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

  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; draw(); });
  }

  function add(row) {
    const key = row.seq != null ? `#${row.seq}` : `${row.time}|${row.stage}|${row.epoch}|${row.step}`;
    if (keys.has(key)) return;
    keys.add(key);
    history.push(row);
    schedule();
  }

  /** Every stored row again (after a reconnect or when the job ends). */
  async function load() {
    try {
      const data = await api(`${base}/metrics`, { signal: ctx.signal });
      if (!ctx.alive) return;
      history = [];
      keys = new Set();
      (data.history || []).forEach(add);
      schedule();
    } catch (err) {
      if (!isAbort(err)) setChildren(lossChart, h('div', { class: 'chart-empty' }, `Metrics: ${err.message}`));
    }
  }

  otherKey.addEventListener('change', draw);
  return { el, add, load, draw };
}

/** The job's log: the last 200 lines, then the live stream, which also carries state and metric rows. */
function logPanel(ctx, base, { onState, onMetrics, onReconnect, onEnd }) {
  const signal = ctx.signal;
  const logEl = h('div', { id: 'log', 'data-testid': 'log', class: 'log', tabindex: 0 });
  const status = h('span', { id: 'log-status', class: 'muted small-text' });
  const el = h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Log'), status), logEl);
  let lastSeq = -Infinity;
  let following = false;

  function append(line) {
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
    (data.lines || []).forEach(append);
    return data.next;
  }

  /** One connection: true when the job's stream ended (`event: end`), false when it dropped. */
  async function stream(after, onOpen) {
    let ended = false;
    const response = await fetch(`${base}/logs/stream?after=${enc(after ?? '')}`, {
      headers: authHeaders({ Accept: 'text/event-stream' }), signal,
    });
    if (response.status === 401) {
      askForToken('The saved token was refused. Enter a valid token.');
      const error = new Error('token needed');
      error.tokenNeeded = true;
      throw error;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    status.textContent = 'live';
    status.className = 'live small-text';
    onOpen();
    await readSse(response, (ev) => {
      if (ev.event === 'log' && ev.data && typeof ev.data === 'object') append(ev.data);
      else if (ev.event === 'log') append({ text: String(ev.data ?? '') });
      else if (ev.event === 'state' && ev.data && ev.data.task_id) onState(ev.data);
      else if (ev.event === 'metrics' && ev.data && typeof ev.data === 'object') onMetrics(ev.data);
      else if (ev.event === 'end') { ended = true; return false; }
      return true;
    }, signal);
    return ended;
  }

  /** Follows the job until its stream ends; reconnects after a drop, backing off up to 10 s. */
  async function follow() {
    if (following) return;
    following = true;
    let delay = 1000;
    let first = true;
    try {
      while (ctx.alive) {
        let ended = false;
        try {
          status.textContent = first ? 'loading…' : 'reconnecting…';
          const after = await loadTail();
          if (!first) onReconnect();
          first = false;
          ended = await stream(after, () => { delay = 1000; });
        } catch (err) {
          if (isAbort(err) || !ctx.alive) return;
          if (err.tokenNeeded) { status.textContent = 'token needed'; return; }
        }
        if (!ctx.alive) return;
        status.className = 'muted small-text';
        if (ended) {
          status.textContent = 'job finished — log complete';
          await onEnd();
          return;
        }
        status.textContent = `connection lost — retrying in ${Math.round(delay / 1000)} s`;
        await sleep(delay);
        delay = Math.min(delay * 2, 10000);
      }
    } catch (err) {
      if (!isAbort(err) && ctx.alive) status.textContent = `log: ${err.message}`;
    } finally {
      following = false;
    }
  }

  return { el, follow };
}

/** The job's files, each a download link. */
function filesPanel(ctx, base) {
  const el = h('div', { id: 'files', 'data-testid': 'files' });
  async function load() {
    try {
      const data = await api(`${base}/files`, { signal: ctx.signal });
      if (!ctx.alive) return;
      const files = data.files || [];
      setChildren(el, files.length
        ? h('table', { class: 'table compact files' }, h('tbody', {}, files.map((f) => h('tr', {},
          h('td', {}, apiLink(f.path, `${base}/files/${filePath(f.path)}`, { cls: 'file-link mono',
            filename: String(f.path).split('/').pop() })),
          h('td', { class: 'num muted' }, fmtBytes(f.size))))))
        : h('div', { class: 'muted' }, 'No files yet.'));
    } catch (err) {
      if (!isAbort(err)) setChildren(el, h('div', { class: 'muted' }, `Files: ${err.message}`));
    }
  }
  return { el, load };
}

/** The model download, the report link and the report shown in a sandboxed frame. */
function outputsPanel(base) {
  const el = h('div', { id: 'outputs', class: 'outputs' });
  const frameWrap = h('div', { id: 'report-frame-wrap' });
  let job = null;

  function render(next) {
    job = next;
    const files = job.files || {};
    const label = jobLabel(job).replace(/[^\w.-]+/g, '_');
    const items = [];
    if (files.artifact) {
      items.push(apiLink('Download model (ZIP)', `${base}/artifact`, { id: 'artifact-link', filename: `${label}-model.zip` }));
    }
    if (files.report) {
      items.push(apiLink('Open report', `${base}/report`, { id: 'report-link', open: true }));
      items.push(h('button', { type: 'button', id: 'report-toggle', class: 'ghost', onclick: toggleReport },
        frameWrap.firstChild ? 'Hide report' : 'Show report here'));
    }
    if (!items.length) items.push(h('span', { class: 'muted' }, TERMINAL.has(job.state) ? 'No model or report.' : 'Available when the job has finished.'));
    setChildren(el, ...items);
  }

  async function toggleReport() {
    if (frameWrap.firstChild) {
      frameWrap.replaceChildren();
    } else {
      let src = `${base}/report`;
      if (getToken()) {
        try { src = await fetchBlobUrl(src); } catch (err) { toast(`Report: ${err.message}`, 'error'); return; }
      }
      setChildren(frameWrap, h('iframe', { id: 'report-frame', src, sandbox: '', title: 'evaluation report' }));
    }
    render(job);
  }

  return { el, frameWrap, render };
}

/** The latest metrics table; a job's predictions (evaluate/predict jobs) with the heatmaps it drew, or
 * its other result. */
function resultPanels(base) {
  const metricsEl = h('div', { id: 'metrics', 'data-testid': 'metrics' });
  const predictionsCard = h('section', { class: 'card', id: 'predictions-card', hidden: true });
  const resultCard = h('section', { class: 'card', id: 'result-card', hidden: true });
  let drawn = { key: null, el: null }; // the heatmaps, drawn once (not again on every state event)

  function render(job) {
    const entries = Object.entries(job.metrics || {});
    setChildren(metricsEl, entries.length
      ? h('table', { class: 'table compact' }, h('tbody', {}, entries.map(([k, v]) => h('tr', {},
        h('th', {}, k), h('td', { class: 'num', 'data-metric': k }, fmtNum(v))))))
      : h('div', { class: 'muted' }, 'No metrics yet.'));
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
            h('td', { class: 'explanation' }, p.explanation || ''))))),
        heatmapsOf(result));
    }
    const other = result && !predictions && Object.keys(result).length ? result : null;
    resultCard.hidden = !other;
    if (other) {
      setChildren(resultCard, h('details', {}, h('summary', {}, 'Result'),
        h('pre', { class: 'code', id: 'job-result' }, JSON.stringify(other, null, 2))));
    }
  }

  function heatmapsOf(result) {
    const key = JSON.stringify([result.heatmaps, result.heatmap_check]);
    if (drawn.key !== key) drawn = { key, el: drawnHeatmaps(base, result) };
    return drawn.el;
  }

  return { metricsEl, predictionsCard, resultCard, render };
}

/** The job's name, state, details, progress and error, with its stop / resume / delete buttons. */
function headerPanel(ctx, base, act) {
  const nameEl = h('h1', { id: 'job-name' });
  const stateEl = h('span', { id: 'job-state', 'data-testid': 'job-state', class: 'badge' });
  const metaEl = h('div', { id: 'job-meta', class: 'muted small-text' });
  const stopButton = h('button', { id: 'stop', 'data-testid': 'stop', type: 'button' }, 'Stop');
  const resumeButton = h('button', { id: 'resume', 'data-testid': 'resume', type: 'button' }, 'Resume');
  const deleteButton = h('button', { id: 'delete', 'data-testid': 'delete', type: 'button', class: 'danger' }, 'Delete');
  const progressWrap = h('div', { id: 'progress-wrap' });
  const progressTextEl = h('div', { id: 'progress-text', 'data-testid': 'progress-text', class: 'small-text' });
  const errorEl = h('pre', { id: 'job-error', 'data-testid': 'job-error', class: 'alert error code', hidden: true });
  let job = null;

  function render(next) {
    job = next;
    nameEl.textContent = jobLabel(job);
    stateEl.textContent = job.state + (job.stop_requested && ACTIVE.has(job.state) ? ' (stopping)' : '');
    stateEl.className = `badge state-${job.state}`;
    stateEl.dataset.state = job.state;
    setChildren(metaEl,
      [job.type, job.kind, `by ${job.owner || 'admins'}`, job.device && `on ${job.device}`,
        job.attempts > 1 && `attempt ${job.attempts}`]
        .filter(Boolean).join(' · '),
      h('span', { class: 'mono' }, ` · ${job.task_id}`),
      job.parent ? [' · a trial of ', h('a', { href: `#/jobs/${enc(job.parent)}`, id: 'job-parent' }, 'its sweep')] : null,
      ` · created ${fmtTime(job.created_at)}`,
      job.started_at ? ` · ran ${fmtDuration((job.finished_at || Date.now() / 1000) - job.started_at)}` : '');
    setChildren(progressWrap, progressBar(job, 'progress'));
    progressTextEl.textContent = progressText(job) || (job.state === 'running' ? 'starting…' : '');
    stopButton.disabled = !ACTIVE.has(job.state) || !!job.stop_requested;
    resumeButton.disabled = !job.resumable || ACTIVE.has(job.state);
    deleteButton.disabled = ACTIVE.has(job.state);
    errorEl.hidden = !job.error;
    errorEl.textContent = job.error || '';
  }

  stopButton.addEventListener('click', () => act(stopButton, 'stop'));
  resumeButton.addEventListener('click', () => act(resumeButton, 'resume'));
  deleteButton.addEventListener('click', async () => {
    if (!window.confirm(`Delete ${jobLabel(job)} and its files?`)) return;
    deleteButton.disabled = true;
    try {
      await api(base, { method: 'DELETE', signal: ctx.signal });
      toast(`Deleted ${jobLabel(job)}`);
      location.hash = '#/jobs';
    } catch (err) {
      if (!isAbort(err)) toast(`Delete failed: ${err.detail || err.message}`, 'error');
      deleteButton.disabled = ACTIVE.has(job.state);
    }
  });

  const head = h('div', { class: 'page-head' },
    h('div', {}, h('div', { class: 'title-row' }, nameEl, stateEl), metaEl),
    h('div', { class: 'actions' }, stopButton, resumeButton, deleteButton,
      h('a', { href: '#/jobs', class: 'btn ghost' }, 'All jobs')));
  const progress = h('section', { class: 'card' }, progressWrap, progressTextEl, errorEl);
  return { head, progress, render };
}

export async function jobView(ctx, view, id) {
  const signal = ctx.signal;
  const base = `/api/training/${enc(id)}`;
  let job = await api(base, { signal });
  if (!ctx.alive) return;

  const header = headerPanel(ctx, base, act);
  const charts = chartsPanel(ctx, base);
  const files = filesPanel(ctx, base);
  const outputs = outputsPanel(base);
  const results = resultPanels(base);
  const heatmaps = heatmapsPanel(ctx, base, id);
  const predict = predictPanel(ctx, id);
  const sweep = job.type === 'sweep' ? sweepPanel(ctx, id) : null;
  const log = logPanel(ctx, base, {
    onState: renderJob,
    onMetrics: charts.add,
    onReconnect() {
      api(base, { signal }).then((j) => ctx.alive && renderJob(j)).catch(() => {});
      charts.load();
    },
    async onEnd() {
      const final = await api(base, { signal });
      if (ctx.alive) renderJob(final);
      await charts.load();
      files.load();
    },
  });

  function renderJob(next) {
    const wasActive = ACTIVE.has(job.state);
    job = next;
    header.render(job);
    results.render(job);
    outputs.render(job);
    heatmaps.load(job);
    predict.render(job);
    if (sweep) sweep.load();
    if (wasActive && TERMINAL.has(job.state)) {
      files.load();
      charts.load();
    }
  }

  /** A stop or resume request; a resumed job is followed again. */
  async function act(button, path) {
    button.disabled = true;
    try {
      const result = await api(`${base}/${path}`, { method: 'POST', signal });
      if (ctx.alive) renderJob(result);
      if (path === 'resume') log.follow();
      return result;
    } catch (err) {
      if (!isAbort(err)) toast(`${path} failed: ${err.detail || err.message}`, 'error');
      if (ctx.alive) renderJob(job);
      return null;
    }
  }

  view.append(
    header.head,
    header.progress,
    sweep ? sweep.el : charts.el, // a sweep has no metric rows of its own: its trials do
    h('div', { class: 'two-col' },
      h('section', { class: 'card' }, h('h2', {}, 'Latest metrics'), results.metricsEl),
      h('section', { class: 'card' }, h('h2', {}, 'Outputs'), outputs.el, h('h3', {}, 'Files'), files.el)),
    predict.el,
    results.predictionsCard,
    heatmaps.el,
    results.resultCard,
    outputs.frameWrap,
    log.el);
  renderJob(job);
  charts.draw();
  charts.load();
  files.load();
  log.follow();
  // a fallback in case the stream is quiet: the job (ETA, state) every few seconds while it is active
  ctx.every(() => {
    if (!ACTIVE.has(job.state)) return;
    api(base, { signal }).then((j) => { if (ctx.alive) renderJob(j); }).catch(() => {});
  }, 5000);
}
