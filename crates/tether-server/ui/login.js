// A placeholder until sign-in exists: the API answered 401, so the page says how to get in.

import { h, fill } from './dom.js';

export function loginPage(main) {
  const next = new URLSearchParams(location.search).get('next');
  const back = next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
  fill(main,
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Signing in from the browser is not available yet. Start the server with ',
      h('code', {}, '--auth off'), ' (loopback only) to use these pages, or use the CLI with a token.'),
    h('p', {}, h('a', { href: back }, 'Try again')),
  );
}
