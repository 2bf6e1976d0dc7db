// The recipe editor: a form for the common fields and the full recipe as TOML, kept in sync.
//
// The text is what the server gets (POST /api/runs sends it as `recipe_text`,
// on top of the chosen preset). Editing a form field rewrites that field's line
// in the text; editing the text is checked by the server after 400 ms of quiet
// (POST /api/recipes/check), and a valid answer refills the form.
//
// TOML has no null, so an optional number the preset sets (siren's lr) and the
// user blanks ("the optimiser's default") cannot be said in the text: such
// fields travel beside it as `recipe: {"lr": null}`, which the server applies
// before the text (`this.cleared`; a line for the field in the text ends it). The server is
// the only judge of validity, so the page never duplicates its rules: a bad
// value is written into the text as typed and the server's one-line message is
// shown next to the field it names (under the text box when the form has no
// such field). `this.recipe` is the canonical dict of the last valid check.

import { api, debounce } from "./api.js";

export const FORM_FIELDS = ["arch", "activation", "encoding", "optimizer", "lr", "batch_size", "epochs"];
const SELECTS = new Set(["activation", "encoding", "optimizer"]);
const INTEGER = /^\d+$/;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

// (300, 300, 300, 300) <-> "4x300"; (300, 300, 100) <-> "300,300,100" (recipes/sizes.py: format_arch; recipes/recipe.py: parse_arch).
export function formatArch(arch) {
  if (!Array.isArray(arch)) return String(arch ?? "");
  return arch.length && arch.every((w) => w === arch[0]) ? `${arch.length}x${arch[0]}` : arch.join(",");
}

function parseArch(text) {
  const repeat = /^\s*(\d+)\s*[xX]\s*(\d+)\s*$/.exec(text);
  if (repeat) return Array(Number(repeat[1])).fill(Number(repeat[2]));
  const parts = text.split(",").map((p) => p.trim());
  return parts.every((p) => INTEGER.test(p)) ? parts.map(Number) : null;
}

