// One run panel: target and reconstruction side by side, PSNR, epoch, a progress
// bar for the current epoch, a live PSNR-vs-epoch curve and the run's actions.
//
// Seeds of one recipe started together (a group) share one panel: it shows the
// first seed's frames and a curve of every seed's mean with a band from the
// lowest seed to the highest, as the reports draw it; its actions act on every seed.
//
// The panel only renders; app.js feeds it server events (update, progress,
// addRow, addSeedRow, frame) and receives the user's clicks through `hooks`.

import { fmtPsnr, fmtSeconds, h, icon, statusLabel, withVersion, ACTIVE } from "./api.js";
import { renderControl } from "./dialogs.js";

const ACTION_LABELS = { pause: "Pause", resume: "Resume", stop: "Stop" };

export class RunPanel {
  constructor(run, hooks) {
    this.id = run.id;
    this.hooks = hooks;
    this.rows = [];
    this.seedRows = new Map();  // the group's other seeds: run id -> metrics rows
    this.run = null;
    // Frame loading: at most one request in flight; only the newest wanted version is kept.
    this.wanted = null;
    this.loading = null;
    this.shown = null;
    this.failed = null;
    this.live = { epoch: null, fraction: 0 };  // the epoch in progress, from progress events
    this.build(run);
    this.update(run);
  }

  build(run) {
    const close = h("button", { class: "icon", type: "button", "aria-label": `Remove ${run.id} from view`,
      title: "Remove from view (the run goes on)", onclick: () => this.hooks.remove(this.id) }, icon("close"));
    this.title = h("h3", { class: "run-id", title: run.id }, run.id);
    this.sub = h("p", { class: "run-sub" });
    this.badge = h("span", { class: "badge", "data-testid": "status" });

    this.target = h("img", { "data-testid": "target", alt: `target image of ${run.id}`, decoding: "async" });
    this.target.addEventListener("load", () => this.pixelate());
    this.recon = h("img", { "data-testid": "reconstruction", alt: `reconstruction of ${run.id}`, decoding: "async" });
    this.recon.addEventListener("load", () => this.frameDone(true));
    this.recon.addEventListener("error", () => this.frameDone(false));
    this.placeholder = h("span", { class: "placeholder", "data-testid": "waiting" }, "waiting for the first frame");
    this.reconBox = h("figure", { class: "img-box empty" }, this.recon, this.placeholder);
    this.reconCaption = h("figcaption", {}, "reconstruction");
    const pair = h("div", { class: "pair" },
      h("div", {}, h("figure", { class: "img-box" }, this.target), h("figcaption", {}, "target")),
      h("div", {}, this.reconBox, this.reconCaption));
    this.pair = pair;

    this.psnr = h("span", { class: "psnr", "data-testid": "psnr" }, "–");
    this.epoch = h("span", { class: "epoch", "data-testid": "epoch" });
    this.extra = h("span", { class: "extra" });
    this.eta = h("span", { class: "extra eta", "data-testid": "eta" });
    this.bar = h("div", { class: "bar", role: "progressbar", "aria-label": "progress of the current epoch",
      "aria-valuemin": "0", "aria-valuemax": "100" }, h("span"));
    this.message = h("p", { class: "message", role: "status" });
    this.curve = h("div", { class: "curve" });
    this.seeds = h("p", { class: "seeds-line", "data-testid": "seeds", hidden: true });
    this.actions = h("div", { class: "actions" });
    this.extend = h("form", { class: "extend", hidden: true, onsubmit: (e) => this.submitExtend(e) },
      h("label", { for: `extend-${cssId(run.id)}` }, "Train to"),
      h("input", { id: `extend-${cssId(run.id)}`, type: "number", min: "1", step: "1", inputmode: "numeric" }),
      h("span", {}, "epochs"),
      h("button", { type: "submit", class: "small primary" }, "Train on"),
      h("button", { type: "button", class: "small ghost", onclick: () => { this.extend.hidden = true; } }, "Cancel"));

    this.el = h("article", { class: "panel", "data-testid": "panel", "data-run": run.id },
      h("header", {}, h("div", { class: "titles" }, this.title, this.sub), this.badge, close),
      pair,
      h("div", { class: "stats" }, this.psnr, h("div", { class: "stat-side" }, this.epoch, this.extra, this.eta)),
      this.bar, this.seeds, this.curve, this.message, this.actions, this.extend);

    // Nearest-neighbour scaling only where small images are blown up more than 2x.
    this.resize = new ResizeObserver(() => this.pixelate());
    this.resize.observe(pair);
  }

  destroy() {
    this.resize.disconnect();
    this.el.remove();
  }

