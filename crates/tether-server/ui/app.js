// The one script the shell loads: it picks the page from the path.

import { api, me } from './api.js';
import { h, fill, errorBox } from './dom.js';
import { listPage } from './list.js';
import { taskPage } from './task.js';
import { adminPage } from './admin.js';
import { loginPage } from './login.js';

async function route(main) {
  const path = location.pathname;
  const task = path.match(/^\/tasks\/([^/]+)$/);
  if (path === '/') return listPage(main);
  if (task) return taskPage(main, decodeURIComponent(task[1]));
  if (path === '/admin') return adminPage(main);
  if (path === '/login') return loginPage(main);
  fill(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '/' }, 'All tasks')));
  return undefined;
}

async function header() {
  if (location.pathname === '/login') return;
  try {
    const who = await me();
    document.getElementById('who').textContent = `${who.user} (${who.role})`;
    if (who.role === 'admin') for (const el of document.querySelectorAll('[data-admin-only]')) el.hidden = false;
    const signOut = document.getElementById('sign-out');
    signOut.hidden = false;
    signOut.addEventListener('click', async () => {
      try {
        await api('/v1/sessions/logout', { method: 'POST', login: false });
        location.assign('/login');
      } catch (error) {
        fill(main, errorBox(error));
      }
    });
  } catch {
    // The page itself says what went wrong.
  }
}

const main = document.getElementById('main');
header();
route(main).catch((error) => fill(main, errorBox(error)));
