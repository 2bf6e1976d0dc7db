// monalisa lab, the page: choose an image and a recipe, start runs, watch them train.
//
// Modules: api.js (the server's JSON API, DOM helpers), recipe.js (the form and
// TOML text, kept in sync), panels.js (a live run panel and its PSNR curve),
// runs.js (the list of every run), dialogs.js (neuron view, run details).
//
// Data flow: the server is the only source of truth. /api/runs gives every run
// once; /api/events (Server-Sent Events) then pushes each change, and a
// reconnect fetches /api/runs again to catch up. The page's own state (image,
// size, preset, changed recipe fields, watched runs, tab) lives in the URL, so
// a link reproduces the set-up and a reload finds everything.

import { api, h, runPath, useStatuses, ACTIVE, BUSY } from "./api.js";
import { RecipeEditor } from "./recipe.js";
import { RunPanel } from "./panels.js";
import { RunList } from "./runs.js";
import { NeuronView, RunDetails } from "./dialogs.js";
import { NetworkView } from "./network.js";

const $ = (selector) => document.querySelector(selector);

const state = {
  options: null,
  images: { builtin: [], uploads: [], default: "astronaut" },
  image: null,          // image id: a built-in name, upload:<hex> or run:<id>
  size: null,
  seeds: "1",           // the Seeds field as typed: a count or a list; the server reads it
  curves: { by: "epoch", shared: false },  // the panels' PSNR curves: against epochs or training seconds, one axis
  runs: new Map(),      // id -> RunSummary, newest first (Map keeps insertion order)
  panels: new Map(),    // panel key (keyOf) -> RunPanel, in page order
  dismissed: new Set(), // panel keys of active runs the user took out of view; not brought back this session
  tab: "lab",
  ready: false,         // set once the URL's set-up is loaded
};

let editor, runList, neurons, network, details;

async function main() {
  // Start stays disabled (index.html) until the URL's set-up is loaded; never a native form submit.
  $("#setup").addEventListener("submit", (event) => (state.ready ? start(event) : event.preventDefault()));
  let options, images;
  try {
    [options, images] = await Promise.all([api("/api/options"), api("/api/images")]);
  } catch (error) {
    document.querySelector("main").prepend(h("p", { class: "fatal", role: "alert" }, error.message));
    return;
  }
  state.options = options;
  useStatuses(options.statuses);
  state.images = images;
  const params = new URLSearchParams(location.search);

  editor = new RecipeEditor($("#setup"), options);
  editor.addEventListener("change", writeUrl);
  runList = new RunList($("#run-list"), $("#runs-count"), { details: openDetails, watch, again: runAgain, compare });
  neurons = new NeuronView(state.runs);
  network = new NetworkView();
  details = new RunDetails({ watch, again: runAgain, compare });

  // Image and size.
  state.image = params.get("image") || images.default;
  state.size = params.get("size") || options.default_size;
  $("#sizes").replaceChildren(...options.sizes.map((s) => new Option(s === "full" ? "full size" : `${s} px`, s)));
  $("#size").value = state.size;
  $("#size").addEventListener("input", () => { state.size = $("#size").value.trim(); clearError("size"); sizeNote(); writeUrl(); });
  renderGallery();
  wireUpload();
  state.curves = { by: params.get("x") === "seconds" ? "seconds" : "epoch", shared: params.get("axis") === "shared" };
  wireCurveControls();
  state.seeds = params.get("seeds") || "1";
  $("#seeds").value = state.seeds;
  $("#seeds").addEventListener("input", () => { state.seeds = $("#seeds").value.trim(); clearError("seeds"); writeUrl(); });

  // Recipe: the preset plus the fields the URL changes.
  const preset = params.get("preset") || options.default_preset;
  await editor.load(preset, editor.changesFromParams(params, preset));

  // Runs: the watched ones (URL order), then every active one.
  await refreshRuns({ addActive: false });
  for (const id of params.getAll("watch")) await watch(id, { quiet: true, end: true });
  for (const run of state.runs.values()) if (ACTIVE.has(run.status)) addPanel(run.id, { end: true });

  state.ready = true;
  $("#start").disabled = false;
  wireTabs();
  switchTab(params.get("view") === "runs" ? "runs" : "lab");
  connectEvents();
  writeUrl();
}

// -- the URL -------------------------------------------------------------------