  update(run) {
    const first = this.run === null;
    const old = this.run;
    this.run = run;
    if (first) {
      this.target.src = run.files?.target || "";
      const ratio = run.width && run.height ? `${run.width} / ${run.height}` : "1";
      for (const box of this.pair.querySelectorAll(".img-box")) box.style.aspectRatio = ratio;
    }
    this.sub.textContent = [run.describe, run.image, run.width && `${run.width}x${run.height}`].filter(Boolean).join(" · ");
    this.sub.title = this.sub.textContent;
    this.badge.textContent = statusLabel(run).text;
    this.badge.title = statusLabel(run).title;
    this.badge.className = `badge ${run.status}`;
    this.el.dataset.status = run.status;
    this.epoch.textContent = `${run.epoch} / ${run.epochs ?? "?"}`;
    this.epoch.title = `epoch ${run.epoch} of ${run.epochs ?? "?"} done`;
    this.extra.textContent = [run.best_psnr != null && run.best_psnr !== run.psnr ? `best ${fmtPsnr(run.best_psnr)}` : "",
      run.train_seconds ? fmtSeconds(run.train_seconds) : ""].filter(Boolean).join(" · ");
    if (run.psnr != null || this.rows.length === 0) this.psnr.textContent = fmtPsnr(run.psnr);
    this.message.textContent = run.message || "";
    this.message.hidden = !run.message;
    if (run.live) this.live = { epoch: run.live.epoch, fraction: run.live.fraction };
    if (!ACTIVE.has(run.status)) this.setProgress(run.status === "complete" ? 1 : null);
    else if (run.live) this.setProgress(run.live.fraction);
    const allowed = this.allowed();
    if (!old || old.status !== run.status || String(this.shownActions) !== String(allowed)
        || (old.epoch > 0) !== (run.epoch > 0)) this.renderActions();
    this.showSeeds();
    this.showWaiting();
    this.showEta();
    // A frame we have not seen: the live preview's version, or (no live preview) the last epoch's.
    // (Version 0 of a live run that has not rendered yet would only 404; a failed version is not retried.)
    const version = run.live?.version || (run.epoch > 0 ? `e${run.epoch}` : null);
    if (version && ![this.shown, this.wanted, this.loading, this.failed].includes(version)) this.frame(version);
    if (old && old.epochs !== run.epochs) this.drawCurve();
  }

  // The group's seeds (this run first), or this run alone.
  members() {
    const runs = this.run?.group && this.hooks.members ? this.hooks.members(this.id) : [];
    return runs.length ? runs : [this.run];
  }

  // What the buttons offer: the actions any of the group's seeds allows now (the server lists each run's).
  allowed() {
    const any = new Set(this.members().flatMap((run) => run.actions || []));
    return Object.keys(ACTION_LABELS).filter((action) => any.has(action));
  }

  // "3 seeds (0, 1, 2): 2 running, 1 queued · frames of seed 0"
  showSeeds() {
    const runs = this.members();
    this.seeds.hidden = !this.run.group;
    if (!this.run.group) return;
    const counts = new Map();
    for (const run of runs) counts.set(run.status, (counts.get(run.status) || 0) + 1);
    const states = [...counts].map(([status, n]) => `${n} ${status}`).join(", ");
    this.seeds.textContent = `${plural(runs.length, "seed")} (${runs.map((r) => r.seed).join(", ")}): ${states}`
      + ` · frames of seed ${this.run.seed}`;
    this.seeds.title = `a group of runs, one per seed: ${runs.map((r) => r.id).join(", ")}`;
  }

  renderActions() {
    const run = this.run;
    this.shownActions = this.allowed();
    // Only the actions that apply now (the server lists them); a complete run can be extended.
    const buttons = this.shownActions.map((action) =>
      h("button", { type: "button", class: `small ${action === "stop" ? "danger" : ""}`, "data-action": action,
        onclick: () => this.hooks.action(this.id, action) }, icon(action), ACTION_LABELS[action]));
    if (run.status === "complete") {
      buttons.push(h("button", { type: "button", class: "small", "data-action": "extend",
        title: "Train this run for more epochs", onclick: () => this.openExtend() }, icon("resume"), "Extend…"));
    }
    buttons.push(h("button", { type: "button", class: "small ghost", "data-action": "neurons",
      title: "Heatmaps of each hidden unit", onclick: () => this.hooks.neurons(this.id) }, icon("neurons"), "Neurons"));
    buttons.push(h("button", { type: "button", class: "small ghost", "data-action": "network",
      title: "Every layer as a column of its units, with its dynamics, following the run",
      onclick: () => this.hooks.network(this.id) }, icon("neurons"), "Network"));
    if (run.epoch > 0) buttons.push(renderControl(run));  // a checkpoint to render from
    this.actions.replaceChildren(...buttons);
    if (run.status !== "complete") this.extend.hidden = true;
  }

