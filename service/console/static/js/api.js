// The console's only way to the server: the public /v1 API, with X-API-Key when keys are on.
// The key lives in sessionStorage (this tab only) and is asked for when the server says 401.

const KEY_STORAGE = "faces.apiKey";

/** A problem+json answer (RFC 9457): `status`, `code`, `detail`, and the whole body in `problem`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "http_error";
    this.problem = problem;
  }
}

let askForKey = null;
const keyListeners = new Set();

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  for (const listener of keyListeners) listener(Boolean(key));
}

export function onKeyChange(listener) {
  keyListeners.add(listener);
}

/** `handler(problem)` resolves to a key to retry with, or null to give up. */
export function setKeyPrompt(handler) {
  askForKey = handler;
}

/** `v1/<path>` resolved against the page, so the console also works under a proxy's path prefix. */
export function apiUrl(path, query) {
  const url = new URL(`v1/${path}`, document.baseURI);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  return url;
}

/** Path segment: collection names and subject ids may hold '@', ':', '+', '.'. */
export function seg(value) {
  return encodeURIComponent(value);
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      /* fall through */
    }
  }
  return { status: response.status, title: response.statusText, detail: `HTTP ${response.status}` };
}

/**
 * One API call. `json` sends a JSON body, `form` a FormData; `as` is "json" (default) or "blob".
 * Resolves to the parsed body (null for 204); rejects with ApiError.
 */
export async function call(method, path, { json, form, query, as = "json", signal } = {}) {
  for (;;) {
    const headers = { Accept: as === "blob" ? "image/*, application/problem+json" : "application/json" };
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    const response = await fetch(apiUrl(path, query), { method, headers, body, signal });
    if (response.status === 401 && askForKey) {
      const problem = await problemOf(response);
      const newKey = await askForKey(problem);
      if (newKey) {
        setApiKey(newKey);
        continue;
      }
      throw new ApiError(401, problem);
    }
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    if (response.status === 204) return null;
    return as === "blob" ? response.blob() : response.json();
  }
}

export const api = {
  listCollections: (opts) => call("GET", "collections", opts),
  getCollection: (name, opts) => call("GET", `collections/${seg(name)}`, opts),
  createCollection: (body) => call("POST", "collections", { json: body }),
  deleteCollection: (name) => call("DELETE", `collections/${seg(name)}`),
  listSubjects: (collection, query, opts) =>
    call("GET", `collections/${seg(collection)}/subjects`, { ...opts, query }),
  getSubject: (collection, subjectId, opts) =>
    call("GET", `collections/${seg(collection)}/subjects/${seg(subjectId)}`, opts),
  createSubject: (collection, body) => call("POST", `collections/${seg(collection)}/subjects`, { json: body }),
  deleteSubject: (collection, subjectId) =>
    call("DELETE", `collections/${seg(collection)}/subjects/${seg(subjectId)}`),
  listFaces: (collection, subjectId, opts) =>
    call("GET", `collections/${seg(collection)}/subjects/${seg(subjectId)}/faces`, opts),
  deleteFace: (collection, faceId) => call("DELETE", `collections/${seg(collection)}/faces/${seg(faceId)}`),
  thumbnail: (collection, faceId, opts) =>
    call("GET", `collections/${seg(collection)}/faces/${seg(faceId)}/thumbnail`, { ...opts, as: "blob" }),
  enroll(collection, subjectId, files, query) {
    const form = new FormData();
    for (const file of files) form.append("images", file, file.name);
    return call("POST", `collections/${seg(collection)}/subjects/${seg(subjectId)}/faces`, { form, query });
  },
  identify(collection, file, query) {
    const form = new FormData();
    form.append("image", file, file.name);
    return call("POST", `collections/${seg(collection)}/identify`, { form, query });
  },
  verify(fileA, fileB, query) {
    const form = new FormData();
    form.append("image_a", fileA, fileA.name);
    form.append("image_b", fileB, fileB.name);
    return call("POST", "verify", { form, query });
  },
};
