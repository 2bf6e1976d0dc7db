// The runs view: every run directory the server knows (CLI runs too), newest first.
// Rows are keyed by run id and updated in place, so a live run's row does not
// reload every thumbnail on the page each epoch.

import { fmtPsnr, h, icon, statusLabel, withVersion, ACTIVE } from "./api.js";
import { downloadLinks } from "./dialogs.js";

export class RunList {
  constructor(root, count, hooks) {
    this.root = root;
    this.count = count;
    this.hooks = hooks;
    this.rows = new Map();  // id -> row element
  }

  // Show `runs` (newest first), reusing the rows of runs that did not change.
  render(runs) {
    const seen = new Set();
    let before = this.root.firstChild;
    for (const run of runs) {
      seen.add(run.id);
      let row = this.rows.get(run.id);
      const key = JSON.stringify([run.status, run.epoch, run.epochs, run.psnr, run.files, run.live?.version, run.actions]);
      if (!row || row.dataset.key !== key) {
        const fresh = this.row(run);
        fresh.dataset.key = key;
        if (row) {
          row.replaceWith(fresh);
          if (before === row) before = fresh;  // the old row was the anchor: it is out of the page now
        }
        row = fresh;
        this.rows.set(run.id, row);
      }
      if (row !== before) this.root.insertBefore(row, before);
      before = row.nextSibling;
    }
    for (const [id, row] of this.rows) if (!seen.has(id)) { row.remove(); this.rows.delete(id); }
    const active = runs.filter((r) => ACTIVE.has(r.status)).length;
    this.count.textContent = runs.length ? `${runs.length} run${runs.length === 1 ? "" : "s"}${active ? `, ${active} active` : ""}` : "";
    if (!runs.length) {
      this.root.replaceChildren(h("p", { class: "empty-list" },
        "No runs yet. Start one in the Lab, or train from the command line into the server's runs folder."));
    } else this.root.querySelector(".empty-list")?.remove();
  }

  row(run) {
    const files = run.files || {};
    // The final image when there is one, else the current frame (none before the first preview or
    // epoch: asking would only 404), else the target.
    const version = run.live?.version || (run.epoch > 0 ? `e${run.epoch}` : null);
    const thumb = files.final || (version ? withVersion(run.frame, version) : files.target);
    const img = h("img", { src: thumb, alt: "", loading: "lazy", decoding: "async" });
    img.addEventListener("error", () => { if (files.target && img.src !== new URL(files.target, location.href).href) img.src = files.target; }, { once: true });
    return h("article", { class: "run-row", "data-testid": "run-row", "data-run": run.id },
      h("button", { type: "button", class: "thumb", "aria-label": `Details of ${run.id}`, onclick: () => this.hooks.details(run.id) }, img),
      h("div", { class: "who" },
        h("button", { type: "button", class: "linkish run-id", title: run.id, onclick: () => this.hooks.details(run.id) }, run.id),
        h("p", { class: "run-sub" }, [run.describe, run.preset && `preset ${run.preset}`].filter(Boolean).join(" · ")),
        h("p", { class: "run-sub" }, [run.image, run.width && `${run.width}x${run.height}`, run.created].filter(Boolean).join(" · "))),
      h("div", { class: "nums" },
        h("span", { class: `badge ${run.status}`, title: statusLabel(run).title }, statusLabel(run).text),
        h("span", { class: "num" }, fmtPsnr(run.psnr)),
        h("span", { class: "num dim" }, `${run.epoch} / ${run.epochs ?? "?"} epochs`)),
      h("div", { class: "row-actions" },
        h("button", { type: "button", class: "small", onclick: () => this.hooks.details(run.id) }, icon("info"), "Details"),
        h("button", { type: "button", class: "small", "data-do": "watch", onclick: () => this.hooks.watch(run.id) }, icon("eye"), "Watch"),
        h("button", { type: "button", class: "small", "data-do": "again", onclick: () => this.hooks.again(run.id) }, icon("again"), "Run again"),
        h("button", { type: "button", class: "small", "data-do": "compare", onclick: () => this.hooks.compare(run.id) }, icon("compare"), "Compare with…"),
        h("span", { class: "downloads" }, downloadLinks(run))));
  }
}
