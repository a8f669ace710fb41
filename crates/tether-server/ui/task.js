// The task page: the status snapshot, the steps, the actions, and the live timeline.
//
// The newest events load first (`desc=true`, one page), older pages as the reader scrolls up
// (`before=`), and live events arrive over SSE from the newest offset shown: a task with
// 100,000 events opens with a few hundred of them in the page.

import { api } from './api.js';
import { h, fill, time, duration, money, count, stateBadge, errorBox, TERMINAL } from './dom.js';
import { Timeline } from './timeline.js';
import { LiveFeed, TERMINAL_TYPES } from './live.js';

const PAGE = 200;
const FLUSH_MS = 40;
const STATUS_REFRESH_MS = 1000;

export async function taskPage(main, id) {
  const enc = encodeURIComponent(id);
  let task;
  let first;
  try {
    [task, first] = await Promise.all([
      api(`/v1/tasks/${enc}`),
      api(`/v1/tasks/${enc}/events?desc=true&limit=${PAGE}`),
    ]);
  } catch (error) {
    fill(main, h('h1', {}, 'Task'), errorBox(error), h('p', {}, h('a', { href: '/' }, '← all tasks')));
    return;
  }
  document.title = `${task.description.slice(0, 60)} · Tether`;
  const page = new TaskView(main, task);
  page.start(first);
}

class TaskView {
  constructor(main, task) {
    this.task = task;
    this.id = task.id;
    this.enc = encodeURIComponent(task.id);
    this.pending = [];
    this.flushTimer = null;
    this.refreshTimer = null;
    this.olderBefore = null;
    this.hasOlder = false;
    this.loadingOlder = false;
    this.timeline = new Timeline({ onSupersededChange: (n) => this.showSupersededCount(n) });

    this.head = h('section', { class: 'task-head', 'aria-label': 'Status' });
    this.actions = h('section', { class: 'actions', 'aria-label': 'Actions' });
    this.steps = h('section', { class: 'steps', 'aria-label': 'Steps' });
    this.liveState = h('span', { class: 'live-state', 'data-live-state': '', role: 'status' }, 'reconnecting');
    this.supToggle = h('input', { type: 'checkbox', id: 'show-superseded' });
    this.supLabel = h('label', { for: 'show-superseded', class: 'toggle', hidden: true }, this.supToggle, ' ',
      h('span', {}, 'show superseded'));
    this.rawToggle = h('input', { type: 'checkbox', id: 'raw-log' });
    this.olderButton = h('button', { type: 'button', class: 'older', hidden: true }, 'Load older events');
    this.olderNote = h('p', { class: 'muted small older-note' });
    this.scroller = h('div', { class: 'timeline-scroll', tabindex: '0', 'aria-label': 'Events, oldest at the top' },
      this.olderNote, this.olderButton, this.timeline.el);

    this.supToggle.addEventListener('change', () => this.timeline.setShowSuperseded(this.supToggle.checked));
    this.rawToggle.addEventListener('change', () => this.timeline.setRaw(this.rawToggle.checked));
    this.olderButton.addEventListener('click', () => this.loadOlder());

    fill(main,
      h('p', { class: 'crumbs' }, h('a', { href: '/' }, '← all tasks')),
      this.head,
      this.actions,
      this.steps,
      h('section', { class: 'timeline', 'aria-label': 'Timeline' },
        h('div', { class: 'toolbar' },
          h('h2', {}, 'Timeline'),
          this.liveState,
          this.supLabel,
          h('label', { for: 'raw-log', class: 'toggle' }, this.rawToggle, ' ', h('span', {}, 'raw log')),
          h('a', { href: `/v1/tasks/${this.enc}/export`, download: `task-${this.id}.jsonl` }, 'download export')),
        this.scroller),
    );
    this.renderHead();
    this.renderActions();
  }

