// Two dialogs: the neuron view (one heatmap per hidden unit of a chosen layer)
// and a run's details (its animation, figures and downloads).

import { api, fmtPsnr, fmtSeconds, h, icon, runPath, statusLabel, withVersion, ACTIVE } from "./api.js";

function wireClose(dialog) {
  for (const button of dialog.querySelectorAll("[data-close]")) button.addEventListener("click", () => dialog.close());
  // A click on the backdrop (the dialog element itself, outside its content) closes it.
  dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
}

export class NeuronView {
  constructor(runs) {
    this.runs = runs;  // id -> RunSummary, kept current by app.js
    this.dialog = document.getElementById("neuron-dialog");
    this.title = document.getElementById("neuron-title");
    this.layer = document.getElementById("neuron-layer");
    this.refresh = document.getElementById("neuron-refresh");
    this.info = document.getElementById("neuron-info");
    this.error = document.getElementById("neuron-error");
    this.img = document.getElementById("neuron-img");
    this.tip = document.getElementById("neuron-tip");
    this.layout = null;
    this.seq = 0;
    wireClose(this.dialog);
    this.layer.addEventListener("change", () => this.load());
    this.refresh.addEventListener("click", () => this.load());
    this.img.addEventListener("mousemove", (e) => this.hover(e));
    this.img.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    // Small tiles are shown at up to twice their size (nearest neighbour); a big grid fits the width.
    this.img.addEventListener("load", () => { this.img.style.width = `${this.img.naturalWidth * 2}px`; });
  }

  open(id) {
    const run = this.runs.get(id);
    this.id = id;
    const layers = run?.layers || 1;
    const current = Number(this.layer.value) || 1;
    this.layer.replaceChildren(new Option("0 · encoding", "0"),
      ...Array.from({ length: layers }, (_, i) => new Option(`${i + 1}${i + 1 === layers ? " · last" : ""}`, String(i + 1))));
    this.layer.value = String(Math.min(Math.max(current, 1), layers));
    this.title.textContent = `Neurons · ${id}`;
    this.img.removeAttribute("src");
    this.img.hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    return this.load();
  }

  async load() {
    const seq = ++this.seq;
    const layer = this.layer.value;
    this.error.textContent = "";
    this.info.textContent = "loading…";
    this.refresh.hidden = !ACTIVE.has(this.runs.get(this.id)?.status);
    try {
      const layout = await api(`${runPath(this.id)}/neurons?layer=${encodeURIComponent(layer)}`);
      if (seq !== this.seq) return;
      this.layout = layout;
      const constant = layout.constant ? ` · ${layout.constant} constant` : "";
      const silent = layout.silent ? ` · ${layout.silent} never fire` : "";
      this.info.textContent = `${layout.units} units${constant}${silent} · epoch ${layout.epoch}`;
      this.img.hidden = false;
      this.img.src = layout.image;
    } catch (error) {
      if (seq !== this.seq) return;
      this.info.textContent = "";
      this.error.textContent = error.message;
      this.img.hidden = true;
    }
  }

  // Which tile is under the pointer: natural pixel -> (column, row) -> unit, if not in a gutter.
  hover(event) {
    const L = this.layout;
    if (!L || !this.img.naturalWidth) return;
    const scale = this.img.naturalWidth / this.img.clientWidth;
    const px = event.offsetX * scale, py = event.offsetY * scale;
    const [tw, th] = L.tile;
    const col = Math.floor(px / (tw + L.gutter)), row = Math.floor(py / (th + L.gutter));
    const inTile = px - col * (tw + L.gutter) < tw && py - row * (th + L.gutter) < th;
    const unit = row * L.columns + col;
    if (!inTile || col >= L.columns || row >= L.rows || unit >= L.units) { this.tip.hidden = true; return; }
    const range = L.ranges?.[unit];  // its values over the image: what the tile's colours stand for
    this.tip.textContent = (L.layer === 0 ? `feature ${unit}` : `unit ${unit}`)
      + (range ? ` · ${range[0].toPrecision(3)} to ${range[1].toPrecision(3)}` : "");
    this.tip.hidden = false;
    this.tip.style.left = `${this.img.offsetLeft + event.offsetX + 12}px`;
    this.tip.style.top = `${this.img.offsetTop + event.offsetY + 12}px`;
  }
}

const FILE_LABELS = { gif: "Animation (GIF)", mp4: "Video (MP4)", final: "Final image", recipe: "Recipe", curves: "Curves", target: "Target" };
const IMAGE_FILE = /\.(png|gif|jpe?g|svg|webp)(\?|$)/i;

// Where a download lands: the url's last path segment.
const fileName = (url) => decodeURIComponent(url.split("?")[0].split("/").pop() || "download");

export function downloadLinks(run) {
  const files = run.files || {};
  return ["gif", "mp4", "final", "recipe"].filter((k) => files[k]).map((k) =>
    h("a", { class: "dl", href: files[k], download: fileName(files[k]), title: `Download ${FILE_LABELS[k].toLowerCase()}` },
      icon("download"), { gif: "GIF", mp4: "MP4", final: "PNG", recipe: "recipe" }[k]));
}

