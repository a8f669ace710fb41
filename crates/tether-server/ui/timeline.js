// A task's events as the page shows them: one element per event, keyed by its offset, in
// offset order whichever way the events arrived (older pages on top, live events below).
// Every event element carries `data-offset`; a superseded one also `data-superseded="true"`.

import { h, time, money, count } from './dom.js';
import { asRewind, supersedes } from './rewind.js';

const PREVIEW = 160;

export class Timeline {
  constructor({ onSupersededChange } = {}) {
    this.byOffset = new Map();
    this.rewinds = [];
    this.groups = new Map();
    this.supersededCount = 0;
    this.max = null;
    this.onSupersededChange = onSupersededChange ?? (() => {});
    this.el = h('ol', { class: 'events', 'aria-live': 'off' });
  }

  get size() {
    return this.byOffset.size;
  }

  has(offset) {
    return this.byOffset.has(offset);
  }

  // The newest offset shown: the cursor a live reader resumes after.
  newest() {
    return this.max;
  }

  events() {
    return [...this.byOffset.values()].map((x) => x.ev).sort((a, b) => (a.offset < b.offset ? -1 : 1));
  }

  // Adds events (each exactly once: one already shown is skipped). `older`: they come from a
  // page before everything shown. Returns how many were new.
  add(events, { older = false } = {}) {
    const fresh = [];
    for (const ev of events) {
      if (typeof ev.offset !== 'string' || this.byOffset.has(ev.offset)) continue;
      const el = renderEvent(ev);
      this.byOffset.set(ev.offset, { ev, el });
      fresh.push({ ev, el });
    }
    if (!fresh.length) return 0;
    fresh.sort((a, b) => (a.ev.offset < b.ev.offset ? -1 : 1));
    const last = fresh[fresh.length - 1].ev.offset;
    if (this.max === null || last > this.max) this.max = last;
    if (older) {
      const fragment = document.createDocumentFragment();
      for (const { el } of fresh) fragment.append(el);
      this.el.prepend(fragment);
    } else {
      for (const item of fresh) this.insert(item);
    }
    this.applyRewinds(fresh);
    if (this.el.classList.contains('raw')) for (const { ev, el } of fresh) addRaw(ev, el);
    return fresh.length;
  }

  // Appends in order; an event older than the last one shown (never expected from a live
  // reader) still lands in its place.
  insert({ ev, el }) {
    let before = null;
    let node = this.el.lastElementChild;
    while (node && node.dataset.offset && node.dataset.offset > ev.offset) {
      before = node;
      node = node.previousElementSibling;
    }
    this.el.insertBefore(el, before);
  }

  applyRewinds(fresh) {
    const added = [];
    for (const { ev } of fresh) {
      const r = asRewind(ev);
      if (r) added.push(r);
    }
    this.rewinds.push(...added);
    let changed = false;
    // New rewinds may supersede anything shown; new events may be superseded by any rewind.
    const candidates = added.length ? this.byOffset.values() : fresh;
    const rewinds = this.rewinds;
    for (const { ev, el } of candidates) {
      if (el.dataset.superseded === 'true') continue;
      const by = rewinds.find((r) => supersedes(r, ev));
      if (by) {
        this.markSuperseded(ev, el, by);
        changed = true;
      }
    }
    for (const r of changed ? this.rewinds : added) this.describeRewind(r);
    if (changed || added.length) this.onSupersededChange(this.supersededCount);
  }

  markSuperseded(ev, el, rewind) {
    el.dataset.superseded = 'true';
    el.classList.add('superseded');
    this.supersededCount += 1;
    const attempt = Number.isInteger(ev.attempt) ? ev.attempt : 1;
    const key = `${ev.step}#${attempt}`;
    let group = this.groups.get(key);
    if (!group) {
      const label = h('span', {}, '');
      const head = h('li', { class: 'sup-group', role: 'presentation' },
        h('span', { class: 'tag' }, `${ev.step} · attempt ${attempt} (superseded)`), ' ', label);
      group = { head, label, first: ev.offset, n: 0, rewind };
      this.groups.set(key, group);
      this.el.insertBefore(head, el);
    } else if (ev.offset < group.first) {
      group.first = ev.offset;
      this.el.insertBefore(group.head, el);
    }
    group.n += 1;
    group.label.textContent = `${group.n} event${group.n === 1 ? '' : 's'}, replaced by attempt ${rewind.epoch}`;
  }

  // The rewind line says which step was retried and how much of it is hidden.
  describeRewind(r) {
    const item = this.byOffset.get(r.offset);
    if (!item) return;
    const note = item.el.querySelector('.rewind-note');
    if (!note) return;
    let n = 0;
    for (const { ev, el } of this.byOffset.values()) {
      if (el.dataset.superseded === 'true' && ev.step === r.step && ev.offset < r.offset) n += 1;
    }
    note.textContent = n ? ` (${n} earlier event${n === 1 ? '' : 's'} of step ${r.step} superseded)` : '';
  }

  setShowSuperseded(show) {
    this.el.classList.toggle('show-superseded', show);
  }

  setRaw(raw) {
    this.el.classList.toggle('raw', raw);
    if (raw) for (const { ev, el } of this.byOffset.values()) addRaw(ev, el);
  }
}

function addRaw(ev, el) {
  if (el.querySelector('.json')) return;
  el.append(h('pre', { class: 'json' }, JSON.stringify(ev)));
}