  start(first) {
    this.timeline.add(first.data);
    this.olderBefore = first.next_after;
    this.hasOlder = first.has_more;
    this.updateOlder();
    this.renderSteps();
    // The last milestone's link comes from its event, now loaded.
    this.renderHead();
    this.scroller.scrollTop = this.scroller.scrollHeight;
    // Older pages load as the top comes into view.
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: this.scroller, rootMargin: '300px 0px 0px 0px' });
    observer.observe(this.olderButton);
    this.observer = observer;

    // The task's last event is its terminal one: nothing more will come.
    if (first.closed || TERMINAL_TYPES.has(first.data[0]?.type)) {
      this.setLive('ended');
      return;
    }
    this.feed = new LiveFeed({
      taskId: this.id,
      after: this.timeline.newest(),
      onEvent: (ev) => this.queue(ev),
      onState: (s) => this.setLive(s),
      probe: () => this.refresh(),
    });
    this.feed.start();
  }

  setLive(state) {
    this.liveState.textContent = state;
    this.liveState.className = `live-state live-${state}`;
    if (state === 'ended') this.scheduleRefresh();
  }

  queue(ev) {
    this.pending.push(ev);
    this.flushTimer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  // Live events are added in batches: one layout per batch, not per event.
  flush() {
    this.flushTimer = null;
    const batch = this.pending;
    this.pending = [];
    const follow = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - 40;
    if (this.timeline.add(batch) > 0) {
      if (follow) this.scroller.scrollTop = this.scroller.scrollHeight;
      this.scheduleSteps();
      this.scheduleRefresh();
    }
  }

  // The steps are folded from every event shown: at most a few times a second.
  scheduleSteps() {
    this.stepsTimer ??= setTimeout(() => {
      this.stepsTimer = null;
      this.renderSteps();
    }, 250);
  }

  async loadOlder() {
    if (!this.hasOlder || this.loadingOlder) return;
    this.loadingOlder = true;
    this.olderButton.disabled = true;
    let loaded = false;
    try {
      const page = await api(`/v1/tasks/${this.enc}/events?desc=true&limit=${PAGE}&before=${encodeURIComponent(this.olderBefore)}`);
      const height = this.scroller.scrollHeight;
      const top = this.scroller.scrollTop;
      this.timeline.add(page.data, { older: true });
      this.scroller.scrollTop = top + (this.scroller.scrollHeight - height);
      this.olderBefore = page.next_after;
      this.hasOlder = page.has_more;
      this.renderSteps();
      loaded = true;
    } catch (error) {
      this.olderNote.textContent = `Could not load older events: ${error.message}`;
    } finally {
      this.loadingOlder = false;
      this.olderButton.disabled = false;
      this.updateOlder();
    }
    // The observer speaks only when the top comes into view again: if it is still in view
    // (a short page), keep going.
    if (loaded && this.hasOlder && this.scroller.scrollTop < 300) this.loadOlder();
  }

  updateOlder() {
    this.olderButton.hidden = !this.hasOlder;
    this.olderNote.textContent = this.hasOlder ? '' : 'Start of the task.';
  }

  showSupersededCount(n) {
    this.supLabel.hidden = n === 0;
    this.supLabel.querySelector('span').textContent = `show superseded (${n})`;
  }

  // The snapshot again, at most once a second while events arrive.
  scheduleRefresh() {
    this.refreshTimer ??= setTimeout(() => {
      this.refreshTimer = null;
      this.refresh().catch(() => {});
    }, STATUS_REFRESH_MS);
  }

  async refresh() {
    const task = await api(`/v1/tasks/${this.enc}`);
    this.task = task;
    this.renderHead();
    this.renderActions();
    return task;
  }

  ended() {
    return TERMINAL.has(this.task.state);
  }

  // The link of the last milestone, when its event is among those shown.
  milestoneUrl(text) {
    const events = this.timeline.events();
    for (let i = events.length - 1; i >= 0; i -= 1) {
      const ev = events[i];
      if (ev.type === 'agent_milestone' && ev.data?.milestone === text) {
        if (this.timeline.byOffset.get(ev.offset)?.el.dataset.superseded === 'true') continue;
        try {
          const u = new URL(ev.data.url);
          return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
        } catch {
          return null;
        }
      }
    }
    return null;
  }

  renderHead() {
    const t = this.task;
    const s = t.status ?? {};
    // From submission: the time a person waited, retries and queueing included.
    const start = t.created_at;
    const end = s.finished_at ?? (this.ended() ? t.updated_at : null);
    const took = start ? (end ? new Date(end) : new Date()) - new Date(start) : NaN;
    const url = s.last_milestone ? this.milestoneUrl(s.last_milestone) : null;
    const facts = [
      ['State', stateBadge(t.state)],
      ['Attempt', `${t.attempt}${t.max_attempts ? ` of ${t.max_attempts}` : ''}`],
      ['Current step', s.current_step ?? '—'],
      ['Turns', count(s.turns)],
      ['Activity', s.current_activity ?? '—'],
      ['Last milestone', s.last_milestone
        ? [s.last_milestone, url ? [' ', h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, 'link')] : '']
        : '—'],
      ['Cost', money(s.cost_usd)],
      ['Tokens', `${count(s.input_tokens)} in / ${count(s.output_tokens)} out`],
      ['Created', time(t.created_at, { date: true })],
      [end ? 'Took' : 'Open for', duration(took)],
      ['Owner', t.owner],
      ['Repository', t.repository ?? '—'],
    ];
    const outcome = [];
    if (s.failure) {
      outcome.push(h('p', { class: 'outcome bad' }, h('strong', {}, s.failure.code), ': ', s.failure.message));
    }
    if (s.result !== undefined && s.result !== null) {
      const text = typeof s.result === 'string' ? s.result : JSON.stringify(s.result, null, 2);
      outcome.push(h('div', { class: 'outcome good' }, h('strong', {}, 'Result'), h('pre', {}, text)));
    }
    const meta = t.metadata && Object.keys(t.metadata).length
      ? h('p', { class: 'meta' }, Object.entries(t.metadata).map(([k, v]) =>
        h('span', { class: 'chip' }, `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)))
      : null;
    fill(this.head,
      h('h1', {}, t.description),
      h('p', { class: 'muted small' }, 'Task ', h('code', {}, t.id), t.task_type ? ` · ${t.task_type}` : ''),
      meta,
      h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
      outcome,
    );
  }

  renderActions() {
    const ended = this.ended();
    const reason = ended ? `The task has ended (${this.task.state}).` : '';
    if (this.actionsFor === ended) return;
    this.actionsFor = ended;
    const message = h('textarea', {
      id: 'nudge-text', rows: 2, maxlength: 2000, disabled: ended, placeholder: 'A short message to the agent',
    });
    const send = h('button', { type: 'submit', disabled: ended }, 'Send nudge');
    const nudgeNote = h('p', { class: 'small note', role: 'status' }, reason);
    const nudge = h('form', { class: 'nudge' },
      h('label', { for: 'nudge-text' }, 'Nudge'), message, send, nudgeNote);
    nudge.addEventListener('submit', async (e) => {
      e.preventDefault();
      const text = message.value.trim();
      if (!text) return;
      send.disabled = true;
      try {
        await api(`/v1/tasks/${this.enc}/nudges`, { method: 'POST', body: { message: text } });
        message.value = '';
        nudgeNote.textContent = 'Sent.';
      } catch (error) {
        nudgeNote.textContent = `Not sent: ${error.message}`;
      } finally {
        send.disabled = this.ended();
      }
    });

    const cancel = h('button', { type: 'button', class: 'danger', disabled: ended, 'data-action': 'cancel' }, 'Cancel task');
    const confirmBox = h('span', { class: 'confirm', hidden: true },
      'Cancel this task? ',
      h('button', { type: 'button', class: 'danger', 'data-action': 'confirm-cancel' }, 'Yes, cancel it'), ' ',
      h('button', { type: 'button', 'data-action': 'keep' }, 'Keep it running'));
    const cancelNote = h('p', { class: 'small note', role: 'status' }, reason);
    cancel.addEventListener('click', () => {
      confirmBox.hidden = false;
      cancel.hidden = true;
      confirmBox.querySelector('[data-action=keep]').focus();
    });
    confirmBox.querySelector('[data-action=keep]').addEventListener('click', () => {
      confirmBox.hidden = true;
      cancel.hidden = false;
      cancel.focus();
    });
    confirmBox.querySelector('[data-action=confirm-cancel]').addEventListener('click', async () => {
      try {
        this.task = await api(`/v1/tasks/${this.enc}`, { method: 'DELETE' });
        this.renderHead();
        this.renderActions();
      } catch (error) {
        cancelNote.textContent = `Not cancelled: ${error.message}`;
        confirmBox.hidden = true;
        cancel.hidden = false;
      }
    });
    fill(this.actions, nudge, h('div', { class: 'cancel' }, cancel, confirmBox, cancelNote));
  }

  // Each step attempt among the events shown: when it began and ended, and whether a retry
  // superseded it. A bar's place and length are its share of the time the events span.
  renderSteps() {
    const attempts = new Map();
    for (const ev of this.timeline.events()) {
      if (typeof ev.step !== 'string') continue;
      const attempt = ev.type === 'stream_rewind' ? null : (Number.isInteger(ev.attempt) ? ev.attempt : 1);
      if (attempt === null) continue;
      const key = `${ev.step}#${attempt}`;
      const ts = Date.parse(ev.ts);
      let a = attempts.get(key);
      if (!a) {
        a = { step: ev.step, attempt, start: ts, end: ts, done: false, superseded: false };
        attempts.set(key, a);
      }
      if (ts < a.start) a.start = ts;
      if (ts > a.end) a.end = ts;
      if (ev.type === 'step_completed') a.done = true;
      if (this.timeline.byOffset.get(ev.offset)?.el.dataset.superseded === 'true') a.superseded = true;
    }
    if (!attempts.size) {
      fill(this.steps, h('h2', {}, 'Steps'), h('p', { class: 'muted small' }, 'No step events yet.'));
      return;
    }
    const list = [...attempts.values()].sort((x, y) => x.start - y.start);
    const ended = this.ended();
    const t0 = list[0].start;
    const t1 = Math.max(ended ? 0 : Date.now(), ...list.map((a) => a.end));
    const span = Math.max(1, t1 - t0);
    const rows = list.map((a) => {
      const end = a.done || a.superseded || ended ? a.end : Date.now();
      const left = ((a.start - t0) / span) * 100;
      const width = Math.max(0.5, ((end - a.start) / span) * 100);
      const status = a.superseded ? 'superseded' : a.done ? 'done' : ended ? 'stopped' : 'running';
      // Set through the style object: the page's policy refuses inline style attributes.
      const bar = h('span', { class: 'bar' });
      bar.style.marginLeft = `${left}%`;
      bar.style.width = `${width}%`;
      return h('li', { class: `step step-${status}` },
        h('span', { class: 'step-name' }, a.step, h('span', { class: 'muted' }, ` #${a.attempt}`)),
        h('span', { class: 'bar-track' }, bar),
        h('span', { class: 'step-info small' }, `${status} · ${duration(end - a.start)}`));
    });
    fill(this.steps,
      h('h2', {}, 'Steps'),
      this.hasOlder ? h('p', { class: 'muted small' }, 'From the events loaded so far.') : null,
      h('ol', { class: 'waterfall' }, rows));
  }
}

