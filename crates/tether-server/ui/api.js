// Every call to the JSON API goes through here. Requests carry the browser's own credentials
// (`same-origin`: the session cookie, or nothing while the server runs with `--auth off`);
// the browser adds the page's `Origin` to changes, which the server requires of them. A 401
// sends the browser to the login page; other errors become an ApiError with the API's
// stable code.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function toLogin() {
  if (location.pathname === '/login') return;
  const next = location.pathname + location.search;
  location.assign('/login?next=' + encodeURIComponent(next));
}

// `login: false` keeps the page where it is on a 401 (signing in itself, or minting a token,
// which with `--auth off` still takes a real admin credential).
export async function api(path, { method = 'GET', body, signal, login = true } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'UNREACHABLE', 'the server cannot be reached');
  }
  if (response.status === 401 && login) {
    toLogin();
    throw new ApiError(401, 'UNAUTHORIZED', 'sign in first');
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = json && json.error;
    throw new ApiError(response.status, error?.code ?? `HTTP_${response.status}`,
      error?.message ?? response.statusText);
  }
  return json;
}

// Who is looking, asked once per page: the owner column and the admin pages are for admins.
let whoami = null;
export function me() {
  whoami ??= api('/v1/whoami');
  return whoami;
}
