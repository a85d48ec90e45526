/* #/start: a form per model kind (its defaults, a dataset picker, ZIP upload, extra settings) with a live
 * preview of the config it resolves to.
 */
import { api, getKinds, isAbort } from '../api.js';
import { SHORT_LABELS, enc, fmtBytes, h, setChildren } from '../dom.js';

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

/** The dataset picker: the datasets that fit the kind, 'other path…', and what the chosen one holds. */
function datasetPicker(state, onChange) {
  const select = h('select', { id: 'dataset', 'data-testid': 'dataset', name: 'dataset_path' });
  const custom = h('input', { id: 'dataset-custom', type: 'text', hidden: true,
    placeholder: 'a path inside a dataset root' });
  const info = h('div', { id: 'dataset-info', class: 'hint' });
  const el = h('div', { class: 'dataset-picker' }, select, custom, info);

  function fill(preferred) {
    const kind = state.kind;
    const fitting = state.datasets.filter((d) => (d.kinds || []).includes(kind.name));
    const previous = preferred ?? (select.value === '__custom__' ? null : select.value);
    setChildren(select,
      fitting.length ? null : h('option', { value: '', disabled: true }, `no dataset fits ${kind.name} — upload one`),
      fitting.map((d) => h('option', { value: d.name, title: d.path }, datasetLabel(d))),
      h('option', { value: '__custom__' }, 'other path…'),
    );
    const wanted = kind.defaults ? kind.defaults.dataset_path : null;
    const match = (v) => v != null && fitting.find((d) => d.name === v || d.path === v);
    const chosen = match(previous) || match(wanted);
    if (chosen) select.value = chosen.name;
    else if (wanted) { select.value = '__custom__'; custom.value = wanted; }
    else if (fitting.length) select.value = fitting[0].name;
    else select.value = '__custom__';
    showInfo();
  }

  function showInfo() {
    const isCustom = select.value === '__custom__';
    custom.hidden = !isCustom;
    const ds = state.datasets.find((d) => d.name === select.value);
    if (!ds) {
      setChildren(info, isCustom ? 'Relative to a dataset root, or absolute inside one.' : '');
      return;
    }
    const rows = splitCounts(ds).map(([split, total, classes]) => h('li', {},
      h('b', {}, split), ` ${total}: `,
      Object.entries(classes).map(([c, n]) => `${c} ${n}`).join(', ')));
    setChildren(info,
      h('div', {}, `${ds.layout || 'unknown layout'} · ${ds.files ?? '?'} files · ${fmtBytes(ds.bytes)} · fits: ${(ds.kinds || []).join(', ')}`),
      rows.length ? h('ul', { class: 'splits' }, rows) : null,
      ds.note ? h('div', { class: 'note' }, ds.note) : null,
    );
  }

  const value = () => (select.value === '__custom__' ? custom.value.trim() : select.value);
  select.addEventListener('change', () => { showInfo(); onChange(); });
  return { el, select, fill, value };
}

