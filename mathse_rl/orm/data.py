"""Build the ORM's SFT set from labelled rollouts (``mathse-rl orm build-data``).

Each rollout is a question (with images), a response and the gold answer. A rollout's
label is taken from the row (``correct``, and for wrong paths ``error_step`` /
``error_analysis`` / ``improvement_suggestion`` when known) or else from the rule
verifier; wrong paths without a critique get one from a teacher judge when given (the
paper used GPT-4o) or else from the verifier's step checks. The set is balanced (equal
correct and wrong paths, as in the paper), split into train and a held-out test split per
class, and written in trl's conversational prompt-completion form with images::

    {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}],
     "completion": [{"role": "assistant", "content": "{\\"status\\": \\"WRONG\\", \\"error_step\\": 2, ...}"}],
     "images": [<PIL.Image>], "label": "WRONG", "error_step": 2, "question": ..., "response": ..., "gold": ...}

    >>> ds = build_orm_dataset([
    ...     {"question": "2+3?", "response": "Step 1: 2 + 3 = 5.\\nThe answer to this problem is 5.", "gold": "5", "correct": True},
    ...     {"question": "2+3?", "response": "Step 1: 2 + 3 = 6.\\nThe answer to this problem is 6.", "gold": "5", "correct": False},
    ... ], test_fraction=0.0)
    >>> [r["label"] for r in ds.train], ds.train[1]["error_step"]
    (['CORRECT', 'WRONG'], 1)
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mathse_rl.orm.backends.verifier import UNDECIDABLE, critique
from mathse_rl.orm.judge import Judge
from mathse_rl.orm.prompts import build_judge_messages, item_tag, render_judgment
from mathse_rl.orm.steps import segment_steps
from mathse_rl.types import Judgment, RewardInput

CORRECT_SUGGESTION = "The solution is sound; stating each value read from the image before using it keeps it easy to check."


@dataclass
class OrmDataset:
    """Train and held-out test rows, plus counts of what was kept and skipped."""

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    stats: dict[str, int] = field(default_factory=dict)


def _as_row(row: Any) -> dict[str, Any]:
    if isinstance(row, RewardInput):
        out = {"question": row.question, "response": row.response, "gold": row.gold,
               "choices": row.choices, "images": list(row.images)}
        out.update(dict(row.extra))
        return out
    if isinstance(row, Mapping):
        return dict(row)
    raise TypeError(f"a rollout must be a mapping or RewardInput, got {type(row).__name__}")


def _item(row: Mapping[str, Any]) -> RewardInput:
    choices = row.get("choices")
    return RewardInput(question=str(row["question"]), response=str(row["response"]), gold=row.get("gold"),
                       choices=tuple(choices) if choices else None, images=tuple(row.get("images") or ()),
                       extra={k: row[k] for k in ("reference_steps", "reference_solution") if row.get(k)})


def _given_critique(row: Mapping[str, Any], steps: Sequence[str]) -> Judgment | None:
    """The row's own critique; a labelled step without an analysis gets the verifier's words for it."""
    if row.get("error_analysis") is None and row.get("error_step") is None:
        return None
    k = row.get("error_step")
    k = int(k) if k is not None and 1 <= int(k) <= len(steps) else None
    analysis = str(row.get("error_analysis") or "")
    suggestion = str(row.get("improvement_suggestion") or "")
    if not analysis and k is not None:
        analysis = f"Step {k} does not follow from the problem and the image; every later step inherits the error."
        suggestion = suggestion or f"Re-check step {k} against the question and the image, then redo the steps after it."
    return Judgment(status="WRONG", error_step=k, error_step_text=f"Step {k}: {steps[k - 1]}" if k else "",
                    error_analysis=analysis, improvement_suggestion=suggestion, score=0.0)


def label_rollouts(rows: Iterable[Any], teacher: Judge | None = None,
                   verifier_timeout: float = 5.0) -> tuple[list[tuple[dict, Judgment]], Counter]:
    """Pair each usable rollout with its target judgment; count what was skipped and why."""
    stats: Counter = Counter()
    labelled: list[tuple[dict, Judgment | None]] = []
    for raw in rows:
        row = _as_row(raw)
        stats["rows"] += 1
        if not str(row.get("response") or "").strip():
            stats["skipped/empty_response"] += 1
            continue
        correct = row.get("correct")
        reason = "given"
        if correct is None:
            from mathse_rl.verify import verify

            verdict = verify(str(row["response"]), row.get("gold"), choices=row.get("choices"), timeout=verifier_timeout)
            if verdict.reason in UNDECIDABLE:
                stats[f"skipped/{verdict.reason}"] += 1
                continue
            correct, reason = verdict.correct, verdict.reason
        steps = segment_steps(str(row["response"]))
        if correct:
            j = Judgment(status="CORRECT", score=1.0,
                         improvement_suggestion=str(row.get("improvement_suggestion") or CORRECT_SUGGESTION))
        else:
            j = _given_critique(row, steps)
            if j is None and teacher is None:
                j = critique(_item(row), steps, reason)
                stats["critique/verifier"] += 1
            elif j is not None:
                stats["critique/given"] += 1
        row["_reason"] = reason
        labelled.append((row, j))
    # Wrong paths still without a critique are sent to the teacher in one batch.
    todo = [i for i, (_, j) in enumerate(labelled) if j is None]
    if todo:
        results = teacher.judge_detailed([_item(labelled[i][0]) for i in todo])  # type: ignore[union-attr]
        for i, res in zip(todo, results):
            row = labelled[i][0]
            steps = segment_steps(str(row["response"]))
            if res.source == "judge" and res.judgment is not None and not res.judgment.correct:
                labelled[i] = (row, res.judgment)
                stats["critique/teacher"] += 1
            else:  # the teacher failed or disagreed with the label: the verifier's critique stands in
                stats["critique/teacher_" + ("disagreed" if res.judgment is not None and res.source == "judge" else "failed")] += 1
                labelled[i] = (row, critique(_item(row), steps, row["_reason"]))
    return labelled, stats  # type: ignore[return-value]


def to_example(row: Mapping[str, Any], target: Judgment, label_format: str = "full",
               template: str = "full", tag_key: bytes | None = None) -> dict[str, Any]:
    """One SFT row in trl's conversational prompt-completion form, plus label metadata.

    ``tag_key`` keys the prompt's delimiter tag (a dataset passes one derived from its seed, so it is
    rebuilt identically; the judges at run time use their process's secret key).
    """
    images = list(row.get("images") or ())
    steps = segment_steps(str(row["response"]))
    tag = item_tag(template, str(row["question"]), str(row["response"]), str(row.get("gold")), key=tag_key)
    messages = build_judge_messages(str(row["question"]), str(row["response"]), row.get("gold"),
                                    row.get("choices"), len(images), steps, template, tag)
    label_step = row.get("error_step") if row.get("error_step") is not None else target.error_step
    return {
        "prompt": messages,
        "completion": [{"role": "assistant", "content": render_judgment(target, label_format)}],
        "images": images,
        "label": target.status,
        "error_step": None if target.correct or label_step is None else int(label_step),
        "n_steps": len(steps),
        "question": str(row["question"]),
        "response": str(row["response"]),
        "gold": row.get("gold"),
        "choices": list(row["choices"]) if row.get("choices") else None,
        "id": str(row.get("id", "")),
        "reference_steps": list(row["reference_steps"]) if row.get("reference_steps") else None,
    }


def build_orm_dataset(rows: Iterable[Any], *, teacher: Judge | None = None, balance: bool = True,
                      test_fraction: float = 0.1, seed: int = 0, label_format: str = "full",
                      verifier_timeout: float = 5.0, template: str = "full") -> OrmDataset:
    """Label, balance and split rollouts into an ORM SFT set (see the module docstring)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    labelled, stats = label_rollouts(rows, teacher, verifier_timeout)
    rng = random.Random(seed)
    tag_key = f"mathse-orm-dataset-{seed}".encode()  # the same rows and seed give the same prompts
    by_class: dict[str, list[tuple[dict, Judgment]]] = {"CORRECT": [], "WRONG": []}
    for row, j in labelled:
        by_class[j.status].append((row, j))
    for group in by_class.values():
        rng.shuffle(group)
    if balance:
        n = min(len(g) for g in by_class.values())
        for status, group in by_class.items():
            stats[f"dropped_to_balance/{status}"] = len(group) - n
            by_class[status] = group[:n]
    train, test = [], []
    for status, group in by_class.items():
        n_test = int(round(len(group) * test_fraction))
        test += [to_example(r, j, label_format, template, tag_key) for r, j in group[:n_test]]
        train += [to_example(r, j, label_format, template, tag_key) for r, j in group[n_test:]]
        stats[f"kept/{status}"] = len(group)
    rng.shuffle(train)
    rng.shuffle(test)
    stats["train"], stats["test"] = len(train), len(test)
    return OrmDataset(train, test, dict(stats))


