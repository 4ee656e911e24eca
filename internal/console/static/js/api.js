// The admin API client. The admin token lives in this tab's sessionStorage only; it is
// sent in the Authorization header and never placed in a URL, a log or the page.

const tokenKey = "sluice.admin_token";

export function token() {
  return sessionStorage.getItem(tokenKey) || "";
}

export function setToken(t) {
  sessionStorage.setItem(tokenKey, t);
}

export function clearToken() {
  sessionStorage.removeItem(tokenKey);
}

// ApiError is a failed call: the HTTP status and the API's error message (API.md's
// {"error": {"message", "type", "code", "param"}}), or a network failure (status 0).
export class ApiError extends Error {
  constructor(status, message, code, param) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "";
    this.param = param || "";
  }
}

let onUnauthorized = () => {};

// whenUnauthorized sets what happens when the API refuses the token (401).
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

// api calls /admin/v1 + path with method and an optional JSON body, and resolves to the
// decoded JSON answer. It rejects with an ApiError.
export async function api(method, path, body, tok) {
  const headers = { "Authorization": "Bearer " + (tok || token()), "Accept": "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/admin/v1" + path, init);
  } catch (e) {
    throw new ApiError(0, "Sluice did not answer: " + (e && e.message ? e.message : "network error") + ".");
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const e = data && data.error ? data.error : {};
    const err = new ApiError(resp.status, e.message || `The API answered ${resp.status} ${resp.statusText}.`, e.code, e.param);
    if (resp.status === 401 && !tok) {
      onUnauthorized(err);
    }
    throw err;
  }
  return data;
}

// query builds "?a=1&b=2" from the set (non-empty) values of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") {
      q.set(k, String(v));
    }
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
