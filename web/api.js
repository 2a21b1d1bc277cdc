// REST calls of the dispatcher's page: the admin token as a bearer, problem+json errors turned
// into exceptions (`Unauthorized` for 401/403, so the page can ask for a token again).

export class Unauthorized extends Error {}

/** An error answer: its problem+json `detail` or `title`, else the status. */
export class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `{ get(path), post(path, body) }` sending `Authorization: Bearer <token()>`. */
export function makeApi(token) {
  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${token()}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.ok) return response.status === 204 ? null : response.json();
    const problem = await response.json().catch(() => ({}));
    const message = problem.detail || problem.title || `HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) throw new Unauthorized(message);
    throw new ApiFailure(response.status, message);
  }
  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body ?? {}),
  };
}

/** `encodeURIComponent`, shorter. */
export const enc = encodeURIComponent;

/** A time for a list: `14:03:07` today, else `28 Nov 14:03`. */
export function clock(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour12: false })
    : d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false });
}

/** `5 min`, `2 h 10 min`, `40 s` since `ts` (RFC 3339) at `now` (ms). */
export function ago(ts, now = Date.now()) {
  const s = Math.max(0, Math.round((now - Date.parse(ts)) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** An element with a class and text children (never HTML: ids and names come from API clients). */
export function el(tag, className, ...children) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  for (const c of children) if (c != null && c !== false) e.append(c);
  return e;
}