  openExtend() {
    const input = this.extend.querySelector("input");
    input.value = this.run.epoch * 2 || 1;
    input.min = String(this.run.epoch + 1);
    this.extend.hidden = false;
    input.focus();
    input.select();
  }

  submitExtend(event) {
    event.preventDefault();
    const epochs = Number(this.extend.querySelector("input").value);
    this.extend.hidden = true;
    this.hooks.action(this.id, "resume", Number.isInteger(epochs) && epochs > 0 ? { epochs } : undefined);
  }

  showMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  progress(epoch, fraction) {
    this.live = { epoch, fraction };
    if (this.run && ACTIVE.has(this.run.status)) this.setProgress(fraction);
    this.showWaiting();
    this.showEta();
  }

  // What the empty reconstruction waits for, from what the page already knows.
  showWaiting() {
    const run = this.run;
    let text = "waiting for the first frame";
    if (run.status === "queued") {
      const { running, ahead } = this.hooks.queue(this.id);
      text = running || ahead
        ? `queued behind ${plural(running, "training run")}${ahead ? ` and ${plural(ahead, "queued run")}` : ""}; `
          + "it starts when one of them ends"
        : "queued; starting…";
    } else if (run.status === "running") {
      text = this.live.epoch === null || !(this.live.fraction > 0)
        ? "starting the worker and compiling the training kernel…"
        : `epoch ${this.live.epoch} in progress: ${Math.floor(this.live.fraction * 100)}%`;
    } else if (run.status === "paused" || run.status === "interrupted") {
      text = `${run.status} before its first frame`;
    } else if (run.status === "elsewhere") {
      text = "another process is training it; this lab only watches";
    }
    if (this.placeholder.textContent !== text) this.placeholder.textContent = text;
  }

  // The time left at the last epochs' pace: the epochs, or the time limit if that ends the run first.
  showEta() {
    const run = this.run;
    const left = run.status === "running" ? timeLeft(run, this.rows, this.live) : null;
    let text = "", title = "";
    if (left) {
      const psnr = run.recipe?.until_psnr;
      text = `${psnr != null ? "≤ " : ""}${fmtSeconds(left.seconds)} left${left.limited ? " (time limit)" : ""}`;
      title = (left.limited ? `the time limit of ${fmtSeconds(run.recipe.time_limit)} of training ends the run `
        + `before its ${run.epochs} epochs` : `${run.epochs} epochs at the last epochs' pace`)
        + (psnr != null ? `; it stops sooner if it reaches ${psnr} dB, which cannot be predicted` : "");
    }
    if (this.eta.textContent !== text) this.eta.textContent = text;
    this.eta.title = title;
  }

  setProgress(fraction) {
    const pct = fraction === null || fraction === undefined ? 0 : Math.max(0, Math.min(1, fraction)) * 100;
    this.bar.firstChild.style.width = `${pct}%`;
    this.bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    this.bar.classList.toggle("idle", fraction === null);
  }

  // -- frames ------------------------------------------------------------------

  frame(version) {
    this.wanted = version;
    if (this.loading === null) this.loadFrame();
  }

  loadFrame() {
    this.loading = this.wanted;
    this.wanted = null;
    this.recon.src = withVersion(this.run.frame, this.loading);
  }

  frameDone(ok) {
    if (this.loading === null) return;
    if (!ok) this.failed = this.loading;
    if (ok) {
      this.shown = this.loading;
      this.reconBox.classList.remove("empty");
      this.pixelate();
    }
    this.loading = null;
    if (this.wanted !== null && this.wanted !== this.shown) this.loadFrame();
  }

  // Each image on its own: a live preview may be coarser than the target.
  pixelate() {
    const dpr = window.devicePixelRatio || 1;
    for (const img of [this.target, this.recon]) {
      const width = img.naturalWidth || this.run?.width;
      if (width) img.classList.toggle("pixelated", (img.clientWidth * dpr) / width > 2);
    }
  }

  // -- metrics and the PSNR curve ----------------------------------------------

  setRows(rows) {
    this.rows = rows.slice();
    this.afterRows();
  }

  addRow(row) {
    this.rows = withRow(this.rows, row);
    this.afterRows();
  }

  // Another seed of the group: its rows feed the band only.
  setSeedRows(id, rows) {
    this.seedRows.set(id, rows.slice());
    this.curveChanged();
  }

