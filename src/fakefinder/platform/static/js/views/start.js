/* #/start: a form per model kind (its defaults, a dataset picker, ZIP upload, extra settings) with a live
 * preview of the config it resolves to.
 */
import { api, getKinds, isAbort } from '../api.js';
import { $, SHORT_LABELS, enc, fmtBytes, h, s, setChildren } from '../dom.js';

// ------------------------------------------------------------------ #/start

export const startMemory = { kind: null, name: '', extra: '' };

/** `key: value` lines (or key=value), or one JSON object -> an object. Throws with the line at fault. */
export function parseExtra(text) {
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

export function parseScalar(text) {
  const t = text.trim();
  if (t === '') return '';
  if (/^(true|false|null)$/i.test(t) && t !== t.toLowerCase()) return JSON.parse(t.toLowerCase());
  if (t === '~' || t === 'None') return null;
  if (/^(yes|no)$/i.test(t)) return /^yes$/i.test(t);
  try { return JSON.parse(t); } catch (_) { /* a plain string */ }
  if (/^'.*'$/.test(t)) return t.slice(1, -1);
  return t;
}

export function formatSetting(value) {
  if (typeof value === 'string') {
    return value === '' || parseScalar(value) !== value ? JSON.stringify(value) : value;
  }
  return JSON.stringify(value);
}

export function flatten(tree, prefix = '', out = []) {
  for (const [k, v] of Object.entries(tree || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) flatten(v, key, out);
    else out.push([key, v]);
  }
  return out;
}

/** Dotted keys whose value in `config` differs from `defaults`. */
export function changedKeys(defaults, config) {
  const base = new Map(flatten(defaults).map(([k, v]) => [k, JSON.stringify(v)]));
  return new Set(flatten(config).filter(([k, v]) => base.get(k) !== JSON.stringify(v)).map(([k]) => k));
}

/** YAML text as one element per line; lines of the keys in `marked` get class "changed". */
export function yamlLines(yamlText, marked) {
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

export function splitCounts(ds) {
  return Object.entries(ds.splits || {}).map(([split, classes]) => {
    const total = Object.values(classes || {}).reduce((a, b) => a + (Number(b) || 0), 0);
    return [split, total, classes || {}];
  });
}

export function datasetLabel(ds) {
  const counts = splitCounts(ds).map(([split, total]) => `${split} ${total}`).join(' · ');
  return `${ds.name} — ${ds.layout || 'unknown layout'}${counts ? ` · ${counts}` : ''}`;
}

export async function startView(ctx, view) {
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
