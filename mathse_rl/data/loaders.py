"""Load problems (and teacher solutions) from JSON lines, parquet or Hugging Face datasets.

A row becomes a :class:`~mathse_rl.types.Problem`. Rows that cannot be used (no id, no
question, no answer, an image that does not open) are reported with their ids and skipped;
loading never stops on one bad row.

    >>> problems, bad = load_problems("data/train.jsonl", image_root="data")          # doctest: +SKIP
    >>> bad[:1]                                                                        # doctest: +SKIP
    [{'id': 'q17', 'reason': 'missing answer'}]

Sources: a ``.jsonl``/``.json`` file, a ``.parquet`` file, a directory written by
``datasets.Dataset.save_to_disk``, or ``hf:<name>[:<split>]`` for a hub dataset.
Columns (first present wins): id ``id|pid|problem_id`` (else the row number), question
``question|problem|query``, images ``images|image|image_path|decoded_image``, choices
``choices|options``. The reference answer follows the one gold-column rule (:func:`gold_of`),
per row: ``answer|gold|ground_truth|solution`` (``data.gold_columns`` in an evolve recipe).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mathse_rl.types import Attempt, Problem

logger = logging.getLogger(__name__)

ID_COLUMNS = ("id", "pid", "problem_id")
QUESTION_COLUMNS = ("question", "problem", "query")
# The gold-column rule, used by every loader and trainer: per row, the first of these columns that
# holds a non-empty value. Short answer columns come before ``solution``, which often holds a worked
# solution ("5 + 7 = \boxed{12}"): a row with both is checked against its ``answer``.
GOLD_COLUMNS = ("answer", "gold", "ground_truth", "solution")
IMAGE_COLUMNS = ("images", "image", "image_path", "decoded_image")
CHOICE_COLUMNS = ("choices", "options")


def _first(row: Mapping[str, Any], names: Sequence[str]) -> Any:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return None


def gold_of(row: Mapping[str, Any], columns: Sequence[str] = GOLD_COLUMNS) -> str | None:
    """The row's reference answer: the first of ``columns`` holding a non-empty value (None: none does).

        >>> gold_of({"solution": "5 + 7 = \\boxed{12}", "answer": "12"})
        '12'
        >>> gold_of({"answer": "", "solution": "7"}), gold_of({"answer": float("nan")})
        ('7', None)
    """
    for name in columns:
        value = row.get(name)
        if value is None or (isinstance(value, float) and value != value):  # None or NaN (pandas' empty cell)
            continue
        text = str(value).strip()
        if text:
            return str(value)
    return None


def _image(value: Any, root: Path | None) -> Any:
    """A PIL image (decoded now, so a broken one is caught here) or a checked path."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):  # datasets' Image feature
        if value.get("bytes"):
            img = Image.open(io.BytesIO(value["bytes"]))
            img.load()
            return img
        value = value["path"]
    path = Path(str(value))
    if not path.is_absolute() and root is not None:
        path = root / path
    with Image.open(path) as im:
        im.verify()
    return str(path)


def row_to_problem(row: Mapping[str, Any], index: int, *, image_root: str | Path | None = None,
                   data_source: str = "", gold_columns: Sequence[str] = GOLD_COLUMNS) -> Problem:
    """One row → Problem; raises ``ValueError`` with the reason when the row is unusable."""
    pid = _first(row, ID_COLUMNS)
    pid = str(pid) if pid is not None else str(index)
    question = _first(row, QUESTION_COLUMNS)
    if question is None or not str(question).strip():
        raise ValueError("missing question")
    gold = gold_of(row, gold_columns)
    if gold is None:
        raise ValueError("missing answer")
    raw = _first(row, IMAGE_COLUMNS)
    raw = [] if raw is None else (list(raw) if isinstance(raw, (list, tuple)) else [raw])
    root = Path(image_root) if image_root else None
    try:
        images = tuple(_image(v, root) for v in raw if v is not None)
    except Exception as exc:
        raise ValueError(f"unreadable image: {exc}") from exc
    choices = _first(row, CHOICE_COLUMNS)
    if isinstance(choices, str):
        choices = json.loads(choices) if choices.strip().startswith("[") else None
    meta = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) and k not in
            (*ID_COLUMNS, *QUESTION_COLUMNS, *GOLD_COLUMNS, *gold_columns, *IMAGE_COLUMNS, *CHOICE_COLUMNS)}
    return Problem(id=pid, question=str(question), gold=str(gold), images=images,
                   choices=tuple(str(c) for c in choices) if choices else None,
                   data_source=str(row.get("data_source") or data_source), meta=meta)


def iter_rows(source: str | Path) -> Iterable[Mapping[str, Any]]:
    """Raw rows of a source (see the module docstring for the forms)."""
    text = str(source)
    if text.startswith("hf:"):
        from datasets import load_dataset

        parts = text[3:].split(":")
        yield from load_dataset(parts[0], split=parts[1] if len(parts) > 1 else "train")
        return
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {path}")
    if path.is_dir():
        from datasets import load_from_disk

        yield from load_from_disk(str(path))
    elif path.suffix == ".parquet":
        from datasets import Dataset

        yield from Dataset.from_parquet(str(path))
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        yield from (data if isinstance(data, list) else data.get("data", []))
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"__bad__": f"line {n + 1}: invalid JSON ({exc.msg})", "id": f"line{n + 1}"}


def load_problems(source: str | Path, *, image_root: str | Path | None = None, limit: int | None = None,
                  data_source: str = "", gold_columns: Sequence[str] = GOLD_COLUMNS,
                  ) -> tuple[list[Problem], list[dict[str, str]]]:
    """(problems, bad rows as ``{"id", "reason"}``); duplicates of an id are bad rows too.

    ``gold_columns``: where the reference answer is, in order, per row (:func:`gold_of`).
    """
    problems: list[Problem] = []
    bad: list[dict[str, str]] = []
    seen: set[str] = set()
    if image_root is None and not str(source).startswith("hf:"):
        image_root = Path(source).parent
    for i, row in enumerate(iter_rows(source)):
        if limit is not None and len(problems) >= limit:
            break
        if "__bad__" in row:
            bad.append({"id": str(row["id"]), "reason": row["__bad__"]})
            continue
        try:
            p = row_to_problem(row, i, image_root=image_root, data_source=data_source, gold_columns=gold_columns)
        except ValueError as exc:
            pid = _first(row, ID_COLUMNS)
            bad.append({"id": str(pid if pid is not None else i), "reason": str(exc)})
            continue
        if p.id in seen:
            bad.append({"id": p.id, "reason": "duplicate id"})
            continue
        seen.add(p.id)
        problems.append(p)
    for b in bad:
        logger.warning("skipped row %s of %s: %s", b["id"], source, b["reason"])
    return problems, bad


def load_seed_attempts(source: str | Path) -> tuple[list[Attempt], list[dict[str, str]]]:
    """Teacher (distilled) solutions: rows ``{"problem_id", "response"}``."""
    attempts: list[Attempt] = []
    bad: list[dict[str, str]] = []
    for i, row in enumerate(iter_rows(source)):
        pid, resp = row.get("problem_id") or row.get("id"), row.get("response") or row.get("solution_text")
        if "__bad__" in row or pid is None or not resp:
            bad.append({"id": str(pid if pid is not None else i), "reason": row.get("__bad__", "missing response")})
            continue
        attempts.append(Attempt(str(pid), str(resp), "distilled"))
    return attempts, bad