# -- on disk: jsonl with images saved as PNG files beside it ----------------------------
def save_orm_dataset(ds: OrmDataset, out_dir: str | Path) -> dict[str, str]:
    """Write ``train.jsonl``, ``test.jsonl``, ``images/`` and ``stats.json``; return their paths."""
    from mathse_rl.orm.images import to_pil

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in (("train", ds.train), ("test", ds.test)):
        path = out / f"{split}.jsonl"
        with path.open("w") as f:
            for i, row in enumerate(rows):
                names = []
                for k, img in enumerate(row["images"]):
                    name = f"images/{split}-{i:06d}-{k}.png"
                    to_pil(img).save(out / name)
                    names.append(name)
                f.write(json.dumps({**row, "images": names}, ensure_ascii=False) + "\n")
        paths[split] = str(path)
    (out / "stats.json").write_text(json.dumps(ds.stats, indent=2, sort_keys=True))
    return paths


def load_orm_split(path: str | Path, load_images: bool = True) -> list[dict[str, Any]]:
    """Read a split written by :func:`save_orm_dataset` (images opened as PIL, or kept as paths)."""
    from mathse_rl.orm.images import to_pil

    path = Path(path)
    if path.is_dir():
        path = path / "train.jsonl"
    rows = []
    with path.open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                files = [str(path.parent / p) for p in row.get("images") or ()]
                row["images"] = [to_pil(p) for p in files] if load_images else files
                rows.append(row)
    return rows


def eval_items(rows: Sequence[Mapping[str, Any]]) -> tuple[list[RewardInput], list[dict[str, Any]]]:
    """(items, labels) for :func:`mathse_rl.orm.evaluate.evaluate_judge` from dataset rows."""
    items = [RewardInput(question=r["question"], response=r["response"], gold=r.get("gold"),
                         choices=tuple(r["choices"]) if r.get("choices") else None, images=tuple(r.get("images") or ()),
                         extra={"reference_steps": r["reference_steps"]} if r.get("reference_steps") else {})
             for r in rows]
    labels = [{"correct": r["label"] == "CORRECT", "error_step": r.get("error_step")} for r in rows]
    return items, labels
