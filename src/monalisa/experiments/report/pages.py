"""A comparison's pages: the table's cells, the conclusion and claims, report.md and the self-contained
report.html.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from monalisa.experiments.report.diagnosis import _diagnosis_heading
from monalisa.recipes.recipe import Recipe

# dB: "recognisable", "good" and "close" for these images; the table times all three, the conclusion the first two
THRESHOLDS = (20.0, 25.0, 30.0)


# -- reports ---------------------------------------------------------------------------

VERDICTS = {True: "supported", False: "refuted", None: "inconclusive"}
DASH = "—"  # a figure the run never reached, or has not got
COLUMNS = ("run", "recipe", "parameters", "training MFLOP per pixel per epoch", "PSNR (dB)", "MAE",
           "best PSNR (epoch)", "s / epoch", *(f"to {db:g} dB" for db in THRESHOLDS))
# Under the table, in both reports: what the numbers are.
TABLE_NOTE = ("PSNR and MAE are the final epoch's; times are training seconds (rendering and writing excluded), "
              f"{DASH} where a run never got there. Training MFLOP per pixel per epoch: the millions of arithmetic "
              "operations one epoch spends on each pixel, forward and backward (6 per network weight plus the "
              "encoding's; table.flops_per_pixel). It is the recipe's cost on any machine; s / epoch is what "
              "it cost on this one.")


# Under the table of a comparison with several seeds: what the intervals are.
SEEDS_NOTE = ("With several seeds, a figure is the mean over the seeds that completed, ± their standard deviation, "
              "[its 95% confidence interval]: scipy.stats.bootstrap, bias-corrected and accelerated (BCa) with 3 "
              "seeds or more, percentile with 2, 10,000 resamples. A time to a PSNR counts the seeds that reached "
              "it (k/n when some did not).")


def table_cells(row: dict) -> list[str]:
    """One row of the report table, as text: a figure, or with several seeds 'mean ± sd [low, high]'."""
    stats = row.get("stats") or {}
    seeds = len(row.get("seeds") or ()) or 1

    def figure(name: str, digits: int) -> str:
        data = stats.get(name)
        if seeds > 1 and data and data["mean"] is not None:
            text = f"{data['mean']:.{digits}f} ± {data['std']:.{digits}f}"
            if data["low"] is not None:
                text += f" [{data['low']:.{digits}f}, {data['high']:.{digits}f}]"
            return text + (f" ({data['n']}/{seeds})" if data["n"] < seeds else "")
        return DASH if row[name] is None else f"{row[name]:.{digits}f}"

    def seconds(name: str) -> str:
        data = stats.get(name)
        if seeds > 1 and data and data["mean"] is not None:
            text = format_seconds(data["mean"])
            if data["low"] is not None:
                text += f" [{format_seconds(data['low'])}, {format_seconds(data['high'])}]"
            return text + (f" ({data['n']}/{seeds})" if data["n"] < seeds else "")
        return DASH if row.get(name) is None else format_seconds(row[name])

    run = row["label"] + (f" ({seeds} seeds)" if seeds > 1 else "")
    failed = row.get("seeds_failed") or 1
    of = f" {failed} of {seeds}" if seeds > 1 else ""
    if row["status"] == "diverged":
        run += f" (diverged{of})"
    elif row["status"] != "complete":  # stopped, interrupted, paused or failed: its figures are from part-way
        run += f" (unfinished: {row.get('unfinished') or row['status']}{of})"
    best = figure("best_psnr", 2)
    if row["best_psnr"] is not None and seeds == 1:
        best += f" ({row['best_epoch']})"
    per_epoch = DASH if row["seconds_per_epoch"] is None else format_seconds(row["seconds_per_epoch"])
    return [run, row["describe"], f"{row['parameters']:,}", f"{row['flops_per_pixel'] / 1e6:.3g}",
            figure("psnr", 2), figure("mae", 4), best, per_epoch,
            *(seconds(f"seconds_to_{db:g}") for db in THRESHOLDS)]


def _table_note(summary: dict) -> str:
    return TABLE_NOTE + (" " + SEEDS_NOTE if summary.get("seeds", 1) > 1 else "")


def _subtitle(summary: dict) -> str:
    """'astronaut, 128x128 pixels; 6 runs (2 entries x 3 seeds), 1 diverged; <time>': every run trained counts,
    each seed of each entry. A search's table holds its best trials only: the line counts all of them."""
    rows = summary["runs"]
    runs = [run for row in rows for run in row.get("per_seed") or [row]]
    if "leaderboard" in summary:
        counted = summary["leaderboard"]
        what = f"{_count(len(counted), 'trial')}" + (f", the best {len(rows)} in the table" if len(rows) < len(counted)
                                                    else "")
    else:
        counted = runs
        seeds = sorted({len(row.get("per_seed") or [row]) for row in rows})
        what = _count(len(runs), "run")
        if seeds and seeds[-1] > 1:
            each = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
            what += f" ({_count(len(rows), 'entry', 'entries')} x {each} seeds)"
    diverged = sum(run.get("status") == "diverged" for run in counted)
    unfinished = sum(run.get("status") not in ("complete", "diverged") for run in counted)
    return (f"{summary['image']}, {summary['width']}x{summary['height']} pixels; {what}"
            + (f", {diverged} diverged" if diverged else "") + (f", {unfinished} unfinished" if unfinished else "")
            + f"; {time.strftime('%Y-%m-%d %H:%M')}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def report_markdown(summary: dict) -> str:
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"# {summary['title']}", "", _subtitle(summary), "", f"**Conclusion.** {summary['conclusion']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "--:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(cell(c) for c in table_cells(row)) + " |" for row in summary["runs"]]
    lines += ["", _table_note(summary), "",
              "## Final frames", "", "![The target and each run's final frame](finals.png)", "",
              "## Learning curves", "", "![PSNR against epoch and against training time](curves.png)", "",
              *(["## Every seed", "", "![Each entry's seeds, mean and 95% interval](seeds.png)", ""]
                if summary.get("seeds", 1) > 1 else []),
              "## Learning, side by side", "", "![The runs' frames in step by epoch](grid.gif)", "",
              "Every shown epoch, full quality: [grid.mp4](grid.mp4). Each run's own directory is under "
              "[runs/](runs/).", ""]
    if summary["claims"]:
        lines += ["## Claims", ""]
        lines += [f"- **{VERDICTS[c['supported']]}**: {c['claim']}  \n  Evidence: {c['evidence']}"
                  for c in summary["claims"]]
        lines.append("")
    if summary.get("diagnoses"):
        lines += ["## What went wrong", "", "Computed from each failed run's layer statistics (its layers.csv):", ""]
        for diagnosis in summary["diagnoses"]:
            lines.append(f"- **{cell(_diagnosis_heading(diagnosis))}**")
            lines += [f"  - {cell(finding)}" for finding in diagnosis["findings"]]
        lines.append("")
    lines += ["## Recipes", "", "The fields that differ from the original's (summary.json has every field):", ""]
    lines += [f"- `{row['label']}`: `{json.dumps(_changes(row['recipe']))}`" for row in summary["runs"]]
    return "\n".join(lines) + "\n"


CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 18px 56px; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 6px; }
h2 { font-size: 1.25rem; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 18px; }
.conclusion { margin: 0 0 22px; padding: 12px 16px; background: var(--soft); border-left: 4px solid var(--accent);
              border-radius: 6px; font-size: 1.05rem; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; text-align: right; white-space: nowrap; border-bottom: 1px solid var(--line); }
/* The table fits its 1120 px column: headers and the two text columns wrap (labels break at their
   hyphens), numbers stay whole; a narrower screen scrolls the table inside .table-wrap. */
th { background: var(--soft); font-weight: 600; white-space: normal; vertical-align: bottom; min-width: 5.5em; }
td:nth-child(-n+2) { white-space: normal; overflow-wrap: anywhere; min-width: 8em; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
td:nth-child(2) { color: var(--muted); }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover { background: #fafbfc; }
td.best { font-weight: 700; color: #1a7f37; }
.note { color: var(--muted); font-size: 0.85rem; margin: 8px 0 0; }
figure { margin: 0 0 8px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 6px; }
ul.claims { list-style: none; margin: 0; padding: 0; }
ul.claims li { margin: 0 0 10px; padding: 10px 14px; border: 1px solid var(--line); border-radius: 6px; }
.verdict { display: inline-block; margin-right: 8px; padding: 1px 9px; border-radius: 999px; font-size: 0.75rem;
           font-weight: 700; letter-spacing: 0.03em; text-transform: uppercase; vertical-align: 1px; }
.supported { background: #dafbe1; color: #116329; }
.refuted { background: #ffebe9; color: #a40e26; }
.inconclusive { background: #eaeef2; color: #57606a; }
.evidence { color: var(--muted); font-size: 0.92rem; margin-top: 4px; }
details pre { overflow-x: auto; background: var(--soft); padding: 10px 12px; border-radius: 6px; font-size: 0.8rem; }
@media (max-width: 640px) {
  body { font-size: 15px; } main { padding: 18px 12px 40px; } h1 { font-size: 1.45rem; }
  th, td { padding: 6px 8px; }
}
"""


def report_html(summary: dict, out: Path) -> str:
    """The report as one self-contained page: every image embedded, every text escaped."""
    e = html.escape
    # The best of the complete runs only, as table.conclusion and a search's ranking (search.rank_key)
    # judge: an unfinished run's PSNR is from less training.
    best = max((row["psnr"] for row in summary["runs"] if row["psnr"] is not None and row["status"] == "complete"),
               default=None)
    body_rows = []
    for row in summary["runs"]:
        cells = table_cells(row)
        tds = [f"<td>{e(text)}</td>" for text in cells]
        if best is not None and row["status"] == "complete" and round(row["psnr"], 2) == round(best, 2):
            tds[4] = f'<td class="best">{e(cells[4])}</td>'
        body_rows.append("<tr>" + "".join(tds) + "</tr>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(summary['title'])}</title>",
        f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
        f"<h1>{e(summary['title'])}</h1>", f'<p class="meta">{e(_subtitle(summary))}</p>',
        f'<p class="conclusion"><strong>Conclusion.</strong> {e(summary["conclusion"])}</p>',
        '<div class="table-wrap"><table>',
        "<thead><tr>" + "".join(f'<th scope="col">{e(c)}</th>' for c in COLUMNS) + "</tr></thead>",
        "<tbody>" + "".join(body_rows) + "</tbody>", "</table></div>",
        f'<p class="note">{e(_table_note(summary))}</p>',
        "<h2>Final frames</h2>", _figure(out / "finals.png", "The target and each run's final frame"),
        "<h2>Learning curves</h2>", _figure(out / "curves.png", "PSNR against epoch and against training time"),
        *(["<h2>Every seed</h2>", _figure(out / "seeds.png", "Each entry's seeds (dots), their mean and its 95% "
                                                            "bootstrap interval")]
          if summary.get("seeds", 1) > 1 else []),
        "<h2>Learning, side by side</h2>",
        _figure(out / "grid.gif", "The runs' frames in step by epoch (grid.mp4 beside this file has every shown "
                                  "epoch at full quality)"),
    ]
    if summary["claims"]:
        parts += ["<h2>Claims</h2>", '<ul class="claims">']
        for claim in summary["claims"]:
            verdict = VERDICTS[claim["supported"]]
            parts.append(f'<li><span class="verdict {verdict.replace(" ", "-")}">{e(verdict)}</span>{e(claim["claim"])}'
                         f'<div class="evidence">{e(claim["evidence"])}</div></li>')
        parts.append("</ul>")
    if summary.get("diagnoses"):
        parts += ["<h2>What went wrong</h2>", "<p>Computed from each failed run's layer statistics (its layers.csv):</p>",
                  '<ul class="claims">']
        for diagnosis in summary["diagnoses"]:
            parts.append(f"<li><strong>{e(_diagnosis_heading(diagnosis))}</strong><ul>"
                         + "".join(f'<li class="evidence">{e(finding)}</li>' for finding in diagnosis["findings"])
                         + "</ul></li>")
        parts.append("</ul>")
    recipes = "\n".join(f"{row['label']}: {json.dumps(_changes(row['recipe']))}" for row in summary["runs"])
    parts += ["<h2>Recipes</h2>", "<details><summary>The fields that differ from the original's "
              f"(summary.json has every field)</summary><pre>{e(recipes)}</pre></details>",
              "</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _changes(recipe: dict) -> dict:
    """A recipe dict less the fields that equal the original's defaults."""
    defaults = Recipe().to_dict()
    return {key: value for key, value in recipe.items() if value != defaults[key]}


def _figure(path: Path, caption: str) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def format_seconds(seconds: float) -> str:
    """3 significant figures: '97.2 µs', '850 ms', '1.23 s', '45.6 s', '1234 s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"
