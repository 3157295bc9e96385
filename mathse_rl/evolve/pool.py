"""Durable state of a run: the training pool, per-stage files and stage completion records.

Everything is JSON lines written atomically (write a temporary file, fsync, rename), so
a run killed at any instant leaves either the old or the new version of a file, never a
half-written one. The pool only grows; adding a path twice is a no-op (dedup key =
question id + normalised text), which is what makes re-running an unfinished stage safe.

    >>> import tempfile
    >>> from mathse_rl.types import Attempt
    >>> pool = Pool(tempfile.mkdtemp() + "/pool.jsonl")
    >>> pool.add([Attempt("q1", "Step 1: 2+2=4. The answer to this problem is 4.", "sampled", round=1)])
    1
    >>> pool.add([Attempt("q1", "step 1:  2+2=4.  The answer to this problem is 4.", "sampled", round=2)])
    0
    >>> pool.counts_by_source()
    {'distilled': 0, 'sampled': 1, 'reflected': 0}
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mathse_rl.types import SOURCES, Attempt, Judgment, Verdict, to_dict


class Bookkeeping:
    """Seconds spent on durable state (files, records), so the loop can report its share."""

    seconds: float = 0.0

    class _Timer:
        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            Bookkeeping.seconds += time.perf_counter() - self.t0

    @classmethod
    def timer(cls) -> "Bookkeeping._Timer":
        return cls._Timer()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Bookkeeping.timer():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file is empty. Files here are written atomically."""
    path = Path(path)
    if not path.exists():
        return []
    with Bookkeeping.timer():
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The dedup form of a path: case-folded, whitespace collapsed, trimmed."""
    return _WS.sub(" ", text).strip().casefold()


def attempt_to_row(attempt: Attempt) -> dict[str, Any]:
    return to_dict(attempt)


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """Inverse of :func:`attempt_to_row` (nested verdict/judgment records are rebuilt)."""
    row = dict(row)
    if isinstance(row.get("verdict"), Mapping):
        row["verdict"] = Verdict(**row["verdict"])
    if isinstance(row.get("judgment"), Mapping):
        row["judgment"] = Judgment(**row["judgment"])
    row["meta"] = dict(row.get("meta") or {})
    return Attempt(**row)


class Pool:
    """The accumulating SFT pool ``D_SFT``: accepted paths with their source and round.

    ``max_per_question`` caps accepted paths per question; ``dedup`` drops repeats by
    normalised text. The file is rewritten atomically on every :meth:`add` that changes it.
    """

    def __init__(self, path: str | Path, *, dedup: bool = True, max_per_question: int | None = None):
        self.path = Path(path)
        self.dedup = dedup
        self.max_per_question = max_per_question
        self.attempts: list[Attempt] = [attempt_from_row(r) for r in read_jsonl(self.path)]
        self._keys = {self._key(a) for a in self.attempts}
        self._per_question = Counter(a.problem_id for a in self.attempts)
        self.rejected_duplicate = 0
        self.rejected_cap = 0

    @staticmethod
    def _key(a: Attempt) -> tuple[str, str]:
        return a.problem_id, normalise(a.response)

    def add(self, attempts: Iterable[Attempt]) -> int:
        """Add accepted paths; returns how many were new. Persists before returning."""
        added = 0
        for a in attempts:
            key = self._key(a)
            if self.dedup and key in self._keys:
                self.rejected_duplicate += 1
                continue
            if self.max_per_question is not None and self._per_question[a.problem_id] >= self.max_per_question:
                self.rejected_cap += 1
                continue
            self.attempts.append(a)
            self._keys.add(key)
            self._per_question[a.problem_id] += 1
            added += 1
        if added:
            self.save()
        return added

    def save(self) -> None:
        write_jsonl(self.path, (attempt_to_row(a) for a in self.attempts))

    def __len__(self) -> int:
        return len(self.attempts)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self.attempts)

    def solved(self) -> set[str]:
        """Question ids with at least one accepted path (they leave ``D_remain``)."""
        return set(self._per_question)

    def counts_by_source(self) -> dict[str, int]:
        c = Counter(a.source for a in self.attempts)
        return {s: c.get(s, 0) for s in SOURCES}

    def by_question(self) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = defaultdict(list)
        for a in self.attempts:
            out[a.problem_id].append(a)
        return dict(out)


class StageLog:
    """Which stages finished, with their metrics: one JSON record per completed stage.

    A stage that is not recorded here did not finish and is re-run on ``--resume``;
    its own outputs are written so that re-running is safe (pool dedup, chunk files).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {r["stage"]: r for r in read_jsonl(self.path)}

    def done(self, stage: str) -> bool:
        return stage in self.records

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.records.get(stage)

    def complete(self, stage: str, **info: Any) -> dict[str, Any]:
        record = {"stage": stage, "finished_at": time.time(), **info}
        self.records[stage] = record
        write_jsonl(self.path, self.records.values())
        return record


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]
