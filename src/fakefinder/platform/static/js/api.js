/* The REST API client (the token in a header, errors as {detail, field}), the token dialog, downloads.
 */
import { $, TOKEN_KEY, enc, h, toast } from './dom.js';

// ------------------------------------------------------------------ API client

export class ApiError extends Error {
  constructor(status, detail, field) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.field = field || null;
  }
}

export const getToken = () => localStorage.getItem(TOKEN_KEY) || '';

export function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** The error body: the platform's {"detail": str, "field": str}, or FastAPI's list of validation errors. */
export function readError(status, data, fallback) {
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

export async function api(path, { method = 'GET', body, form, signal } = {}) {
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

export const isAbort = (err) => err && err.name === 'AbortError';

export let kindsCache = null;
export async function getKinds(signal) {
  if (!kindsCache) {
    const data = await api('/api/kinds', { signal });
    kindsCache = data.kinds || [];
  }
  return kindsCache;
}

// ------------------------------------------------------------------ token prompt

export function askForToken(message) {
  const dialog = $('#token-dialog');
  if (message) $('#token-message').textContent = message;
  if (dialog.open) return;
  $('#token-input').value = getToken();
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else dialog.setAttribute('open', '');
  $('#token-input').focus();
}

export function closeTokenDialog() {
  const dialog = $('#token-dialog');
  if (dialog.open) dialog.close();
}

export function updateTokenButton() {
  $('#token-button').textContent = getToken() ? 'API token ✓' : 'API token';
}

/** The token dialog's buttons; `onSaved` runs after a token is saved (the page reloads its data). */
export function setupTokenDialog(onSaved) {
  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('#token-input').value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    closeTokenDialog();
    updateTokenButton();
    kindsCache = null;
    onSaved();
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

export function filePath(path) {
  return String(path).split('/').map(enc).join('/');
}

/** A link to an API file: plain when no token is set, else fetched with the header and handed over as a blob. */
export function apiLink(label, url, { id, filename, open = false, cls = 'btn' } = {}) {
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

export async function fetchBlobUrl(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (response.status === 401) {
    askForToken('The saved token was refused. Enter a valid token.');
    throw new ApiError(401, 'unauthorized');
  }
  if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

/** An <img> of an API file: its URL when no token is set, else fetched with the header as a blob. */
export function apiImage(url, attrs) {
  const img = h('img', Object.assign({ decoding: 'async' }, attrs || {}));
  if (!getToken()) {
    img.src = url;
    return img;
  }
  fetchBlobUrl(url).then((blobUrl) => {
    img.addEventListener('load', () => URL.revokeObjectURL(blobUrl), { once: true });
    img.src = blobUrl;
  }).catch((err) => { img.alt = `${img.alt} (${err.message})`; });
  return img;
}