// A value as TOML, the way recipes/recipe.py's to_toml writes it (json.dumps per value).
export function tomlValue(value) {
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(", ")}]`;
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return String(value);
  return JSON.stringify(String(value));
}

export function toToml(recipe, fields) {
  return fields.filter((k) => recipe[k] !== null && recipe[k] !== undefined)
    .map((k) => `${k} = ${tomlValue(recipe[k])}\n`).join("");
}

const keyOf = (line) => (/^\s*([A-Za-z0-9_-]+)\s*=/.exec(line) || [])[1];
const hasTomlLine = (text, key) => text.split("\n").some((line) => keyOf(line) === key);

// Replace (or drop, for literal null) the `key = ...` line; a missing key is
// inserted before the first line of a later field, so the text keeps its order.
function setTomlLine(text, key, literal, fields) {
  const lines = text.trim() === "" ? [] : text.replace(/\n+$/, "").split("\n");
  const at = lines.findIndex((l) => keyOf(l) === key);
  const line = `${key} = ${literal}`;
  if (at >= 0) {
    if (literal === null) lines.splice(at, 1);
    else lines[at] = line;
  } else if (literal !== null) {
    const order = fields.indexOf(key);
    const later = lines.findIndex((l) => fields.indexOf(keyOf(l)) > order);
    lines.splice(later >= 0 ? later : lines.length, 0, line);
  }
  return lines.join("\n") + "\n";
}

// A form field's text as a TOML literal. Malformed input goes in as a string,
// so the server's message (naming the field) is what the user sees.
function fieldLiteral(name, raw) {
  const text = raw.trim();
  if (name === "arch") {
    const widths = parseArch(text);
    return widths ? tomlValue(widths) : tomlValue(text);
  }
  if (name === "activation" && text.startsWith("[")) return tomlValue(JSON.parse(text));
  if (name === "lr") return text === "" ? null : NUMBER.test(text) ? tomlValue(Number(text)) : tomlValue(text);
  if (name === "batch_size" || name === "epochs") return INTEGER.test(text) ? String(BigInt(text)) : tomlValue(text);
  return tomlValue(text);
}

// Values in the page's URL: plain text, lists of widths as 4x300, null as "".
export function urlValue(name, value) {
  if (value === null || value === undefined) return "";
  if (name === "arch") return formatArch(value);
  if (Array.isArray(value)) return JSON.stringify(value);
  return String(value);
}

function fromUrlValue(text, like) {
  if (text.startsWith("[")) {
    try { return JSON.parse(text); } catch { return text; }
  }
  if (typeof like === "boolean") return text === "true" ? true : text === "false" ? false : text;
  if (typeof like === "number" || like === null) {
    if (text === "") return null;
    return NUMBER.test(text) ? Number(text) : text;
  }
  return text;  // strings, and arch as "4x300" (the server parses it)
}

const sameValue = (a, b) => JSON.stringify(a) === JSON.stringify(b);

export class RecipeEditor extends EventTarget {
  constructor(form, options) {
    super();
    this.options = options;
    this.fields = options.fields;
    this.presets = options.presets;
    this.form = form;
    this.el = Object.fromEntries(["preset", ...FORM_FIELDS].map((id) => [id, form.querySelector(`#${id}`)]));
    this.text = form.querySelector("#recipe-text");
    this.describe = form.querySelector("#describe");
    this.recipe = null;
    this.cleared = new Set();  // optional fields set to null against a preset that sets them
    this.seq = 0;
    this.scheduleCheck = debounce(() => this.check(), 400);

    for (const name of Object.keys(this.presets)) this.el.preset.append(new Option(name, name));
    this.el.preset.addEventListener("change", () => this.usePreset(this.el.preset.value));
    for (const name of FORM_FIELDS) {
      const input = this.el[name];
      if (SELECTS.has(name)) {
        input.addEventListener("change", () => { this.writeField(name); this.scheduleCheck.cancel(); this.check(); });
      } else {
        input.addEventListener("input", () => { this.writeField(name); this.scheduleCheck(); });
        // Leaving a field shows its canonical form (300,300,300 -> 3x300), if valid.
        input.addEventListener("blur", () => { if (this.recipe && !this.hasError(name)) this.fill(this.recipe); });
      }
    }
    this.text.addEventListener("input", () => this.scheduleCheck());
  }

  get preset() { return this.el.preset.value; }

  // A preset fills both the form and the text with its whole recipe.
  usePreset(name) {
    this.el.preset.value = name;
    const recipe = this.presets[name];
    this.text.value = toToml(recipe, this.fields);
    this.recipe = recipe;
    this.cleared.clear();
    this.clearErrors();
    this.fill(recipe);
    this.scheduleCheck.cancel();
    return this.check();
  }

  // Start from a preset plus changed fields (a dict, e.g. from the URL or another run's recipe).
  async load(preset, changes) {
    if (!(preset in this.presets)) preset = this.options.default_preset;
    this.el.preset.value = preset;
    if (!changes || Object.keys(changes).length === 0) return this.usePreset(preset);
    const seq = ++this.seq;
    const base = this.presets[preset];
    this.cleared = new Set(Object.keys(changes).filter((k) => changes[k] === null && base[k] !== null && base[k] !== undefined));
    try {
      const answer = await api("/api/recipes/check", { method: "POST", body: { preset, recipe: changes } });
      if (seq !== this.seq) return;
      this.text.value = answer.toml;
      this.accept(answer);
    } catch (error) {
      if (seq !== this.seq) return;
      await this.usePreset(preset);
      this.showError(error);
    }
  }

  // Changed fields from the URL (strings) -> typed values, guided by the preset's types.
  changesFromParams(params, preset) {
    const base = this.presets[preset] || this.presets[this.options.default_preset];
    const changes = {};
    for (const name of this.fields) {
      if (params.has(name)) changes[name] = fromUrlValue(params.get(name), base[name]);
    }
    return changes;
  }

  // The fields where the current recipe differs from its preset, as URL strings.
  changedFields() {
    const base = this.presets[this.preset];
    if (!this.recipe || !base) return [];
    return this.fields.filter((k) => !sameValue(this.recipe[k], base[k]))
      .map((k) => [k, urlValue(k, this.recipe[k])]);
  }

  writeField(name) {
    const literal = fieldLiteral(name, this.el[name].value);
    this.text.value = setTomlLine(this.text.value, name, literal, this.fields);
    const preset = this.presets[this.preset];
    if (literal === null && preset && preset[name] !== null) this.cleared.add(name);
  }

  // What goes to the server beside the text: {preset, recipe_text} and the cleared fields.
  request() {
    for (const name of this.cleared) if (hasTomlLine(this.text.value, name)) this.cleared.delete(name);
    const body = { preset: this.preset, recipe_text: this.text.value };
    if (this.cleared.size) body.recipe = Object.fromEntries([...this.cleared].map((k) => [k, null]));
    return body;
  }

  async check() {
    const seq = ++this.seq;
    try {
      const answer = await api("/api/recipes/check", { method: "POST", body: this.request() });
      if (seq === this.seq) this.accept(answer);
    } catch (error) {
      if (seq !== this.seq) return;
      this.clearErrors();
      this.showError(error);
      this.describe.textContent = "";
      this.dispatchEvent(new Event("invalid"));
    }
  }

  accept(answer) {
    this.clearErrors();
    this.recipe = answer.recipe;
    this.fill(answer.recipe);
    const params = typeof answer.parameters === "number" ? ` · ${answer.parameters.toLocaleString("en")} parameters` : "";
    this.describe.textContent = `${answer.describe}${params}`;
    this.dispatchEvent(new Event("change"));
  }

  // Fill the form from a recipe dict, except the field the user is typing in.
  fill(recipe) {
    for (const name of FORM_FIELDS) {
      const input = this.el[name];
      if (input === document.activeElement && !SELECTS.has(name)) continue;
      const value = recipe[name];
      if (SELECTS.has(name)) this.fillSelect(name, value);
      else if (name === "arch") input.value = formatArch(value);
      else input.value = value === null || value === undefined ? "" : String(value);
    }
  }

  // The registry's names, plus the current value when it is a spec with options
  // (adam:beta2=0.99) or a per-layer list, so what the text says survives.
  fillSelect(name, value) {
    const select = this.el[name];
    const names = this.options.choices[name] || [];
    const key = Array.isArray(value) ? JSON.stringify(value) : String(value ?? "");
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (key && !names.includes(key)) {
      const label = Array.isArray(value) ? `${value.join(" / ")} (per layer)` : key;
      select.append(new Option(label, key));
    }
    select.value = key;
    select.title = select.selectedOptions[0]?.textContent || "";
  }

  errorSlot(field) {
    // The server names a form field, or recipe_text (the text as a whole), or a key the form lacks.
    return (field && this.form.querySelector(`[data-error-for="${CSS.escape(field)}"]`))
      || this.form.querySelector('[data-error-for="recipe_text"]');
  }

  hasError(field) { return Boolean(this.form.querySelector(`[data-error-for="${field}"]`)?.textContent); }

  showError(error) {
    const slot = this.errorSlot(error.field);
    slot.textContent = error.message;
    const input = this.form.querySelector(`#${CSS.escape(slot.dataset.errorFor)}`)
      || (slot.dataset.errorFor === "recipe_text" ? this.text : null);
    input?.setAttribute("aria-invalid", "true");
  }

  clearErrors() {
    for (const name of ["preset", "recipe_text", ...FORM_FIELDS]) {
      const slot = this.form.querySelector(`[data-error-for="${name}"]`);
      if (slot) slot.textContent = "";
    }
    for (const input of this.form.querySelectorAll('.recipe [aria-invalid="true"]')) input.removeAttribute("aria-invalid");
  }
}
