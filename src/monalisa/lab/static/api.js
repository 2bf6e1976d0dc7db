// The server's JSON API, and small DOM and number helpers shared by the page's modules.
//
// Every error the server sends is {"error": "<one line>", "field": name | null};
// api() turns it into an ApiError carrying both, so a caller can put the
// message next to the field it names.

export class ApiError extends Error {
  constructor(message, field = null, status = 0) {
    super(message);
    this.field = field;
    this.status = status;
  }
}

export async function api(path, { method = "GET", body, form } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (form) init.body = form;  // multipart: the browser writes the boundary header
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError("cannot reach the server; is `monalisa serve` still running?");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: a proxy's error page, or an empty body.
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error
      : data && typeof data.detail === "string" ? data.detail
      : `${method} ${path} failed: HTTP ${response.status}`;
    throw new ApiError(message, data ? data.field ?? null : null, response.status);
  }
  return data;
}

// Run ids may hold slashes (runs nested in comparison directories): encode each
// segment, keep the slashes.
export const runPath = (id) => "/api/runs/" + id.split("/").map(encodeURIComponent).join("/");

export const withVersion = (url, v) => `${url}${url.includes("?") ? "&" : "?"}v=${encodeURIComponent(v)}`;

// h("button", {class: "x", onclick: f}, "text", child) -> element.
// Attributes: "class", "text", on* handlers, dataset via "data-*", booleans drop when false.
export function h(tag, attrs = {}, ...children) {
  const node = tag === "svg" || SVG_TAGS.has(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const SVG_TAGS = new Set(["path", "polyline", "line", "text", "g", "rect", "circle", "defs", "linearGradient", "stop"]);

// A small inline icon; paths are 24x24 strokes (see style.css: svg.i).
const ICONS = {
  pause: "M9 5v14M15 5v14",
  resume: "M8 5v14l11-7z",
  stop: "M6 6h12v12H6z",
  neurons: "M4 4h6v6H4zM14 4h6v6h-6zM4 14h6v6H4zM14 14h6v6h-6z",
  close: "M6 6l12 12M18 6 6 18",
  download: "M12 4v11m0 0-4-4m4 4 4-4M5 19h14",
  eye: "M2 12s3.5-6 10-6 10 6 10 6-3.5 6-10 6S2 12 2 12zm10 3a3 3 0 1 0 0-6 3 3 0 0 0 0 6z",
  again: "M4 12a8 8 0 0 1 14-5.3L20 9M20 4v5h-5M20 12a8 8 0 0 1-14 5.3L4 15M4 20v-5h5",
  compare: "M4 5h7v14H4zM13 5h7v14h-7z",
  info: "M12 11v6M12 7.5v.01M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z",
};
export const icon = (name) => h("svg", { class: "i", viewBox: "0 0 24 24", "aria-hidden": "true" },
  h("path", { d: ICONS[name] }));

export const fmtPsnr = (v) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : `${v.toFixed(2)} dB`);

export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  if (s < 60) return `${s.toFixed(s < 1 ? 2 : s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")} min`;
}

// The server's status table (monalisa/status.py, served by /api/options): ACTIVE runs may still
// change (panels are shown for these on load), BUSY ones have a worker on them. Filled once by
// useStatuses() before anything reads them, so the page never keeps its own copy.
export const ACTIVE = new Set();
export const BUSY = new Set();
export function useStatuses(statuses) {
  for (const [name, status] of Object.entries(statuses)) {
    if (status.active) ACTIVE.add(name);
    if (status.busy) BUSY.add(name);
  }
}

// A run's status as the page words it, and its tooltip: a run another process writes (a CLI train, a
// second lab) is "running elsewhere", its tooltip naming that process's pid; every other status is its own name.
export function statusLabel(run) {
  if (run.status !== "elsewhere") return { text: run.status, title: run.message || run.status };
  return { text: "running elsewhere", title: run.message || "another process is writing this run" };
}

// Debounce: call fn `ms` after the last call; .now() runs it at once, .cancel() drops it.
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  wrapped.cancel = () => { clearTimeout(timer); timer = null; };
  return wrapped;
}