  addSeedRow(id, row) {
    this.seedRows.set(id, withRow(this.seedRows.get(id) || [], row));
    this.curveChanged();
  }

  afterRows() {
    const last = this.rows[this.rows.length - 1];
    if (last) {
      this.psnr.textContent = fmtPsnr(last.psnr);
      this.reconCaption.textContent = `epoch ${last.epoch}`;
    }
    this.curveChanged();
    this.showEta();
  }

  // New figures: this curve, and (through the page) every other one when the panels share an axis.
  curveChanged() {
    this.drawCurve();
    this.hooks.curveChanged?.(this);
  }

  band() {
    return this.run?.group ? seedBand([this.rows, ...this.seedRows.values()]) : null;
  }

  // What this panel's curve spans against ``by`` ("epoch" or "seconds"): the lowest and highest PSNR
  // (its seeds' band included) and the x axis's end (the run's epochs, or the training seconds so far).
  extent(by) {
    const band = this.band() || [];
    const points = curvePoints(this.rows, by);
    const psnr = [...points.map((p) => p.psnr), ...band.flatMap((b) => [b.low, b.high])];
    const xs = [...points.map((p) => p.x), ...band.map((b) => (by === "seconds" ? b.seconds : b.epoch))];
    const end = Math.max(by === "seconds" ? 0 : this.run?.epochs || 1, ...xs);
    return { lo: Math.min(...psnr), hi: Math.max(...psnr), end };
  }

  // The page's view (hooks.view): against epochs or training seconds, and the shared extent, if any.
  drawCurve() {
    const view = this.hooks.view ? this.hooks.view() : { by: "epoch", shared: null };
    const own = this.extent(view.by);
    this.curve.replaceChildren(psnrCurve(this.rows, { by: view.by, band: this.band(), end: (view.shared || own).end,
      range: view.shared }));
  }
}

// A run's curve: PSNR against the epoch, or against the training seconds up to the epoch's end.
export function curvePoints(rows, by = "epoch") {
  let seconds = 0;
  const points = [];
  for (const row of rows) {
    seconds += row.train_seconds || 0;
    if (Number.isFinite(row.psnr)) points.push({ x: by === "seconds" ? seconds : row.epoch, psnr: row.psnr });
  }
  return points;
}

// A run's rows with ``row`` appended; a resumed run rewrites its tail, so later epochs are dropped first.
function withRow(rows, row) {
  const kept = rows.length && rows.at(-1).epoch >= row.epoch ? rows.filter((r) => r.epoch < row.epoch) : rows.slice();
  kept.push(row);
  return kept;
}

// The seeds' PSNR at each epoch, over the seeds that reached it with a finite value, and their mean
// training seconds to it (report.py's _mean_curve, for the same picture in the lab):
// [{ epoch, seconds, mean, low, high, seeds }].
export function seedBand(seedRows) {
  const byEpoch = new Map();
  for (const rows of seedRows) {
    let seconds = 0;
    for (const row of rows) {
      seconds += row.train_seconds || 0;
      if (!Number.isFinite(row.psnr)) continue;
      if (!byEpoch.has(row.epoch)) byEpoch.set(row.epoch, []);
      byEpoch.get(row.epoch).push({ psnr: row.psnr, seconds });
    }
  }
  const mean = (values) => values.reduce((sum, v) => sum + v, 0) / values.length;
  return [...byEpoch].sort((a, b) => a[0] - b[0]).map(([epoch, points]) => {
    const psnr = points.map((p) => p.psnr);
    return { epoch, seeds: points.length, seconds: mean(points.map((p) => p.seconds)), mean: mean(psnr),
      low: Math.min(...psnr), high: Math.max(...psnr) };
  });
}

