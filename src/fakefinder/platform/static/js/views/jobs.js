/* #/jobs: every job with its state and progress, filters, and a selection to compare.
 */
import { api, getKinds, isAbort } from '../api.js';
import { ACTIVE, STATES, badge, enc, fmtDuration, fmtTime, h, jobLabel, progressBar, progressText, setChildren } from '../dom.js';

// ------------------------------------------------------------------ #/jobs

export const jobsMemory = { state: '', kind: '', selected: new Set() };

export async function jobsView(ctx, view) {
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
      h('td', { class: 'small-text owner' }, job.owner || 'admins'),
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
          h('th', {}, 'Model type'), h('th', {}, 'Owner'), h('th', {}, 'State'), h('th', {}, 'Progress'), h('th', {}, 'Created'),
          h('th', {}, 'Duration'))),
        tbody),
      empty));
  await refresh();
  ctx.every(refresh, 3000);
}