function cut(text, n = PREVIEW) {
  const s = text == null ? '' : typeof text === 'string' ? text : JSON.stringify(text);
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

function str(v) {
  if (v == null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

// A line that expands on click to the whole text (tool inputs and results, unknown events).
function expandable(summary, full, cls = '') {
  if (!full || full === summary) return h('span', { class: cls }, summary);
  return h('details', { class: cls }, h('summary', {}, summary), h('pre', { class: 'full' }, full));
}

function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

function body(ev) {
  const d = ev.data && typeof ev.data === 'object' ? ev.data : {};
  switch (ev.type) {
    case 'task_created':
      return ['● task created: ', h('span', { class: 'text' }, cut(d.description, 300))];
    case 'task_started':
      return [`▶ task started (attempt ${ev.attempt ?? 1})`, d.worker ? ` on ${d.worker}` : ''];
    case 'task_finalizing':
      return ['… task finalizing'];
    case 'task_requeued':
      return [`↻ task requeued (attempt ${ev.attempt ?? '?'})`, d.reason ? `: ${d.reason}` : ''];
    case 'task_completed':
      return [h('strong', {}, '✓ task completed'),
        d.result != null ? [' ', expandable(cut(d.result), str(d.result))] : ''];
    case 'task_failed':
      return [h('strong', {}, '✗ task failed'), `: ${d.code ?? ''} ${d.message ?? ''}`];
    case 'task_timed_out':
      return [h('strong', {}, '⏱ task timed out'), `: ${d.code ?? ''} ${d.message ?? ''}`];
    case 'task_cancelled':
      return [h('strong', {}, '■ task cancelled'), d.by ? ` by ${d.by}` : '', d.reason ? `: ${d.reason}` : ''];
    case 'step_started':
      return [`→ step ${ev.step ?? '?'} started`];
    case 'step_completed':
      return [`✓ step ${ev.step ?? '?'} completed`];
    case 'stream_rewind':
      return [`↺ step ${ev.step ?? '?'} retried (attempt ${d.new_epoch ?? '?'}); earlier output of that step is superseded`,
        h('span', { class: 'rewind-note' })];
    case 'agent_turn':
      return [h('span', { class: 'kind' }, `turn ${d.turn ?? ''}`), ' ',
        expandable(cut(d.text ?? d.message ?? d.summary ?? ''), str(d.text ?? d.message ?? d.summary), 'text')];
    case 'agent_tool_call':
      return [h('span', { class: 'kind' }, `tool ${d.tool_name ?? '?'}`), ' ',
        expandable(cut(d.tool_input_preview ?? d.tool_input ?? ''), str(d.tool_input ?? d.tool_input_preview), 'code')];
    case 'agent_tool_result': {
      const failed = d.is_error === true || d.ok === false;
      return [h('span', { class: failed ? 'kind bad' : 'kind' }, `result ${d.tool_name ?? '?'}${failed ? ' (error)' : ''}`), ' ',
        expandable(cut(d.output_preview ?? d.output ?? ''), str(d.output ?? d.output_preview), 'code')];
    }
    case 'agent_milestone': {
      const url = safeUrl(d.url);
      return ['★ ', h('strong', {}, cut(d.milestone, 300)),
        url ? [' ', h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, url)] : ''];
    }
    case 'agent_cost_update': {
      const cost = d.total_cost_usd ?? d.cost_usd;
      const parts = [];
      if (cost != null) parts.push(`${money(cost)}${d.total_cost_usd == null ? ' more' : ''}`);
      if (d.input_tokens != null || d.output_tokens != null) {
        parts.push(`${count(d.input_tokens)} in / ${count(d.output_tokens)} out tokens`);
      }
      return [`$ cost ${parts.join(', ')}`];
    }
    case 'agent_error':
      return [h('strong', { class: 'bad' }, '! agent error'), ': ', d.code ? `${d.code}: ` : '',
        expandable(cut(d.message), str(d.message), 'text')];
    case 'log': {
      const line = d.line ?? d.message ?? '';
      const level = d.level ?? (d.stream === 'stderr' ? 'stderr' : 'log');
      return [h('span', { class: 'kind' }, level), ' ', expandable(cut(line), str(line), 'code')];
    }
    case 'nudge_sent':
      return [`✉ nudge from ${d.author ?? '?'}: `, h('span', { class: 'text' }, cut(d.message, 300))];
    case 'nudge_acknowledged':
      return ['✉ nudge acknowledged'];
    default:
      return [h('span', { class: 'kind' }, ev.type), ' ', expandable(cut(ev.data), str(ev.data), 'code')];
  }
}

const TONE = {
  task_failed: 'bad', task_timed_out: 'bad', task_cancelled: 'warn', agent_error: 'bad',
  task_completed: 'good', stream_rewind: 'warn', agent_milestone: 'good',
};

export function renderEvent(ev) {
  // A rewind belongs to the step, not to one attempt of it.
  const tag = ev.step ? (ev.type === 'stream_rewind' ? ev.step : `${ev.step}#${ev.attempt ?? 1}`) : '';
  const tone = TONE[ev.type] ? ` tone-${TONE[ev.type]}` : '';
  return h('li', { class: `ev${tone}`, 'data-offset': ev.offset, 'data-type': ev.type },
    h('span', { class: 'ts' }, time(ev.ts)),
    h('span', { class: 'tag' }, tag),
    h('div', { class: 'body' }, body(ev)));
}