const cssId = (id) => id.replace(/[^A-Za-z0-9_-]/g, "_");
const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Wall seconds left for a training run, from its metrics rows (epoch, seconds: cumulative wall,
// train_seconds: that epoch's training) and the epoch in progress; null before the first epoch.
// The recipe's time_limit counts training seconds and is checked between epochs, so the run ends
// with the epoch that crosses it. until_psnr cannot be predicted: the caller says so.
export function timeLeft(run, rows, live) {
  if (!rows.length || !run.epochs) return null;
  const done = rows.at(-1).epoch;
  const fraction = live.epoch > done ? live.fraction || 0 : 0;
  const tail = rows.length > 5 ? rows.slice(-6) : [{ seconds: 0 }, ...rows];
  const walls = tail.slice(1).map((r, i) => r.seconds - tail[i].seconds).filter((s) => s > 0);
  const trains = rows.slice(-5).map((r) => r.train_seconds).filter((s) => s > 0);
  if (!walls.length || !trains.length) return null;
  let epochs = Math.max(0, run.epochs - done - fraction);
  let limited = false;
  const limit = run.recipe?.time_limit;
  if (limit) {
    const trained = rows.reduce((sum, r) => sum + r.train_seconds, 0);
    const byLimit = Math.max(1, Math.ceil((limit - trained) / median(trains))) - fraction;
    if (byLimit < epochs) [epochs, limited] = [byLimit, true];
  }
  return { seconds: epochs * median(walls), limited };
}

// PSNR as an inline SVG, against the epoch (``by`` "epoch": x from 1 to ``end``, the run's full
// length, so the curve grows rightwards) or the training seconds (from 0 to ``end``). y spans the
// values rounded out to 5 dB, or ``range`` ({lo, hi}) when the panels share one axis.
// With a band (seedBand), the seeds' range is shaded and their mean drawn dashed
// under this run's own line.
export function psnrCurve(rows, { by = "epoch", end = 1, band = null, range = null } = {}) {
  const W = 360, H = 112, L = 30, R = 8, T = 8, B = 18;
  const points = curvePoints(rows, by);
  const seconds = by === "seconds";
  const seeds = band && band.length ? Math.max(...band.map((b) => b.seeds)) : 0;
  const against = seconds ? "training seconds" : "epoch";
  const label = points.length ? `PSNR by ${against}, last ${points.at(-1).psnr.toFixed(2)} dB`
    : `PSNR by ${against}: no epochs yet`;
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, class: "psnr-curve", role: "img", "data-by": by,
    "data-range": range ? `${range.lo},${range.hi}` : "",
    "aria-label": seeds ? `${label}; the band spans ${plural(seeds, "seed")}, lowest to highest, the dashed line is their mean` : label });
  const values = range ? [range.lo, range.hi].filter(Number.isFinite)
    : [...points.map((p) => p.psnr), ...(band || []).flatMap((b) => [b.low, b.high])];
  let lo = Math.floor(Math.min(...values, 100) / 5) * 5;
  let hi = Math.ceil(Math.max(...values, -100) / 5) * 5;
  if (!values.length) { lo = 10; hi = 30; }
  if (hi - lo < 5) hi = lo + 5;
  const span = seconds ? (end > 0 ? end : 1) : end;
  const x = seconds ? (s) => L + (W - L - R) * (s / span)
    : (e) => L + (W - L - R) * (span <= 1 ? 1 : (e - 1) / (span - 1));
  const bandX = (b) => (seconds ? b.seconds : b.epoch);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const grid = h("g", { class: "grid" });
  const ticks = hi - lo > 20 ? [lo, (lo + hi) / 2, hi] : [lo, hi];
  for (const v of ticks) {
    grid.append(h("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      h("text", { x: L - 5, y: y(v) + 3.5, "text-anchor": "end" }, `${+v.toFixed(1)}`));
  }
  grid.append(h("text", { x: L, y: H - 4 }, seconds ? "0" : "1"),
    h("text", { x: W - R, y: H - 4, "text-anchor": "end" }, seconds ? `${fmtSeconds(span)} training` : `epoch ${span}`),
    h("text", { x: L + 4, y: T + 10, class: "unit" }, "dB"));
  svg.append(grid);
  if (band && band.length) {
    const upper = band.map((b) => `${x(bandX(b)).toFixed(1)},${y(b.high).toFixed(1)}`);
    const lower = band.map((b) => `${x(bandX(b)).toFixed(1)},${y(b.low).toFixed(1)}`).reverse();
    svg.append(
      h("path", { class: "band", "data-seeds": String(seeds), d: `M${[...upper, ...lower].join(" L")} Z` }),
      h("polyline", { class: "mean", points: band.map((b) => `${x(bandX(b)).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" ") }),
      h("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "unit" }, `${plural(seeds, "seed")}: mean, lowest to highest`));
  }
  if (points.length) {
    const line = points.map((p) => `${x(p.x).toFixed(1)},${y(p.psnr).toFixed(1)}`).join(" ");
    const first = x(points[0].x).toFixed(1), last = x(points.at(-1).x).toFixed(1);
    if (!seeds) svg.append(h("path", { class: "area", d: `M${first},${H - B} L${line.replaceAll(" ", " L")} L${last},${H - B} Z` }));
    svg.append(
      h("polyline", { class: "line", points: line }),
      h("circle", { class: "dot", cx: last, cy: y(points.at(-1).psnr).toFixed(1), r: 3 }));
  }
  return svg;
}
