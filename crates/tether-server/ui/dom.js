// Small DOM helpers. Text from the API (descriptions, agent output) only ever reaches the page
// as text nodes, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// Replaces an element's children; children may be nested arrays, and null or false for none.
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// Times are shown in the viewer's own zone; the ISO time (UTC) is in the title.
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

export function time(ts, { date = false } = {}) {
  if (!ts) return h('span', { class: 'muted' }, '—');
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return h('span', {}, String(ts));
  return h('time', { datetime: d.toISOString(), title: d.toISOString() },
    (date ? dateTimeFmt : timeFmt).format(d));
}

export function duration(ms) {
  if (!(ms >= 0)) return '—';
  if (ms < 10000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

export function money(usd) {
  return `$${Number(usd || 0).toFixed(4)}`;
}

export function count(n) {
  return Number(n || 0).toLocaleString();
}

export const TERMINAL = new Set(['COMPLETED', 'FAILED', 'TIMED_OUT', 'CANCELLED']);

export function stateBadge(state) {
  const s = state || 'UNKNOWN';
  return h('span', { class: `state state-${s.toLowerCase()}` }, s);
}

export function errorBox(error) {
  const code = error && error.code ? `${error.code}: ` : '';
  return h('p', { class: 'error', role: 'alert' }, code + (error?.message ?? String(error)));
}