function writeUrl() {
  if (!editor) return;
  const params = new URLSearchParams();
  params.set("image", state.image);
  params.set("size", state.size);
  params.set("preset", editor.preset);
  for (const [name, value] of editor.changedFields()) params.set(name, value);
  if (state.seeds && state.seeds !== "1") params.set("seeds", state.seeds);
  if (state.curves.by === "seconds") params.set("x", "seconds");
  if (state.curves.shared) params.set("axis", "shared");
  for (const panel of state.panels.values()) params.append("watch", panel.id);
  if (state.tab === "runs") params.set("view", "runs");
  const query = `?${params.toString().replaceAll("%3A", ":").replaceAll("%2F", "/").replaceAll("%2C", ",")}`;
  if (query !== location.search) history.replaceState(null, "", query);
}

// -- images ----------------------------------------------------------------------

function imageInfo(id) {
  const known = [...state.images.builtin, ...state.images.uploads].find((i) => i.id === id);
  if (known) return known;
  if (id && id.startsWith("run:")) {
    const run = state.runs.get(id.slice(4));
    return { id, name: run ? `${run.image} (as run ${run.id} trained on it)` : `the image of run ${id.slice(4)}`,
      width: run?.width, height: run?.height, thumbnail: run?.files?.target };
  }
  return { id, name: id };
}

function thumbButton(image) {
  const selected = image.id === state.image;
  return h("button", { type: "button", class: `thumb${selected ? " selected" : ""}`, "data-image": image.id,
    "aria-pressed": selected ? "true" : "false", title: `${image.name} · ${image.width}x${image.height}`,
    onclick: () => selectImage(image.id) },
    h("img", { src: image.thumbnail, alt: image.name, loading: "lazy", decoding: "async" }));
}

function renderGallery() {
  $("#gallery").replaceChildren(...state.images.builtin.map(thumbButton));
  const uploads = $("#uploads");
  uploads.replaceChildren(...state.images.uploads.map(thumbButton));
  uploads.hidden = state.images.uploads.length === 0;
  const info = imageInfo(state.image);
  $("#chosen").replaceChildren(
    info.thumbnail ? h("img", { src: info.thumbnail, alt: "" }) : h("span", { class: "no-thumb" }),
    h("div", {}, h("strong", {}, info.name), h("span", { class: "note" },
      info.width ? `${info.width}x${info.height} px` : "")));
  sizeNote();
}

function selectImage(id) {
  state.image = id;
  clearError("image");
  renderGallery();
  writeUrl();
}

// What the chosen size means for the chosen image: the pixels an epoch visits.
function sizeNote() {
  const info = imageInfo(state.image);
  const size = state.size || "";
  let w = null, hgt = null;
  const box = /^(\d+)x(\d+)$/i.exec(size);
  if (box) [w, hgt] = [Number(box[1]), Number(box[2])];
  else if (info.width && size === "full") [w, hgt] = [info.width, info.height];
  else if (info.width && /^\d+$/.test(size)) {
    const scale = Number(size) / Math.max(info.width, info.height);
    [w, hgt] = [Math.max(1, Math.round(info.width * scale)), Math.max(1, Math.round(info.height * scale))];
  }
  $("#size-note").textContent = w ? `trains on ${w}x${hgt}: ${(w * hgt).toLocaleString("en")} pixels an epoch` : "";
}

function wireUpload() {
  const input = $("#upload");
  input.addEventListener("change", () => { if (input.files[0]) upload(input.files[0]); input.value = ""; });
  // Drop anywhere on the page; the veil says what will happen.
  const veil = $("#dropveil");
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; veil.hidden = false; } });
  document.addEventListener("dragleave", (e) => { if (hasFiles(e) && --depth <= 0) { depth = 0; veil.hidden = true; } });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    veil.hidden = true;
    const file = e.dataTransfer.files[0];
    if (file) { switchTab("lab"); upload(file); }
  });
}

