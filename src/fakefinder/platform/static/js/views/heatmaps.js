/* Heatmaps on the job page: an evaluation's figures (the map beside a face prior and a random map) and
 * its gallery, the overlays a predict job drew, and the predict form of a trained model. Which kinds
 * draw heatmaps comes from /api/kinds (`draws_heatmaps`).
 */
import { api, apiImage, apiLink, filePath, getKinds, isAbort } from '../api.js';
import { enc, fmtNum, h, setChildren } from '../dom.js';

export const GROUPS = [
  ['confident_fakes', 'Most confident fakes'],
  ['confident_reals', 'Most confident reals'],
  ['false_positives', 'False positives (reals called fake)'],
  ['false_negatives', 'False negatives (fakes called real)'],
];
const MAPS = [['map', 'heatmap'], ['face_prior', 'face prior'], ['random', 'random map']];

/** A figure's name as people read it: pointing -> "Pointing game", drop_0.1 -> "Deletion drop, top 10 %". */
export function figureLabel(key) {
  if (key === 'pointing') return 'Pointing game';
  if (key === 'pixel_auc') return 'Pixel AUC';
  let m = /^iou_(.+)$/.exec(key);
  if (m) return `IoU at ${m[1]}`;
  m = /^drop_(.+)$/.exec(key);
  if (m) return `Deletion drop, top ${fmtNum(Number(m[1]) * 100, 3)} %`;
  return key;
}

/** The figures of the map and its baselines, in reading order: pointing, pixel AUC, IoU, deletion drops. */
export function figureKeys(overall) {
  const keys = [...new Set(MAPS.flatMap(([name]) => Object.keys((overall && overall[name]) || {})))];
  const rank = (k) => (k === 'pointing' ? 0 : k === 'pixel_auc' ? 1 : k.startsWith('iou_') ? 2 : k.startsWith('drop_') ? 3 : 4);
  return keys.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b, 'en', { numeric: true }));
}

/** `mouth:0.41;chin_jaw:0.22` -> "mouth 41 %, chin jaw 22 %". */
export function formatRegions(text) {
  if (!text) return '';
  return String(text).split(';').filter(Boolean).map((part) => {
    const [name, share] = part.split(':');
    const value = Number(share);
    return `${name.replace(/_/g, ' ')}${Number.isFinite(value) ? ` ${Math.round(value * 100)} %` : ''}`;
  }).join(', ');
}

/** Why heatmaps are experimental: checked on validation and no better than a face prior, or never checked. */
function experimentalNotice(checked, id) {
  const why = checked
    ? 'did not beat a face prior on validation (pointing game and pixel AUC)'
    : 'were not checked against a face prior on validation';
  return h('div', { class: 'alert notice', id, 'data-testid': id },
    h('span', { class: 'badge experimental' }, 'experimental'),
    ` These heatmaps ${why}: they show where the model looked, not evidence of where a face was changed.`);
}

/** One overlay with what it shows: the crop's label and score, and the facial regions the map falls on. */
export function overlayFigure(base, item, caption) {
  const overlayUrl = `${base}/files/${filePath(item.overlay)}`;
  const regions = formatRegions(item.regions);
  return h('figure', { class: 'heatmap-figure', 'data-group': item.group || null },
    apiImage(overlayUrl, { alt: `heatmap overlay of ${item.path || item.id || 'a crop'}`, class: 'overlay' }),
    h('figcaption', {},
      caption,
      regions ? h('div', { class: 'regions', title: item.regions_from ? `regions from ${item.regions_from}` : null }, regions) : null,
      item.heatmap ? apiLink('map (PNG)', `${base}/files/${filePath(item.heatmap)}`,
        { cls: 'small-text', filename: String(item.heatmap).split('/').pop() }) : null));
}

