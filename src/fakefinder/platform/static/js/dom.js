/* Constants, DOM helpers, a toast and value formatting the views share.
 */

export const TOKEN_KEY = 'fakefinder.token';
export const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'];
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);
export const ACTIVE = new Set(['queued', 'running']);
export const META_KEYS = new Set(['seq', 'stage', 'time', 'epoch', 'epochs', 'step', 'global_step']);
export const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d',
  '#9333ea', '#475569'];
export const SHORT_LABELS = {
  base_model: 'Base model', dataset_path: 'Dataset', epochs: 'Epochs', batch_size: 'Batch size',
  learning_rate: 'Learning rate', max_steps: 'Max steps',
};
export const LOG_MAX_LINES = 3000;

// ------------------------------------------------------------------ DOM helpers

/** h('div', {class: 'x', onclick: fn}, child, [children], 'text') -> an element. */
export function h(tag, attrs, ...children) {
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

export const SVG_NS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v);
    else el.setAttribute(key, String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el` (skipping null / false, flattening arrays). */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const enc = encodeURIComponent;
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function toast(message, kind = 'info') {
  const el = $('#toast');
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

// ------------------------------------------------------------------ formatting

export function fmtNum(v, digits = 4) {
  if (typeof v !== 'number') return v == null ? '—' : String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}

export function fmtDuration(sec) {
  if (sec == null || !Number.isFinite(sec)) return '';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${sec % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(unix) {
  if (!unix) return '—';
  const d = new Date(unix * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

export function fmtBytes(n) {
  if (n == null) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function jobLabel(job) {
  return job.name || job.task_id;
}

export function badge(state) {
  return h('span', { class: `badge state-${state || 'unknown'}`, 'data-state': state }, state || 'unknown');
}

export function progressBar(job, id) {
  const p = job.progress || {};
  let fraction = typeof p.fraction === 'number' ? p.fraction : null;
  if (job.state === 'succeeded') fraction = 1;
  const pct = fraction == null ? 0 : Math.max(0, Math.min(1, fraction)) * 100;
  return h('div', { class: `progress state-${job.state}`, id, role: 'progressbar', 'aria-valuemin': 0,
    'aria-valuemax': 100, 'aria-valuenow': Math.round(pct) },
    h('div', { class: 'progress-fill', style: `width:${pct.toFixed(1)}%` }));
}

export function progressText(job) {
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
