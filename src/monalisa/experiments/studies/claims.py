"""Verdicts from a finished comparison's table rows: who beat whom, decided from the seeds' intervals.

Pure functions of the rows (tables.entry_row's), so each study's claims can be checked on handmade rows.
"""

from __future__ import annotations

import math

from monalisa.experiments import stats


def final_score(row: dict | None) -> float | None:
    """A run's final PSNR, or None if it failed: diverged, did not finish, or left no figure."""
    if row is None or row.get("status") != "complete":
        return None
    psnr = row.get("psnr")
    if psnr is None:
        # compare.py writes a perfect fit's infinite PSNR as null (JSON has no infinity)
        return math.inf if row.get("epochs") and row.get("mae") == 0 else None
    return None if math.isnan(psnr) else float(psnr)


def db_text(value: float) -> str:
    return f"{value:.2f} dB"


def result_text(row: dict) -> str:
    """'d4-w300 26.12 dB', 'lr-x10 diverged in epoch 4' or 'x did not finish (running)'."""
    score = final_score(row)
    if score is not None:
        seeds = len(row.get("seeds") or ())
        return f"{row['label']} {db_text(score)}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    status = row.get("status")
    seeds = len(row.get("seeds") or ())
    if status == "diverged" and seeds > 1:
        return f"{row['label']} diverged in {row.get('seeds_failed')} of {seeds} seeds"
    if status == "diverged":  # "epochs" counts the epochs completed; the next one diverged
        return f"{row['label']} diverged in epoch {(row.get('epochs') or 0) + 1}"
    return f"{row['label']} did not finish ({status})"


def failures_note(rows: list[dict]) -> list[str]:
    failed = [result_text(row) for row in rows if final_score(row) is None]
    return ["failed: " + ", ".join(failed)] if failed else []


def best_row(rows: list[dict]) -> dict | None:
    scored = [row for row in rows if final_score(row) is not None]
    return max(scored, key=final_score) if scored else None


def describe_best(best: dict | None, group: list[dict]) -> str:
    return result_text(best) if best else "none finished (" + ", ".join(result_text(row) for row in group) + ")"


def compare_best(winner: dict | None, loser: dict | None, margin: float, parts: list[str]) -> bool | None:
    """Whether ``winner``'s group beat ``loser``'s; a group whose runs all failed loses. Appends the gap."""
    if winner is None and loser is None:
        return None
    if winner is None or loser is None:
        return loser is None
    supported, text = seed_gap(winner, loser, margin)
    parts.append(text)
    return supported


def seed_gap(ours: dict, theirs: dict, margin: float) -> tuple[bool | None, str]:
    """Whether ``ours`` beat ``theirs`` by ``margin`` dB of final PSNR, decided from the seeds (stats.py):
    True when the 95% interval of the difference of the means lies above the margin, False when it lies
    below -margin, None otherwise, and always None from one seed each (no spread: no interval)."""
    a, b = seed_finals(ours), seed_finals(theirs)
    gap = stats.difference(a, b)
    if gap.mean is None:
        return None, "no finished seeds to compare"
    if gap.low is None:
        return None, (f"difference {gap.mean:+.2f} dB from {len(a)} and {len(b)} seed(s): no interval, so no "
                      f"verdict (margin {margin:g} dB; --seeds 3 or more decides)")
    improvement = stats.probability_of_improvement(a, b)
    text = (f"difference {gap.mean:+.2f} dB, 95% interval [{gap.low:+.2f}, {gap.high:+.2f}] ({gap.method}, "
            f"{len(a)} and {len(b)} seeds; margin {margin:g} dB); P(a seed of {ours['label']} beats one of "
            f"{theirs['label']}) {improvement.mean:.2f} [{improvement.low:.2f}, {improvement.high:.2f}]")
    return stats.SUPPORTED_VALUE[stats.verdict(gap, margin)], text


def seed_finals(row: dict) -> list[float]:
    """Each completed seed's final PSNR (a perfect fit's is inf: its row has psnr null and mae 0)."""
    runs = row.get("per_seed") or [row]
    return [score for score in (final_score(run) for run in runs) if score is not None]


def versus(claim: str, ours: dict | None, theirs: dict | None, margin: float, our_label: str,
            their_label: str) -> dict:
    """The claim that ``ours`` beats ``theirs`` by final PSNR; a run that failed loses to one that did not."""
    if ours is None or theirs is None:
        missing = our_label if ours is None else their_label
        return make_verdict(claim, None, f"no run {missing} in this comparison")
    parts = [result_text(ours), result_text(theirs)]
    supported = compare_best(ours if final_score(ours) is not None else None,
                              theirs if final_score(theirs) is not None else None, margin, parts)
    return make_verdict(claim, supported, "; ".join(parts))


def make_verdict(claim: str, supported: bool | None, evidence: str) -> dict:
    return {"claim": claim, "supported": supported, "evidence": evidence}