function scoreLine(item) {
  const parts = [];
  if (item.label != null && item.label !== '') parts.push(h('span', { class: `label label-${item.label}` }, String(item.label)));
  if (typeof item.score === 'number') parts.push(` score ${fmtNum(item.score, 3)}`);
  return h('div', { class: 'small-text' }, parts);
}

function figuresTable(overall, title, id) {
  const keys = figureKeys(overall);
  return h('table', { class: 'table compact heatmap-figures', id, 'data-testid': id },
    h('thead', {}, h('tr', {}, h('th', {}, title),
      MAPS.map(([, label]) => h('th', { class: 'num' }, label)))),
    h('tbody', {}, keys.map((key) => {
      const values = MAPS.map(([name]) => (overall[name] || {})[key]);
      const best = Math.max(...values.filter((v) => typeof v === 'number'));
      return h('tr', { 'data-figure': key }, h('th', {}, figureLabel(key)),
        values.map((v, i) => h('td', { class: `num${v === best && typeof v === 'number' ? ' best' : ''}`,
          'data-map': MAPS[i][0] }, fmtNum(v, 3))));
    })));
}

function setSection(base, entry) {
  const overall = entry.overall || {};
  const checked = !!entry.validation && MAPS.some(([name]) => entry.validation[name]);
  const leftOut = Object.entries(entry.left_out || {}).map(([why, n]) => `${n} ${why}`).join(', ');
  const byGroup = GROUPS.map(([group, title]) => {
    const items = (entry.gallery || []).filter((g) => g.group === group);
    if (!items.length) return null;
    return h('div', { class: 'gallery-group', 'data-group': group },
      h('h3', {}, title),
      h('div', { class: 'gallery' }, items.map((item) => overlayFigure(base, item, scoreLine(item)))));
  });
  return h('div', { class: 'heatmap-set', 'data-model': entry.model, 'data-set': entry.set },
    h('div', { class: 'card-head' },
      h('h3', {}, `${entry.model} · ${entry.set}`),
      h('span', { class: 'muted small-text' }, [entry.method && `method ${entry.method}`,
        entry.iou_threshold != null && `IoU threshold ${fmtNum(entry.iou_threshold, 3)}`].filter(Boolean).join(' · '))),
    entry.experimental ? experimentalNotice(checked, 'heatmaps-experimental') : null,
    overall.n
      ? figuresTable(overall, `${entry.set}: ${overall.n} fakes with a true mask`, 'heatmap-figures')
      : h('div', { class: 'muted small-text' }, `No fake in ${entry.set} has a true mask: no localisation figures there.`),
    checked ? figuresTable(entry.validation, 'the check on validation', 'heatmap-validation') : null,
    leftOut ? h('div', { class: 'muted small-text' }, `Fakes left out of the figures: ${leftOut}.`) : null,
    byGroup.some(Boolean) ? byGroup : h('div', { class: 'muted' }, 'The gallery is empty.'));
}

/** The evaluation's heatmaps (GET /api/evaluate/<id>/heatmaps): hidden when the job has none. */
export function heatmapsPanel(ctx, base, taskId) {
  const el = h('section', { class: 'card', id: 'heatmaps-card', 'data-testid': 'heatmaps-card', hidden: true });
  let loaded = false;

  async function load(job) {
    const result = job.result || {};
    if (job.state !== 'succeeded' || !result.evaluation || loaded) return;
    loaded = true;
    try {
      const data = await api(`/api/evaluate/${enc(taskId)}/heatmaps`, { signal: ctx.signal });
      if (!ctx.alive) return;
      setChildren(el, h('h2', {}, 'Heatmaps: where the model looked'),
        h('p', { class: 'hint' }, 'Each figure is the mean over the fakes with a true mask; higher is better. ' +
          'The face prior (a centred blob) and a random map are what a map must beat.'),
        (data.sets || []).map((entry) => setSection(base, entry)));
      el.hidden = false;
    } catch (err) {
      if (!isAbort(err) && err.status !== 404) {
        setChildren(el, h('h2', {}, 'Heatmaps'), h('div', { class: 'muted' }, `Heatmaps: ${err.message}`));
        el.hidden = false;
      }
    }
  }

  return { el, load };
}

