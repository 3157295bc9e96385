"""Per-category tables, the overall line, ``results.json`` and the markdown the command prints.

    >>> rows = [{"correct": True, "categories": {"task": "geometry", "skills": ["algebraic", "arithmetic"]}},
    ...         {"correct": False, "categories": {"task": "geometry", "skills": ["arithmetic"]}}]
    >>> t = tables(rows, ("task", "skills"))
    >>> t["task"]["geometry"], t["skills"]["arithmetic"]["accuracy"]
    ({'correct': 1, 'total': 2, 'accuracy': 50.0}, 50.0)
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence


def _pct(correct: int, total: int) -> float | None:
    return round(100.0 * correct / total, 2) if total else None


def _natural(value: str) -> list[Any]:
    """Sort key that puts level2 before level10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(value))]


def tables(rows: Iterable[Mapping[str, Any]], axes: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``axis -> value -> {correct, total, accuracy (percent)}`` over scored rows; a row with a list of
    values (MathVista's skills) counts once in each."""
    counts: dict[str, dict[str, list[int]]] = {a: {} for a in axes}
    for r in rows:
        cats = r.get("categories") or {}
        for axis in axes:
            values = cats.get(axis)
            if values is None or values == "":
                continue
            for v in values if isinstance(values, (list, tuple)) else [values]:
                c = counts[axis].setdefault(str(v), [0, 0])
                c[0] += bool(r.get("correct"))
                c[1] += 1
    return {axis: {v: {"correct": c, "total": t, "accuracy": _pct(c, t)}
                   for v, (c, t) in sorted(by.items(), key=lambda kv: _natural(kv[0]))}
            for axis, by in counts.items() if by}


def overall(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    correct = sum(bool(r.get("correct")) for r in rows)
    return {"correct": correct, "total": len(rows), "accuracy": _pct(correct, len(rows))}


def reasons(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many verdicts each rule or verifier reason gave (``nearest_option``, ``precision``, ...)."""
    out: dict[str, int] = {}
    for r in rows:
        out[str(r.get("reason"))] = out.get(str(r.get("reason")), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def markdown(results: Mapping[str, Any]) -> str:
    """The overall line and one table per category axis (what ``mathse-rl eval`` prints)."""
    o = results["overall"]
    head = f"## {results['title']} {results['split']}: {results.get('model') or results.get('responses') or ''}".rstrip()
    lines = [head, ""]
    if o.get("accuracy") is None:
        lines.append(f"overall: not scored ({results['split']} answers are not public); "
                     f"submission file: {results.get('submission')}")
    else:
        lines.append(f"overall: {o['accuracy']:.2f}% ({o['correct']}/{o['total']})")
    notes = []
    if results.get("bad_rows"):
        notes.append(f"{len(results['bad_rows'])} bad rows not scored")
    if results.get("missing_responses"):
        notes.append(f"{len(results['missing_responses'])} problems without a response (counted wrong)")
    if results.get("extra_responses"):
        notes.append(f"{len(results['extra_responses'])} responses for unknown ids (ignored)")
    if notes:
        lines.append("; ".join(notes) + " (listed in results.json)")
    for axis, by in results.get("categories", {}).items():
        lines += ["", f"| {axis} | correct | total | accuracy (%) |", "|---|---|---|---|"]
        lines += [f"| {v} | {c['correct']} | {c['total']} | {_fmt(c['accuracy'])} |" for v, c in by.items()]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