// Widths offered for a render download; app.py's MAX_RENDER_WIDTH (4096) is the server's cap.
const RENDER_WIDTHS = [256, 512, 1024, 2048, 4096];

// A width and a link that renders the run's latest checkpoint at that width (GET .../render.png):
// the network is a function of continuous coordinates, so any width is a fresh image, not an upscale.
export function renderControl(run) {
  const select = h("select", { class: "render-width", "data-testid": "render-width",
    "aria-label": "Width of the rendered PNG" }, RENDER_WIDTHS.map((w) => new Option(`${w} px`, String(w))));
  select.value = "1024";
  // download="" lets the server's Content-Disposition name the file (run, width and height).
  const link = h("a", { class: "dl", "data-testid": "render", download: "",
    title: "Render the latest checkpoint at this width (big widths take a while)" }, icon("download"), "Render");
  const point = () => { link.href = `${runPath(run.id)}/render.png?width=${select.value}`; };
  select.addEventListener("change", point);
  point();
  return h("span", { class: "render" }, select, link);
}

export class RunDetails {
  constructor(hooks) {
    this.hooks = hooks;
    this.dialog = document.getElementById("details-dialog");
    this.title = document.getElementById("details-title");
    this.body = document.getElementById("details-body");
    wireClose(this.dialog);
  }

  async open(run) {
    this.title.textContent = run.id;
    this.render(run, null);
    if (!this.dialog.open) this.dialog.showModal();
    try {
      const answer = await api(runPath(run.id));
      if (this.dialog.open && this.title.textContent === run.id) this.render(answer.run, answer.metrics);
    } catch (error) {
      this.body.append(h("p", { class: "error" }, error.message));
    }
  }

  render(run, metrics) {
    const files = run.files || {};
    const figure = (url, caption, cls = "") => {
      const img = h("img", { src: url, alt: caption, decoding: "async" });
      // Small runs' images are blown up: keep their pixels sharp (not for plotted figures).
      if (cls !== "wide") img.addEventListener("load", () => img.classList.toggle("pixelated", img.clientWidth > 2 * img.naturalWidth));
      return h("figure", { class: cls }, img, h("figcaption", {}, caption));
    };
    const main = files.gif ? figure(files.gif, "learning.gif", "hero")
      : files.final ? figure(files.final, "final image", "hero")
      : run.epoch > 0 ? figure(withVersion(run.frame, `e${run.epoch}`), "current frame", "hero")
      : figure(files.target, "target", "hero");
    const figures = [];
    if (files.target && (files.gif || files.final || run.epoch > 0)) figures.push(figure(files.target, "target"));
    if (files.final && files.gif) figures.push(figure(files.final, "final"));
    // Figures: the curves, and any other image the server lists that we do not know by name.
    for (const [key, url] of Object.entries(files)) {
      if (!url || ["gif", "final", "target", "mp4", "recipe"].includes(key) || !IMAGE_FILE.test(url)) continue;
      figures.push(figure(url, FILE_LABELS[key] || key, "wide"));
    }
    const facts = [
      ["status", statusLabel(run).text], ["image", [run.image, run.width && `${run.width}x${run.height}`].filter(Boolean).join(" · ")],
      ["recipe", run.describe], ["preset", run.preset || "–"], ["epochs", `${run.epoch} / ${run.epochs ?? "?"}`],
      ["PSNR", fmtPsnr(run.psnr)], ["best PSNR", fmtPsnr(run.best_psnr)], ["MAE", run.mae != null ? run.mae.toFixed(4) : "–"],
      ["training", fmtSeconds(run.train_seconds) || "–"], ["created", run.created || "–"],
    ];
    if (metrics && metrics.length) {
      const best = metrics.filter((m) => Number.isFinite(m.psnr)).reduce((a, b) => (b.psnr > a.psnr ? b : a), { psnr: -Infinity });
      if (best.epoch) facts.splice(7, 0, ["best at", `epoch ${best.epoch}`]);
    }
    const button = (label, iconName, fn) => h("button", { type: "button", class: "small",
      onclick: () => { this.dialog.close(); fn(run.id); } }, icon(iconName), label);
    const links = downloadLinks(run);
    if (run.epoch > 0) links.push(renderControl(run));  // a checkpoint to render from
    this.body.replaceChildren(
      h("div", { class: "details-top" }, main,
        h("div", { class: "side" },
          h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
          run.message ? h("p", { class: "message" }, run.message) : null,
          links.length ? h("div", { class: "row-actions" }, h("span", { class: "note" }, "Download"), links) : null,
          h("div", { class: "row-actions" }, button("Watch", "eye", this.hooks.watch),
            button("Run again", "again", this.hooks.again), button("Compare with…", "compare", this.hooks.compare)))),
      figures.length ? h("div", { class: "figures" }, figures) : null,
      h("details", { class: "recipe-json" }, h("summary", {}, "Recipe"), h("pre", {}, JSON.stringify(run.recipe, null, 2))));
  }
}