/** The overlays a predict job drew (its result's `heatmaps`), with the check of its model's heatmaps. */
export function drawnHeatmaps(base, result) {
  const items = Array.isArray(result.heatmaps) ? result.heatmaps : null;
  if (!items) return null;
  const check = result.heatmap_check || {};
  return h('div', { id: 'predict-heatmaps', 'data-testid': 'predict-heatmaps' },
    h('h3', {}, 'Heatmaps'),
    check.experimental ? experimentalNotice(!!check.checked, 'predict-heatmaps-experimental') : null,
    items.length
      ? h('div', { class: 'gallery' }, items.map((item) => overlayFigure(base, item, h('div', {},
        h('div', { class: 'small-text' }, h('span', { class: 'mono' }, item.id ?? ''),
          item.frame_index != null ? ` frame ${item.frame_index}` : '', ' ', scoreLine(item)),
        // a model that explains its answer: the text beside where it looked
        item.explanation ? h('p', { class: 'explanation', 'data-testid': 'heatmap-explanation' }, item.explanation) : null))))
      : h('div', { class: 'muted' }, 'No heatmap was drawn (no usable face or image in the file).'));
}

/** A trained model on an uploaded image or video: a predict job, with heatmaps where its kind draws them. */
export function predictPanel(ctx, taskId) {
  const el = h('section', { class: 'card', id: 'predict-card', 'data-testid': 'predict-card', hidden: true });
  const fileInput = h('input', { type: 'file', id: 'predict-file', 'data-testid': 'predict-file', name: 'file' });
  const heatmaps = h('input', { type: 'checkbox', id: 'predict-draw-heatmaps', name: 'heatmaps', checked: true });
  const heatmapsField = h('label', { class: 'toggle', id: 'predict-heatmaps-field', hidden: true }, heatmaps,
    'Draw heatmaps (where the model looked)');
  const button = h('button', { type: 'submit', id: 'predict-start', class: 'primary' }, 'Predict');
  const error = h('div', { class: 'field-error', id: 'predict-error', 'data-testid': 'predict-error' });
  const form = h('form', { class: 'predict-form' }, fileInput, heatmapsField, button, error);
  let shownFor = null;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    if (!fileInput.files.length) { error.textContent = 'file: choose an image or a video'; return; }
    const body = new FormData();
    body.append('model_task_id', taskId);
    body.append('file', fileInput.files[0]);
    if (!heatmapsField.hidden) body.append('heatmaps', heatmaps.checked ? 'true' : 'false');
    button.disabled = true;
    try {
      const started = await api('/api/predict', { method: 'POST', form: body, signal: ctx.signal });
      location.hash = `#/jobs/${enc(started.task_id)}`;
    } catch (err) {
      if (!isAbort(err)) error.textContent = err.detail || err.message;
    } finally {
      button.disabled = false;
    }
  });

  async function render(job) {
    const ready = job.type === 'train' && job.state === 'succeeded' && (job.files || {}).artifact;
    el.hidden = !ready;
    if (!ready || shownFor === job.task_id) return;
    shownFor = job.task_id;
    let kind = null;
    try {
      kind = (await getKinds(ctx.signal)).find((k) => k.name === job.kind) || null;
    } catch (err) {
      if (isAbort(err)) return;
    }
    if (!ctx.alive) return;
    heatmapsField.hidden = !(kind && kind.draws_heatmaps);
    const inputs = kind && kind.predict_inputs;
    fileInput.setAttribute('accept', inputs ? inputs.join(',') : 'image/*,video/*');
    setChildren(el, h('h2', {}, 'Try the model'),
      h('p', { class: 'hint' }, inputs ? `A file it reads (${inputs.join(', ')}).` : 'An image or a video.'),
      form);
  }

  return { el, render };
}
