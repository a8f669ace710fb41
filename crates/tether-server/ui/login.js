// Signing in. A login link (`tether up`, `tether ui`) brings `?code=`: the page posts it to
// the API, which takes it once, so merely opening or prefetching the link uses nothing up.
// The form takes an API token instead. Either way the answer sets the session cookie, and
// the page goes on to `next`.

import { api } from './api.js';
import { h, fill, errorBox } from './dom.js';

// Only a path on this site: never a redirect elsewhere.
function nextPath(params) {
  const next = params.get('next');
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

export async function loginPage(main) {
  const params = new URLSearchParams(location.search);
  const next = nextPath(params);
  const code = params.get('code');
  const note = h('div', { role: 'status', id: 'login-note' });

  const token = h('input', {
    id: 'login-token', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false',
  });
  const form = h('form', { class: 'inline', id: 'login-form' },
    h('label', { for: 'login-token' }, 'API token'), token,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    await signIn({ token: token.value.trim() });
  });

  async function signIn(body) {
    fill(note, h('p', { class: 'muted' }, 'Signing in…'));
    try {
      await api('/v1/sessions', { method: 'POST', body, login: false });
      location.replace(next);
      return true;
    } catch (error) {
      fill(note, errorBox(error));
      return false;
    }
  }

  fill(main,
    h('h1', {}, 'Sign in'),
    note,
    h('p', {}, 'Open the login link that ', h('code', {}, 'tether up'), ' or ', h('code', {}, 'tether ui'),
      ' printed, or paste an API token.'),
    form,
  );
  if (code) {
    // The code is spent by this one try: keep it out of the address bar and the history.
    const rest = next === '/' ? '/login' : `/login?next=${encodeURIComponent(next)}`;
    history.replaceState(null, '', rest);
    await signIn({ code });
  }
}
