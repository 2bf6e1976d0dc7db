// The network view: a run's hidden layers as columns, every unit (or an even sample of a wide
// layer, saying so) as a thumbnail of what it computes over the image, the layer's dynamics
// beside it (layers.csv at each epoch's end), a click enlarging one unit. It follows a training
// run: app.js hands it each live "epoch" event and it reloads the open run (GET .../network).

import { api, h, runPath } from "./api.js";

// The statistics drawn beside each column: [key, label, log scale].
const STATS = [
  ["grad_rms", "gradient RMS", true],
  ["dead_fraction", "dead units", false],
  ["act_std", "activation std", true],
  ["log10_update_ratio", "log10 update / weight", false],
];
const SPARK_W = 150, SPARK_H = 36;
const MIN_RELOAD_MS = 1000;

// A small SVG line of `values` (null: a gap), on a log axis with `log`.
function sparkline(values, log) {
  const ys = values.map((v) => (v === null || v === undefined || (log && v <= 0) ? null : (log ? Math.log10(v) : v)));
  const known = ys.filter((y) => y !== null);
  const lo = Math.min(...known), hi = Math.max(...known);
  const span = hi - lo || 1;
  const step = SPARK_W / Math.max(1, values.length - 1);
  let d = "", pen = false;
  ys.forEach((y, i) => {
    if (y === null) { pen = false; return; }
    d += `${pen ? "L" : "M"}${(i * step).toFixed(1)} ${(SPARK_H - 2 - ((y - lo) / span) * (SPARK_H - 4)).toFixed(1)}`;
    pen = true;
  });
  return h("svg", { class: "spark", viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, width: SPARK_W, height: SPARK_H,
    "aria-hidden": "true" }, d ? h("path", { d, fill: "none", stroke: "currentColor", "stroke-width": "1.5" }) : null);
}

function formatStat(value, log) {
  if (value === null || value === undefined) return "–";
  return log ? value.toExponential(1) : value.toFixed(2);
}

export class NetworkView {
  constructor() {
    this.dialog = document.getElementById("network-dialog");
    this.title = document.getElementById("network-title");
    this.info = document.getElementById("network-info");
    this.error = document.getElementById("network-error");
    this.columns = document.getElementById("network-columns");
    this.big = document.getElementById("network-unit");
    this.bigImg = document.getElementById("network-unit-img");
    this.bigText = document.getElementById("network-unit-text");
    this.tip = document.getElementById("network-tip");
    this.id = null;
    this.view = null;
    this.loading = false;
    this.loadedAt = -Infinity;
    this.timer = null;
    this.again = false;  // an epoch arrived while a load was in flight: load once more after it
    this.unit = null;  // [layer, unit] enlarged, kept across reloads
    this.images = new Map();  // layer -> its column's <img>, for the open run
    for (const button of this.dialog.querySelectorAll("[data-close]")) button.addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("click", (event) => { if (event.target === this.dialog) this.dialog.close(); });
  }

  open(id) {
    this.id = id;
    this.view = null;
    this.unit = null;
    this.images = new Map();
    this.big.hidden = true;
    this.columns.replaceChildren();
    this.title.textContent = `Network · ${id}`;
    if (!this.dialog.open) this.dialog.showModal();
    return this.load();
  }

  // A live "epoch" event for run `id` (app.js): the open view follows its run, at most one load
  // in flight and one a second (a small image trains several epochs a second).
  onEpoch(id) {
    if (!this.dialog.open || id !== this.id) return;
    if (this.loading || this.timer) { this.again = true; return; }
    const wait = Math.max(0, MIN_RELOAD_MS - (performance.now() - this.loadedAt));
    if (wait > 0) {
      this.timer = setTimeout(() => { this.timer = null; this.load(); }, wait);
      return;
    }
    this.load();
  }

  async load() {
    const id = this.id;
    this.loading = true;
    this.error.textContent = "";
    if (!this.view) this.info.textContent = "loading…";
    try {
      const view = await api(`${runPath(id)}/network`);
      if (id !== this.id) return;
      this.view = view;
      this.draw(view);
    } catch (error) {
      if (id !== this.id) return;
      this.info.textContent = "";
      this.error.textContent = error.message;
    } finally {
      this.loading = false;
      this.loadedAt = performance.now();
      if (this.again && id === this.id) { this.again = false; this.onEpoch(id); }
    }
  }

