// The task list: newest first, a page at a time from the newest (`cursor` for older pages),
// filtered by state and searched on the server, and kept live by asking again for the newest
// page every few seconds: new tasks appear on top, changed rows are redrawn in place.

import { api, me } from './api.js';
import { h, clear, fill, time, stateBadge, errorBox } from './dom.js';

const PAGE = 50;
const POLL_MS = 2000;
const STATES = ['SUBMITTED', 'RUNNING', 'FINALIZING', 'COMPLETED', 'FAILED', 'TIMED_OUT', 'CANCELLED'];

export async function listPage(main) {
  const who = await me().catch(() => null);
  const view = new ListView(main, who?.role === 'admin');
  const params = new URLSearchParams(location.search);
  view.state.value = STATES.includes(params.get('status')) ? params.get('status') : '';
  view.search.value = params.get('q') ?? '';
  await view.reload();
  view.poll();
}

class ListView {
  constructor(main, admin) {
    this.admin = admin;
    this.rows = new Map();
    this.cursor = null;
    this.generation = 0;
    this.state = h('select', { id: 'filter-state', name: 'status' },
      h('option', { value: '' }, 'any state'), STATES.map((s) => h('option', { value: s }, s.toLowerCase())));
    this.search = h('input', {
      id: 'filter-q', name: 'q', type: 'search', placeholder: 'description, repository, metadata', autocomplete: 'off',
    });
    this.body = h('tbody');
    this.more = h('button', { type: 'button', hidden: true }, 'Load older tasks');
    this.note = h('p', { class: 'muted small', role: 'status' });
    const headers = ['State', 'Description', 'Repository', admin ? 'Owner' : null, 'Attempt', 'Created', 'Updated'];
    const filters = h('form', { class: 'filters', role: 'search' },
      h('label', { for: 'filter-state' }, 'State'), this.state,
      h('label', { for: 'filter-q' }, 'Search'), this.search);
    filters.addEventListener('submit', (e) => {
      e.preventDefault();
      this.reload();
    });
    this.state.addEventListener('change', () => this.reload());
    let typing = null;
    this.search.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(() => this.reload(), 250);
    });
    this.more.addEventListener('click', () => this.loadMore());
    fill(main,
      h('div', { class: 'list-head' }, h('h1', {}, 'Tasks'), newTaskForm()),
      filters,
      h('div', { class: 'table-wrap' },
        h('table', { class: 'tasks' },
          h('thead', {}, h('tr', {}, headers.filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
          this.body)),
      this.more,
      this.note,
    );
  }

  query(extra = {}) {
    const q = new URLSearchParams({ limit: String(PAGE), ...extra });
    if (this.state.value) q.set('status', this.state.value);
    const text = this.search.value.trim();
    if (text) q.set('q', text);
    return `/v1/tasks?${q}`;
  }

  async reload() {
    const generation = ++this.generation;
    const shown = new URLSearchParams();
    if (this.state.value) shown.set('status', this.state.value);
    if (this.search.value.trim()) shown.set('q', this.search.value.trim());
    history.replaceState(null, '', shown.toString() ? `/?${shown}` : '/');
    try {
      const page = await api(this.query());
      if (generation !== this.generation) return;
      clear(this.body);
      this.rows.clear();
      for (const task of page.data) this.body.append(this.row(task));
      this.setCursor(page.next_cursor);
      this.note.textContent = page.data.length ? '' : 'No tasks match.';
    } catch (error) {
      fill(this.note, errorBox(error));
    }
  }

  setCursor(cursor) {
    this.cursor = cursor ?? null;
    this.more.hidden = !this.cursor;
  }

  async loadMore() {
    if (!this.cursor) return;
    const generation = this.generation;
    this.more.disabled = true;
    try {
      const page = await api(this.query({ cursor: this.cursor }));
      if (generation !== this.generation) return;
      for (const task of page.data) if (!this.rows.has(task.id)) this.body.append(this.row(task));
      this.setCursor(page.next_cursor);
    } catch (error) {
      fill(this.note, errorBox(error));
    } finally {
      this.more.disabled = false;
    }
  }

  // New tasks go on top (the newest page comes newest first); rows already shown are
  // redrawn when the task changed.
  async poll() {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (document.hidden) continue;
      const generation = this.generation;
      let page;
      try {
        page = await api(this.query());
      } catch {
        continue;
      }
      if (generation !== this.generation) continue;
      let anchor = this.body.firstElementChild;
      const fresh = [];
      for (const task of page.data) {
        const old = this.rows.get(task.id);
        if (!old) {
          fresh.push(task);
          continue;
        }
        if (old.task.updated_at !== task.updated_at || old.task.state !== task.state) {
          const row = this.row(task);
          old.el.replaceWith(row);
          if (anchor === old.el) anchor = row;
        }
      }
      // Only tasks newer than everything shown go on top; an older one that appeared
      // (a filter now matching it) waits for a reload.
      const newest = anchor ? this.rows.get(anchor.dataset.taskId)?.task.created_at : null;
      for (const task of fresh) {
        if (newest && task.created_at < newest) continue;
        this.body.insertBefore(this.row(task), anchor);
      }
      if (this.rows.size) this.note.textContent = '';
    }
  }

  row(task) {
    const el = h('tr', { 'data-task-id': task.id, 'data-state': task.state },
      h('td', {}, stateBadge(task.state)),
      h('td', { class: 'desc' }, h('a', { href: `/tasks/${encodeURIComponent(task.id)}` }, task.description)),
      h('td', { class: 'repo' }, task.repository ?? ''),
      this.admin ? h('td', {}, task.owner) : null,
      h('td', { class: 'num' }, String(task.attempt)),
      h('td', {}, time(task.created_at, { date: true })),
      h('td', {}, time(task.updated_at, { date: true })));
    this.rows.set(task.id, { task, el });
    return el;
  }
}

function newTaskForm() {
  const description = h('input', { id: 'new-desc', required: true, maxlength: 10000, placeholder: 'What should the agent do?' });
  const repository = h('input', { id: 'new-repo', placeholder: 'owner/repo (optional)' });
  const note = h('span', { class: 'small', role: 'status' });
  const form = h('form', { class: 'new-task' },
    h('label', { for: 'new-desc' }, 'New task'), description,
    h('label', { for: 'new-repo', class: 'sr-only' }, 'Repository'), repository,
    h('button', { type: 'submit' }, 'Submit'), note);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const spec = { description: description.value.trim() };
    if (repository.value.trim()) spec.repository = repository.value.trim();
    try {
      const task = await api('/v1/tasks', { method: 'POST', body: spec });
      location.assign(`/tasks/${encodeURIComponent(task.id)}`);
    } catch (error) {
      note.textContent = `Not submitted: ${error.message}`;
    }
  });
  return h('details', { class: 'new' }, h('summary', {}, 'Submit a task'), form);
}
