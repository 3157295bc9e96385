"""Measure a judge on labelled paths (``mathse-rl orm eval``), in the paper's Table 5 layout.

Accuracy is the judge's own: an item where the backend failed or its reply did not parse
counts as a miss, whatever the fallback said (``overall_accuracy_with_fallback`` reports
the other view). Where wrong paths carry their first-error step, the step accuracy and a
ProcessBench-style F1 (harmonic mean of the accuracy on wrong paths, a hit needing the
exact first wrong step, and the accuracy on correct paths) are reported too.

    >>> from mathse_rl.orm.judge import JudgeResult
    >>> from mathse_rl.types import Judgment
    >>> res = [JudgeResult(Judgment("CORRECT", score=1.0), "judge"), JudgeResult(Judgment("WRONG", error_step=2), "judge")]
    >>> r = score_results(res, [{"correct": True}, {"correct": False, "error_step": 2}])
    >>> r["overall_accuracy"], r["first_error_step_accuracy"], r["processbench_f1"]
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mathse_rl.orm.judge import Judge, JudgeResult
from mathse_rl.types import Judgment, RewardInput


def _label(label: Any) -> tuple[bool, int | None]:
    if isinstance(label, bool):
        return label, None
    if isinstance(label, Judgment):
        return label.correct, label.error_step
    if isinstance(label, Mapping):
        correct = label.get("correct")
        if correct is None and "label" in label:
            correct = label["label"] == "CORRECT"
        step = label.get("error_step")
        return bool(correct), (int(step) if step is not None else None)
    raise TypeError(f"cannot read a label from {type(label).__name__}")


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def score_results(results: Sequence[JudgeResult], labels: Sequence[Any]) -> dict[str, Any]:
    """The evaluation report for judge results against labels (bool, dict or Judgment)."""
    if len(results) != len(labels):
        raise ValueError(f"{len(results)} results for {len(labels)} labels")
    n_pos = n_neg = hit_pos = hit_neg = hit_fb = parse_fail = failed = 0
    n_step = hit_step = 0
    for res, lab in zip(results, labels):
        correct, step = _label(lab)
        own = res.judgment if res.source == "judge" else None
        failed += own is None
        parse_fail += bool(res.failure and res.failure.startswith("parse:"))
        if res.judgment is not None and res.judgment.correct == correct:
            hit_fb += 1
        if correct:
            n_pos += 1
            hit_pos += bool(own is not None and own.correct)
        else:
            n_neg += 1
            hit_neg += bool(own is not None and not own.correct)
            if step is not None:
                n_step += 1
                hit_step += bool(own is not None and not own.correct and own.error_step == step)
    n = n_pos + n_neg
    pos_acc, step_acc = _rate(hit_pos, n_pos), _rate(hit_step, n_step)
    f1 = None
    if pos_acc is not None and step_acc is not None:
        f1 = 2 * pos_acc * step_acc / (pos_acc + step_acc) if pos_acc + step_acc else 0.0
    return {
        "n": n, "n_positive": n_pos, "n_negative": n_neg, "n_step_labelled": n_step,
        "positive_accuracy": pos_acc,
        "negative_accuracy": _rate(hit_neg, n_neg),
        "overall_accuracy": _rate(hit_pos + hit_neg, n),
        "parse_failure_rate": _rate(parse_fail, n),
        "judge_failure_rate": _rate(failed, n),
        "overall_accuracy_with_fallback": _rate(hit_fb, n),
        "first_error_step_accuracy": step_acc,
        "processbench_f1": f1,
    }


def evaluate_judge(judge: Judge, items: Sequence[RewardInput], labels: Sequence[Any]) -> dict[str, Any]:
    """Judge ``items`` and score against ``labels``; adds the judge's counters under ``counters``."""
    report = score_results(judge.judge_detailed(items), labels)
    report["backend"] = judge.backend
    report["counters"] = judge.counters.snapshot()
    return report


_ROWS = (
    ("correct paths judged correct (positive accuracy)", "positive_accuracy"),
    ("wrong paths judged wrong (negative accuracy)", "negative_accuracy"),
    ("overall accuracy", "overall_accuracy"),
    ("parse-failure rate", "parse_failure_rate"),
    ("judge-failure rate (parse + backend)", "judge_failure_rate"),
    ("overall accuracy with fallback", "overall_accuracy_with_fallback"),
    ("first-error-step accuracy (wrong paths)", "first_error_step_accuracy"),
    ("ProcessBench-style F1", "processbench_f1"),
)


def format_table(report: Mapping[str, Any], title: str | None = None) -> str:
    """A Markdown table of the report (percentages; n/a where a metric has no items)."""
    head = title or f"ORM evaluation ({report.get('backend', 'judge')}, n={report['n']}: "\
                    f"{report['n_positive']} correct / {report['n_negative']} wrong paths)"
    lines = [head, "", "| metric | value |", "|---|---|"]
    for name, key in _ROWS:
        v = report.get(key)
        lines.append(f"| {name} | {'n/a' if v is None else f'{100 * v:.2f}%'} |")
    return "\n".join(lines)