  draw(view) {
    this.info.textContent = `epoch ${view.epoch}`;
    this.info.dataset.epoch = String(view.epoch);
    const columns = view.layers.map((layer) => {
      const count = layer.sampled ? `${layer.shown.length} of ${layer.units} units, evenly sampled`
        : `${layer.units} units`;
      const stats = STATS.map(([key, label, log]) => {
        const values = layer.dynamics[key] || [];
        return h("div", { class: "network-stat", "data-stat": key },
          h("span", { class: "note" }, `${label} ${formatStat(values[values.length - 1], log)}`), sparkline(values, log));
      });
      return h("section", { class: "network-layer" },
        h("h3", {}, `Layer ${layer.layer}`),
        h("p", { class: "note", "data-testid": "network-count" }, `${count} · ${layer.activation}`),
        h("div", { class: "network-row" }, this.column(view, layer), h("div", { class: "network-stats" }, stats)));
    });
    this.columns.replaceChildren(...columns);
    if (this.unit) {  // the enlarged unit follows the run too, with its new range
      const [layer, unit] = this.unit;
      const column = view.layers.find((l) => l.layer === layer);
      const row = column ? column.shown.indexOf(unit) : -1;
      this.enlarge(layer, unit, row >= 0 ? column.ranges[row] : null);
    }
  }

  // A layer's column of thumbnails: one <img> a layer for the open run, kept across reloads, its
  // new picture swapped in once loaded (a fresh element would flash empty at every epoch). Its
  // size is set from the view, so the dialog never jumps while a picture loads.
  column(view, layer) {
    const [tw, th] = view.tile;
    let img = this.images.get(layer.layer);
    if (!img) {
      img = h("img", { class: "network-col", "data-testid": "network-layer", "data-layer": String(layer.layer),
        alt: `Layer ${layer.layer}`, src: layer.image });
      const unitAt = (event) => {  // [the view's layer, row] under the pointer, from the current view
        const now = this.view.layers.find((l) => l.layer === layer.layer);
        const [, height] = this.view.tile;
        const row = Math.floor((event.offsetY * img.naturalHeight / img.clientHeight) / (height + this.view.gutter));
        return now && row >= 0 && row < now.shown.length ? [now, row] : [null, null];
      };
      img.addEventListener("mousemove", (event) => {
        const [now, row] = unitAt(event);
        if (!now) { this.tip.hidden = true; return; }
        const [lo, hi] = now.ranges[row];
        this.tip.textContent = `unit ${now.shown[row]} · ${lo.toPrecision(3)} to ${hi.toPrecision(3)}`;
        this.tip.hidden = false;
        const box = this.columns.getBoundingClientRect();
        this.tip.style.left = `${event.clientX - box.left + 14}px`;
        this.tip.style.top = `${event.clientY - box.top + 14}px`;
      });
      img.addEventListener("mouseleave", () => { this.tip.hidden = true; });
      img.addEventListener("click", (event) => {
        const [now, row] = unitAt(event);
        if (now) this.enlarge(now.layer, now.shown[row], now.ranges[row]);
      });
      this.images.set(layer.layer, img);
    } else if (img.getAttribute("src") !== layer.image) {
      const next = new Image();
      next.addEventListener("load", () => { if (this.images.get(layer.layer) === img) img.src = next.src; });
      next.src = layer.image;
    }
    img.alt = `Layer ${layer.layer}: ${layer.shown.length} units`;
    img.style.width = `${tw}px`;  // a thumbnail a pixel a pixel: 32 of them stand ~830 px tall
    img.style.height = `${layer.shown.length * (th + view.gutter) - view.gutter}px`;
    return img;
  }

  enlarge(layer, unit, range) {
    this.unit = [layer, unit, range];
    this.big.hidden = false;
    this.bigImg.src = `${runPath(this.id)}/unit.png?layer=${layer}&unit=${unit}&epoch=${this.view?.epoch ?? ""}`;
    this.bigText.textContent = `layer ${layer}, unit ${unit}` + (range ? ` · ${range[0].toPrecision(3)} to ${range[1].toPrecision(3)}` : "");
  }
}