/** The ZIP upload: the new dataset is listed and, when it fits the kind, picked. */
function uploadBox(ctx, state, picker, onUploaded) {
  const file = h('input', { id: 'upload-file', 'data-testid': 'upload-file', type: 'file', accept: '.zip,application/zip' });
  const name = h('input', { id: 'upload-name', type: 'text', placeholder: 'name (default: the file name)' });
  const button = h('button', { id: 'upload', type: 'button' }, 'Upload ZIP');
  const status = h('div', { id: 'upload-status', class: 'hint' });

  async function upload() {
    const chosen = file.files && file.files[0];
    if (!chosen) {
      status.textContent = 'Choose a ZIP file first.';
      return;
    }
    const label = name.value.trim() || chosen.name.replace(/\.zip$/i, '').replace(/[^\w.-]+/g, '_');
    const form = new FormData();
    form.append('file', chosen);
    form.append('name', label);
    button.disabled = true;
    status.textContent = `Uploading ${chosen.name} (${fmtBytes(chosen.size)})…`;
    try {
      const ds = await api('/api/datasets', { method: 'POST', form, signal: ctx.signal });
      const refreshed = await api('/api/datasets', { signal: ctx.signal });
      state.datasets = refreshed.datasets || [];
      const kind = state.kind;
      const fits = (ds.kinds || []).includes(kind.name);
      picker.fill(fits ? ds.name : undefined);
      status.textContent = `Uploaded "${ds.name}" (${ds.layout || 'unknown layout'}, ${ds.files ?? '?'} files)` +
        (fits ? '' : ` — it does not fit ${kind.name} (fits: ${(ds.kinds || []).join(', ') || 'none'})`);
      file.value = '';
      name.value = '';
      onUploaded();
    } catch (err) {
      if (!isAbort(err)) status.textContent = `Upload failed: ${err.detail || err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener('click', upload);
  const el = h('details', { class: 'upload', id: 'upload-box' },
    h('summary', {}, 'Upload a dataset (ZIP)'),
    h('div', { class: 'upload-row' }, file, name, button),
    status);
  return { el, quiet: [file, name] };
}

/** The kind's short fields (its defaults; the dataset picker for `dataset_path`), each with its error line. */
function shortFieldsOf(kind, picker) {
  const el = h('div', { id: 'short-fields', class: 'fields' });
  const inputs = {}; // short key -> input element
  const errors = {}; // short key -> error element
  const defaults = kind.defaults || {};
  const dotted = kind.short_form || {};
  for (const key of Object.keys(dotted)) {
    const error = h('div', { class: 'field-error', id: `error-${key}` });
    errors[key] = error;
    let control;
    if (key === 'dataset_path') {
      control = picker.el;
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
    el.append(h('div', { class: 'field' },
      h('label', { for: key === 'dataset_path' ? 'dataset' : `field-${key}` }, label,
        h('code', { class: 'dotted' }, dotted[key])),
      control, error));
  }
  return { el, inputs, errors };
}

/** Every setting of the kind, filterable; a click adds it to the extra settings. */
function settingsBrowser(state, onPick) {
  const filter = h('input', { type: 'search', placeholder: 'filter settings', id: 'settings-filter' });
  const list = h('div', { class: 'settings-list', id: 'settings-list' });
  function render() {
    const wanted = filter.value.trim().toLowerCase();
    const entries = flatten(state.kind.config).filter(([k]) => !wanted || k.toLowerCase().includes(wanted));
    setChildren(list, ...entries.slice(0, 300).map(([k, v]) => h('button', {
      type: 'button', class: 'setting', title: 'add to extra settings',
      onclick: () => onPick(`${k}: ${formatSetting(v)}`),
    }, h('code', {}, k), h('span', { class: 'muted' }, ` ${formatSetting(v)}`))));
    if (!entries.length) list.append(h('span', { class: 'muted' }, 'no match'));
  }
  filter.addEventListener('input', render);
  const el = h('details', { class: 'settings' }, h('summary', {}, `All settings of this model type`), filter, list);
  return { el, filter, render };
}

/** The resolved config of the form as it stands, refreshed 300 ms after the last edit. */
function previewPanel(ctx, state, form) {
  const preview = h('pre', { id: 'preview', 'data-testid': 'preview', class: 'code preview' }, '…');
  const status = h('span', { id: 'preview-status', class: 'muted small-text' });
  const onlyChanged = h('input', { type: 'checkbox', id: 'preview-changed', 'data-testid': 'preview-changed' });
  onlyChanged.addEventListener('change', () => preview.classList.toggle('only-changed', onlyChanged.checked));
  let seq = 0;
  let timer = null;

  function stale(err) {
    form.clearErrors();
    form.showError(err);
    preview.classList.add('stale');
    status.textContent = `not updated: ${form.errorText()}`;
    status.classList.add('error-text');
  }

  async function run() {
    const mine = ++seq;
    let body;
    try {
      body = form.buildBody();
    } catch (err) {
      stale(err);
      return;
    }
    status.textContent = 'updating…';
    status.classList.remove('error-text');
    try {
      const result = await api('/api/config/preview', { method: 'POST', body, signal: ctx.signal });
      if (mine !== seq || !ctx.alive) return;
      form.clearErrors();
      const changed = changedKeys(state.kind.config || {}, result.config || {});
      if (result.yaml) setChildren(preview, yamlLines(result.yaml, changed));
      else preview.textContent = JSON.stringify(result.config, null, 2);
      preview.classList.remove('stale');
      status.classList.remove('error-text');
      status.textContent = `resolved config · ${changed.size} setting${changed.size === 1 ? '' : 's'} differ from the defaults (marked)`;
    } catch (err) {
      if (isAbort(err) || mine !== seq) return;
      stale(err);
    }
  }

  function schedule() {
    form.remember();
    clearTimeout(timer);
    timer = setTimeout(run, 300);
  }

  const el = h('section', { class: 'card preview-card' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Config preview'),
      h('label', { class: 'toggle small-text', for: 'preview-changed' }, onlyChanged, 'changed only')),
    status, preview);
  return { el, run, schedule };
}

export async function startView(ctx, view) {
  view.append(h('h1', {}, 'New training run'), h('p', { class: 'muted' }, 'Loading…'));
  const [kinds, dsData] = await Promise.all([getKinds(ctx.signal), api('/api/datasets', { signal: ctx.signal })]);
  if (!ctx.alive) return;
  view.replaceChildren();
  if (!kinds.length) {
    view.append(h('div', { class: 'alert error' }, 'The server lists no model types.'));
    return;
  }
  const state = { kind: kinds.find((k) => k.name === startMemory.kind) || kinds[0], datasets: dsData.datasets || [] };

  const kindSelect = h('select', { id: 'model-type', 'data-testid': 'model-type', name: 'model_type' },
    kinds.map((k) => h('option', { value: k.name }, k.name)));
  kindSelect.value = state.kind.name;
  const kindDescription = h('p', { id: 'kind-description', class: 'hint' });
  const kindError = h('div', { class: 'field-error', id: 'error-model_type' });
  const nameInput = h('input', { id: 'name', 'data-testid': 'name', type: 'text', placeholder: 'optional label',
    value: startMemory.name, autocomplete: 'off' });
  const nameError = h('div', { class: 'field-error', id: 'error-name' });
  const shortSlot = h('div');
  const extra = h('textarea', { id: 'extra', 'data-testid': 'extra', rows: 6, spellcheck: 'false',
    placeholder: 'one setting per line, or a JSON object, e.g.\npretrained: false\nimage_size: 32\ntrain.num_workers: 0' });
  extra.value = startMemory.extra;
  const extraError = h('div', { class: 'field-error', id: 'error-extra' });
  const formError = h('div', { id: 'form-error', 'data-testid': 'form-error', class: 'alert error', hidden: true });
  const startButton = h('button', { id: 'start', 'data-testid': 'start', type: 'submit', class: 'primary' },
    'Start training');
  const resetButton = h('button', { id: 'reset', type: 'button', class: 'ghost' }, 'Reset to defaults');
  let fields = { inputs: {}, errors: {} };

  const formApi = {
    buildBody() {
      const body = { model_type: state.kind.name };
      const name = nameInput.value.trim();
      if (name) body.name = name;
      for (const [key, input] of Object.entries(fields.inputs)) {
        if (input.type === 'checkbox') body[key] = input.checked;
        else if (input.type === 'number') { if (input.value.trim() !== '') body[key] = Number(input.value); }
        else if (input.value.trim() !== '') body[key] = input.value.trim();
      }
      if ('dataset_path' in (state.kind.short_form || {})) {
        const path = picker.value();
        if (path) body.dataset_path = path;
      }
      try {
        return Object.assign(body, parseExtra(extra.value));
      } catch (err) {
        err.field = 'extra';
        throw err;
      }
    },
    clearErrors() {
      formError.hidden = true;
      formError.textContent = '';
      for (const el of view.querySelectorAll('.field-error')) el.textContent = '';
      for (const el of view.querySelectorAll('.invalid')) el.classList.remove('invalid');
    },
    showError(err) {
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
    },
    errorText: () => formError.textContent,
    remember() {
      startMemory.name = nameInput.value;
      startMemory.extra = extra.value;
    },
  };

  /** The error line and the control a server error names (its short key, its dotted key, or extra). */
  function errorTarget(field) {
    if (!field) return null;
    const f = String(field).replace(/^body\./, '');
    if (f === 'extra') return [extraError, extra];
    if (f === 'model_type') return [kindError, kindSelect];
    if (f === 'name') return [nameError, nameInput];
    for (const [key, path] of Object.entries(state.kind.short_form || {})) {
      if (f === key || f === path || f.startsWith(`${path}.`)) {
        return [fields.errors[key], key === 'dataset_path' ? picker.select : fields.inputs[key]];
      }
    }
    return [extraError, extra];
  }

  const preview = previewPanel(ctx, state, formApi);
  const picker = datasetPicker(state, () => preview.schedule());
  const upload = uploadBox(ctx, state, picker, () => preview.schedule());
  const settings = settingsBrowser(state, (line) => {
    extra.value = extra.value.trim() ? `${extra.value.replace(/\s+$/, '')}\n${line}` : line;
    preview.schedule();
  });

  function renderKind() {
    kindDescription.textContent = state.kind.description || '';
    fields = shortFieldsOf(state.kind, picker);
    shortSlot.replaceChildren(fields.el);
    picker.fill();
    settings.render();
  }

  async function start(event) {
    event.preventDefault();
    formApi.clearErrors();
    let body;
    try {
      body = formApi.buildBody();
    } catch (err) {
      formApi.showError(err);
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
      formApi.showError(err);
      startButton.disabled = false;
      startButton.textContent = 'Start training';
    }
  }

  kindSelect.addEventListener('change', () => {
    state.kind = kinds.find((k) => k.name === kindSelect.value) || kinds[0];
    startMemory.kind = state.kind.name;
    renderKind();
    preview.schedule();
  });
  resetButton.addEventListener('click', () => { extra.value = ''; renderKind(); preview.schedule(); });

  const form = h('form', { id: 'start-form', class: 'card form', novalidate: true, onsubmit: start },
    h('div', { class: 'field' }, h('label', { for: 'model-type' }, 'Model type'), kindSelect, kindDescription, kindError),
    h('div', { class: 'field' }, h('label', { for: 'name' }, 'Run name'), nameInput, nameError),
    shortSlot,
    upload.el,
    h('div', { class: 'field' },
      h('label', { for: 'extra' }, 'Extra settings', h('span', { class: 'muted' }, ' — key: value lines or JSON')),
      extra, extraError, settings.el),
    formError,
    h('div', { class: 'actions' }, startButton, resetButton));
  const quiet = new Set([settings.filter, ...upload.quiet]); // edits that do not change the config
  form.addEventListener('input', (event) => {
    if (!quiet.has(event.target)) preview.schedule();
  });
  form.addEventListener('change', (event) => {
    if (event.target.type === 'checkbox') preview.schedule();
  });

  view.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'New training run'),
      h('a', { href: '#/jobs', class: 'ghost btn' }, 'All jobs')),
    h('div', { class: 'two-col' }, form, preview.el));
  renderKind();
  preview.run();
}
