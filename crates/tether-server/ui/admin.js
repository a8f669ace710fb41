// Admin pages: users and tokens. A new token's secret is shown once, as the API gives it
// once; only its hash is kept on the server.

import { api, me } from './api.js';
import { h, clear, fill, time, errorBox } from './dom.js';

export async function adminPage(main) {
  const who = await me().catch(() => null);
  if (who?.role !== 'admin') {
    fill(main, h('h1', {}, 'Admin'), h('p', {}, 'Only admins manage users and tokens.'));
    return;
  }
  const users = h('tbody');
  const tokens = h('tbody');
  // Each form's errors next to it; `note` for loading.
  const note = h('div', { role: 'status' });
  const userNote = h('div', { role: 'status' });
  const tokenNote = h('div', { role: 'status' });
  const secret = h('div', { class: 'secret', hidden: true });
  const userSelect = h('select', { id: 'token-user' });

  async function load() {
    try {
      const [u, t] = await Promise.all([api('/v1/users'), api('/v1/tokens')]);
      fill(users, u.data.map((x) => h('tr', { 'data-user': x.name },
        h('td', {}, x.name), h('td', {}, time(x.created_at, { date: true })))));
      fill(userSelect, u.data.map((x) => h('option', { value: x.name }, x.name)));
      fill(tokens, t.data.map((x) => {
        const revoke = h('button', { type: 'button', class: 'danger small' }, 'Revoke');
        revoke.addEventListener('click', async () => {
          if (revoke.dataset.armed !== 'true') {
            revoke.dataset.armed = 'true';
            revoke.textContent = 'Really revoke?';
            return;
          }
          try {
            await api(`/v1/tokens/${encodeURIComponent(x.id)}`, { method: 'DELETE' });
            await load();
          } catch (error) {
            fill(tokenNote, errorBox(error));
          }
        });
        return h('tr', { 'data-token-id': x.id },
          h('td', {}, h('code', {}, x.id)), h('td', {}, x.user), h('td', {}, x.role),
          h('td', {}, time(x.created_at, { date: true })), h('td', {}, time(x.last_used_at, { date: true })),
          h('td', {}, revoke));
      }));
    } catch (error) {
      fill(note, errorBox(error));
    }
  }

  const userName = h('input', { id: 'user-name', required: true, maxlength: 64, autocomplete: 'off' });
  const userForm = h('form', { class: 'inline' },
    h('label', { for: 'user-name' }, 'New user'), userName, h('button', { type: 'submit' }, 'Create user'));
  userForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('/v1/users', { method: 'POST', body: { name: userName.value.trim() } });
      userName.value = '';
      clear(userNote);
      await load();
    } catch (error) {
      fill(userNote, errorBox(error));
    }
  });

  const role = h('select', { id: 'token-role' }, ['user', 'worker', 'admin'].map((r) => h('option', { value: r }, r)));
  const tokenForm = h('form', { class: 'inline' },
    h('label', { for: 'token-user' }, 'New token for'), userSelect,
    h('label', { for: 'token-role' }, 'role'), role, h('button', { type: 'submit' }, 'Create token'));
  tokenForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const created = await api('/v1/tokens', {
        method: 'POST', body: { user: userSelect.value, role: role.value }, login: false,
      });
      secret.hidden = false;
      fill(secret,
        h('p', {}, h('strong', {}, `Token for ${created.user} (${created.role}). `),
          'Copy it now: it is shown this once, and only its hash is stored.'),
        h('pre', { class: 'token', tabindex: '0' }, created.token));
      clear(tokenNote);
      await load();
    } catch (error) {
      // With auth off the page acts as the admin without a credential, and minting a token
      // takes a real one: a session made from an admin token.
      const hint = error.status === 401
        ? 'Minting a token takes signing in with an admin token (see /login), even with --auth off.'
        : '';
      fill(tokenNote, errorBox(error), hint ? h('p', { class: 'small' }, hint) : null);
    }
  });

  fill(main,
    h('h1', {}, 'Admin'),
    note,
    h('section', { 'aria-labelledby': 'users-h' },
      h('h2', { id: 'users-h' }, 'Users'), userForm, userNote,
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Created'))), users))),
    h('section', { 'aria-labelledby': 'tokens-h' },
      h('h2', { id: 'tokens-h' }, 'Tokens'), tokenForm, tokenNote, secret,
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Id', 'User', 'Role', 'Created', 'Last used', ''].map((t) => h('th', { scope: 'col' }, t)))),
        tokens))),
    h('section', { 'aria-labelledby': 'workers-h' },
      h('h2', { id: 'workers-h' }, 'Workers'),
      h('p', { class: 'muted' }, 'The server does not keep a list of workers yet; running tasks name theirs in their ',
        h('code', {}, 'task_started'), ' event.')),
  );
  await load();
}
