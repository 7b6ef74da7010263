// The API as the console calls it: the key from sessionStorage as X-API-Key, problem+json errors as
// ApiError, uploads straight to S3 through the presigned POST (or the multipart plan) the API signs.

const KEY_NAME = "jobgate.apiKey";
export const apiBase = document.documentElement.dataset.api || "";
export const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function rememberKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(describeProblem(status, body));
    this.status = status;
    this.body = body;
  }
}

function describeProblem(status, body) {
  if (body && typeof body === "object") {
    const parts = [body.title || `HTTP ${status}`];
    if (body.detail) parts.push(body.detail);
    for (const error of body.errors || []) {
      const where = Array.isArray(error.loc) ? error.loc.join(".") : "";
      parts.push(where ? `${where}: ${error.msg}` : String(error.msg || ""));
    }
    return parts.join(" — ");
  }
  return body ? `HTTP ${status}: ${String(body).slice(0, 300)}` : `HTTP ${status}`;
}

export async function api(path, { method = "GET", body, signal, key } = {}) {
  const headers = { "X-API-Key": key || apiKey() || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(apiBase + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// A file to an asset: the API signs the upload, the browser sends the bytes to S3 itself.
export async function upload(file) {
  const ticket = await api("/v1/uploads", {
    method: "POST",
    body: { filename: file.name, media_type: file.type || "application/octet-stream", size: file.size },
  });
  const plan = ticket.upload;
  if (plan.method === "POST") {
    const form = new FormData();
    for (const [name, value] of Object.entries(plan.fields)) form.append(name, value);
    form.append("file", file);
    const sent = await fetch(plan.url, { method: "POST", body: form });
    if (!sent.ok) throw new Error(`The upload of ${file.name} was refused: HTTP ${sent.status}`);
  } else {
    const parts = [];
    let offset = 0;
    for (const part of plan.parts) {
      const sent = await fetch(part.url, { method: "PUT", body: file.slice(offset, offset + part.size) });
      if (!sent.ok) throw new Error(`Part ${part.part_number} of ${file.name} was refused: HTTP ${sent.status}`);
      parts.push({ part_number: part.part_number, etag: sent.headers.get("ETag") });
      offset += part.size;
    }
    await api(`/v1/uploads/${encodeURIComponent(ticket.asset_id)}/complete`, { method: "POST", body: { parts } });
  }
  return ticket.asset_id;
}