async function upload(file) {
  const drop = $("#drop");
  clearError("file");
  drop.classList.add("busy");
  drop.querySelector("span").textContent = `Uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  try {
    const image = await api("/api/images", { method: "POST", form });
    state.images.uploads = [image, ...state.images.uploads.filter((i) => i.id !== image.id)];
    selectImage(image.id);
  } catch (error) {
    $('[data-error-for="file"]').textContent = error.message;
  } finally {
    drop.classList.remove("busy");
    drop.querySelector("span").innerHTML = "<strong>Upload an image</strong> or drop one here";
  }
}

function clearError(field) {
  const slot = document.querySelector(`[data-error-for="${field}"]`);
  if (slot) slot.textContent = "";
  document.getElementById(field)?.removeAttribute("aria-invalid");
}

// -- starting runs -------------------------------------------------------------------

async function start(event) {
  event.preventDefault();
  const button = $("#start");
  button.disabled = true;
  for (const field of ["image", "size", "file", "seeds"]) clearError(field);
  try {
    const answer = await api("/api/runs", { method: "POST",
      body: { image: state.image, size: state.size, seeds: state.seeds || null, ...editor.request() } });
    notice("");
    for (const run of answer.runs) upsertRun(run);
    const panel = addPanel(answer.run.id);
    panel?.el.scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (error) {
    editor.showError(error);  // next to the field the server names (image, size, a recipe field, the text)
  } finally {
    button.disabled = false;
  }
}

function notice(text) {
  const box = $("#notice");
  box.replaceChildren(h("span", {}, text), h("button", { type: "button", class: "icon", "aria-label": "Dismiss",
    onclick: () => { box.hidden = true; } }, h("svg", { viewBox: "0 0 24 24", "aria-hidden": "true" }, h("path", { d: "M6 6l12 12M18 6 6 18" }))));
  box.hidden = !text;
}

// -- runs and panels --------------------------------------------------------------------

async function refreshRuns({ metrics = false, addActive = true } = {}) {
  let answer;
  try {
    answer = await api("/api/runs");
  } catch {
    return;  // the event stream's reconnect will try again
  }
  state.runs.clear();
  for (const run of answer.runs) state.runs.set(run.id, run);
  for (const panel of state.panels.values()) {
    const run = state.runs.get(panel.id);
    if (run) panel.update(run);
    if (metrics) for (const member of members(panel.id)) loadMetrics(member.id);
  }
  if (addActive) for (const run of answer.runs) if (ACTIVE.has(run.status)) addPanel(run.id, { end: true });
  renderRuns();
}

function upsertRun(run) {
  if (!state.runs.has(run.id)) {
    const rest = [...state.runs.entries()];
    state.runs.clear();
    state.runs.set(run.id, run);
    for (const [id, r] of rest) state.runs.set(id, r);
  } else state.runs.set(run.id, run);
  const panel = state.panels.get(keyOf(run.id));
  if (panel) {
    panel.update(state.runs.get(panel.id));  // a seed of its group changed: the counts and the actions
    if (panel.id !== run.id && !panel.seedRows.has(run.id)) loadMetrics(run.id);  // a seed it has not seen
  } else if (ACTIVE.has(run.status)) addPanel(run.id);
  for (const other of state.panels.values()) if (other !== panel) other.showWaiting();  // a queue moved
  if (state.image === `run:${run.id}`) renderGallery();
  renderRuns();
}

// Seeds of one recipe started together share a group, and the group one panel: keyed by the group,
// showing the run it was opened for (the first seed, from the page) and every seed's band.
function keyOf(id) {
  const run = state.runs.get(id);
  return run?.group ? `group:${run.group}` : id;
}

// The runs of ``id``'s group, ``id`` first, then by seed; [run] for a run on its own.
function members(id) {
  const run = state.runs.get(id);
  if (!run) return [];
  if (!run.group) return [run];
  const others = [...state.runs.values()].filter((r) => r.group === run.group && r.id !== id);
  return [run, ...others.sort((a, b) => a.seed - b.seed)];
}

// Show a panel for a known run (newest first unless `end`); dismissed active runs stay hidden
// unless the user asks for them (`force`).
function addPanel(id, { end = false, force = false } = {}) {
  const key = keyOf(id);
  if (state.panels.has(key)) return state.panels.get(key);
  if (state.dismissed.has(key) && !force) return null;
  if (!state.runs.has(id)) return null;
  // A group opens on its lowest seed, unless the user asked for one of its runs.
  const run = force ? state.runs.get(id) : members(id).reduce((low, r) => (r.seed < low.seed ? r : low));
  state.dismissed.delete(key);
  const panel = new RunPanel(run, {
    action: runAction,
    remove: removePanel,
    neurons: (runId) => neurons.open(runId),
    network: (runId) => network.open(runId),
    queue: queueOf,
    members,
    view: curveView,
    curveChanged,
  });
  const box = $("#panels");
  if (end) box.append(panel.el);
  else box.prepend(panel.el);
  const entries = [...state.panels.entries()];
  state.panels.clear();
  if (end) for (const [k, v] of [...entries, [key, panel]]) state.panels.set(k, v);
  else for (const [k, v] of [[key, panel], ...entries]) state.panels.set(k, v);
  boardChanged();
  for (const member of members(run.id)) loadMetrics(member.id);
  writeUrl();
  return panel;
}

// Where a queued run stands: the runs training now, and the queued runs created before it.
function queueOf(id) {
  const me = state.runs.get(id);
  let running = 0, ahead = 0;
  for (const run of state.runs.values()) {
    if (BUSY.has(run.status)) running++;
    else if (run.status === "queued" && run.id !== id && (run.created || "") < (me?.created || "")) ahead++;
  }
  return { running, ahead };
}

// -- the curves' axes -----------------------------------------------------------------------

function wireCurveControls() {
  const by = $("#curve-by"), shared = $("#curve-shared");
  by.value = state.curves.by;
  shared.checked = state.curves.shared;
  by.addEventListener("change", () => { state.curves.by = by.value; redrawCurves(); writeUrl(); });
  shared.addEventListener("change", () => { state.curves.shared = shared.checked; redrawCurves(); writeUrl(); });
}

// What a panel's curve is drawn against, and (one axis for all) the extent every panel in view spans.
function curveView() {
  const { by, shared } = state.curves;
  if (!shared || state.panels.size < 2) return { by, shared: null };
  const extents = [...state.panels.values()].map((panel) => panel.extent(by));
  const finite = (values) => values.filter(Number.isFinite);
  return { by, shared: { lo: Math.min(...finite(extents.map((e) => e.lo))), hi: Math.max(...finite(extents.map((e) => e.hi))),
    end: Math.max(...extents.map((e) => e.end)) } };
}

function redrawCurves() {
  for (const panel of state.panels.values()) panel.drawCurve();
}

// One panel's figures changed: on one axis, the others may have to make room.
function curveChanged(changed) {
  if (!state.curves.shared) return;
  for (const panel of state.panels.values()) if (panel !== changed) panel.drawCurve();
}

function boardChanged() {
  const n = state.panels.size;
  $("#empty").hidden = n > 0;
  $("#board-head").hidden = n === 0;
  $("#board-count").textContent = `${n} run${n === 1 ? "" : "s"}`;
}

// A run's metrics into its panel: its own rows, or one seed's rows of a group's band.
async function loadMetrics(id) {
  try {
    const answer = await api(runPath(id));
    const panel = state.panels.get(keyOf(id));
    if (!panel) return;
    state.runs.set(id, answer.run);
    if (panel.id !== id) panel.setSeedRows(id, answer.metrics || []);
    else panel.setRows(answer.metrics || []);
    panel.update(state.runs.get(panel.id));
  } catch {
    // A run deleted on disk: its panel keeps what it had.
  }
}

function removePanel(id) {
  const key = keyOf(id);
  const panel = state.panels.get(key);
  if (!panel) return;
  panel.destroy();
  state.panels.delete(key);
  state.dismissed.add(key);
  redrawCurves();  // on one axis, what is left may span less
  boardChanged();
  writeUrl();
}

// A panel's button: on its run, or on every seed of its group that allows it ("Extend…" on the complete ones).
async function runAction(id, action, body) {
  const panel = state.panels.get(keyOf(id));
  const allows = (run) => (body && action === "resume" ? run.status === "complete" : (run.actions || []).includes(action));
  const targets = members(id).filter(allows);
  for (const run of targets.length ? targets : [state.runs.get(id)].filter(Boolean)) {
    try {
      const answer = await api(`${runPath(run.id)}/${action}`, { method: "POST", body });
      upsertRun(answer.run);
    } catch (error) {
      panel?.showMessage(error.message);
    }
  }
}

// Pin a run as a panel (from the runs view, or the URL on load).
async function watch(id, { quiet = false, end = false } = {}) {
  if (!state.runs.has(id)) {
    try {
      const answer = await api(runPath(id));
      state.runs.set(id, answer.run);
    } catch {
      return null;  // gone: drop it from the URL
    }
  }
  const panel = addPanel(id, { end, force: true });
  if (!quiet && panel) {
    switchTab("lab");
    panel.el.scrollIntoView({ behavior: "smooth", block: "nearest" });
    flash(panel.el);
  }
  return panel;
}

// The size a run trained at, as the size field writes it.
function sizeOf(run) {
  if (!run.width || !run.height) return state.options.default_size;
  const longest = String(Math.max(run.width, run.height));
  return state.options.sizes.includes(longest) ? longest : `${run.width}x${run.height}`;
}

function useRunImage(run) {
  state.image = run.source || `run:${run.id}`;
  state.size = state.image.startsWith("run:") ? "full" : sizeOf(run);
  $("#size").value = state.size;
  clearError("image");
  clearError("size");
  renderGallery();
}

async function runAgain(id) {
  const run = state.runs.get(id);
  if (!run) return;
  useRunImage(run);
  await editor.load(run.preset || state.options.default_preset, run.recipe);
  switchTab("lab");
  notice(`Filled in from ${run.id}. Change what you like, then Start.`);
  $("#setup").scrollIntoView({ behavior: "smooth", block: "start" });
  writeUrl();
}

// "Compare with...": the run's image and size, the run in view, and as many seeds as its group has,
// so the new recipe's band is drawn from as many seeds as the one it is compared with.
async function compare(id) {
  const run = state.runs.get(id);
  if (!run) return;
  useRunImage(run);
  const seeds = members(id).length;
  state.seeds = String(seeds);
  $("#seeds").value = state.seeds;
  clearError("seeds");
  await watch(id, { quiet: true });
  switchTab("lab");
  notice(`Comparing with ${run.describe} (${run.id}${seeds > 1 ? `, ${seeds} seeds` : ""}): pick another recipe, `
    + `then Start: the new ${seeds > 1 ? `runs train as ${seeds} seeds` : "run trains"} beside it.`);
  $("#setup").querySelector(".recipe").scrollIntoView({ behavior: "smooth", block: "start" });
  flash($("#preset"));
  writeUrl();
}

function openDetails(id) {
  const run = state.runs.get(id);
  if (run) details.open(run);
}

function flash(node) {
  node.classList.remove("flash");
  void node.offsetWidth;  // restart the animation
  node.classList.add("flash");
}

// -- the runs view -----------------------------------------------------------------------

let renderQueued = false;
function renderRuns() {
  if (state.tab !== "runs" || renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; runList.render([...state.runs.values()]); });
}

function wireTabs() {
  const tabs = [$("#tab-lab"), $("#tab-runs")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => switchTab(tab.id.slice(4)));
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const other = tabs.find((t) => t !== tab);
      other.focus();
      switchTab(other.id.slice(4));
    });
  }
  $("#runs-refresh").addEventListener("click", () => refreshRuns());
}

function switchTab(name) {
  const changed = state.tab !== name;
  state.tab = name;
  for (const which of ["lab", "runs"]) {
    const on = which === name;
    $(`#tab-${which}`).setAttribute("aria-selected", String(on));
    $(`#tab-${which}`).tabIndex = on ? 0 : -1;
    $(`#view-${which}`).hidden = !on;
  }
  if (name === "runs") {
    renderRuns();
    if (changed) refreshRuns();  // CLI runs appear on disk without events
  }
  writeUrl();
}

// -- live events ----------------------------------------------------------------------------

function connectEvents() {
  const conn = $("#conn");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    conn.textContent = "live";
    conn.className = "conn live";
    // Catch up on what happened while there was no stream (before the first
    // connection, or during a reconnect): the runs and the watched runs' metrics.
    refreshRuns({ metrics: true });
  });
  source.addEventListener("error", () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn down";
  });
  source.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    const panel = state.panels.get(keyOf(event.id));
    const own = panel?.id === event.id;  // a group's other seeds feed only its band
    if (event.type === "epoch") network.onEpoch(event.id);  // the network view follows its run
    if (event.type === "run") upsertRun(event.run);
    else if (event.type === "epoch") own ? panel.addRow(event.row) : panel?.addSeedRow(event.id, event.row);
    else if (!own) return;
    else if (event.type === "progress") panel.progress(event.epoch, event.fraction);
    else if (event.type === "frame") panel.frame(event.version);
  });
}

main();
