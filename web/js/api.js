// The one way pages talk to /api/v1: cookie session, CSRF header, errors turned into words.

export class ApiError extends Error {
  constructor(status, message, fields, code) {
    super(message);
    this.status = status;
    this.fields = fields; // {field: message}, when the answer names fields
    this.code = code; // e.g. "not_found", "conflict", "invalid"
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

// Every error answer has one shape: {detail: {message, code, errors: [{field, message}]}}.
export function describe(status, detail) {
  if (!detail || typeof detail.message !== "string") {
    return { message: `the server answered ${status}`, fields: {}, code: "" };
  }
  const fields = {};
  for (const e of detail.errors || []) fields[e.field] = e.message;
  const list = (detail.errors || []).map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join("; ");
  return { message: list ? `${detail.message}: ${list}` : detail.message, fields, code: detail.code };
}

export async function api(method, path, body, { form = false } = {}) {
  const headers = { "X-CSRF-Token": cookie("lorabake_csrf") };
  let payload;
  if (form) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  // keepalive: a small save still reaches the server when the tab is closed or reloaded under it
  const keepalive = typeof payload === "string" && payload.length < 60000;
  const response = await fetch("/api/v1" + path, { method, headers, body: payload, credentials: "same-origin",
                                                    keepalive });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const { message, fields, code } = describe(response.status, data && data.detail);
    throw new ApiError(response.status, message, fields, code);
  }
  return data;
}

export const get = (path) => api("GET", path);

// Every list answer is a page (limit, offset); this reads them all, page by page, until one comes back short.
export async function getAll(path, limit = 500) {
  const items = [];
  for (let offset = 0; ; offset += limit) {
    const page = await get(`${path}${path.includes("?") ? "&" : "?"}limit=${limit}&offset=${offset}`);
    items.push(...page);
    if (page.length < limit) return items;
  }
}
export const post = (path, body) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

// Multipart POST with upload progress (fetch cannot report it): resolves to the answer's JSON.
export function postForm(path, body, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/v1" + path);
    request.setRequestHeader("X-CSRF-Token", cookie("lorabake_csrf"));
    request.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    request.onload = () => {
      let data = null;
      try { data = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) resolve(data);
      else {
        const { message, fields, code } = describe(request.status, data && data.detail);
        reject(new ApiError(request.status, message, fields, code));
      }
    };
    request.onerror = () => reject(new ApiError(0, "the upload was cut off (network error)", {}));
    request.send(body);
  });
}

// Images into a dataset: one result per file.
export function upload(path, files, onProgress) {
  const body = new FormData();
  for (const file of files) body.append("files", file, file.name);
  return postForm(path, body, onProgress);
}
