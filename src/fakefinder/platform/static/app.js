/* The platform's web UI: a single page that talks to the REST API only (no framework, no build step).
 *
 * Routes (hash): #/start, #/jobs, #/jobs/<id>, #/compare?ids=a,b
 * Each view gets a ViewContext: its timers, streams and pending requests end when the route changes.
 */
import { api, isAbort, setupTokenDialog } from './js/api.js';
import { $, h } from './js/dom.js';
import { compareView } from './js/views/compare.js';
import { jobView } from './js/views/job.js';
import { jobsView } from './js/views/jobs.js';
import { startView } from './js/views/start.js';

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

// ------------------------------------------------------------------ boot

window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (event) => {
  if (isAbort(event.reason)) event.preventDefault();
});
setupTokenDialog(() => {
  loadServerInfo();
  route();
});
loadServerInfo();
route();
