"""Existing model outputs to score: a benchmark's own output format, or JSON lines of id + response.

    {"id": "17", "response": "... so the answer is (B)."}

The id is the benchmark's own (MathVista ``pid``, MathVerse ``sample_index``, MATH-Vision ``id``,
MATH-500 ``unique_id``, GSM8K the 0-based line number); ``pid``, ``sample_index`` and
``unique_id`` are read as the id too. A line that is not JSON, has no id or no text response,
or repeats an id, is a bad row (listed; the first response of a repeated id is kept).

    >>> from mathse_rl.eval import get_benchmark
    >>> read_responses("output_bard.json", get_benchmark("mathvista"))          # doctest: +SKIP
    ({'1': 'Sure, I can help ...', ...}, [])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathse_rl.eval.base import BadRow, Benchmark

ID_KEYS = ("id", "pid", "sample_index", "unique_id")


def read_responses(path: str | Path, bench: Benchmark) -> tuple[dict[str, str], list[BadRow]]:
    """(id -> response, bad rows) from ``path``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"responses file not found: {path}")
    text = path.read_text(encoding="utf-8")
    parsed: Any = None
    if path.suffix != ".jsonl":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            if path.suffix == ".json":
                raise ValueError(f"{path} is not valid JSON") from None
        if isinstance(parsed, dict) and "response" in parsed:
            parsed = None  # one JSON line of id + response
    if parsed is not None:
        own = bench.outputs(parsed)
        if own is not None:
            return own, []
        rows = list(parsed.values()) if isinstance(parsed, dict) else parsed
        if not isinstance(rows, list):
            raise ValueError(f"{path}: not a {bench.name} output file and not a list of {{id, response}} rows")
        items = [(i, r) for i, r in enumerate(rows)]
    else:
        items = []
        for n, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                items.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                items.append((n, f"line {n + 1} is not valid JSON ({exc.msg})"))
        if items and all(isinstance(r, dict) for _, r in items):
            own = bench.outputs([r for _, r in items])
            if own is not None:
                return own, []
    out: dict[str, str] = {}
    bad: list[BadRow] = []
    for n, row in items:
        where = f"line{n + 1}"
        if isinstance(row, str):
            bad.append(BadRow(where, f"malformed response row: {row}"))
            continue
        if not isinstance(row, dict):
            bad.append(BadRow(where, "malformed response row: not a JSON object"))
            continue
        rid = next((row[k] for k in ID_KEYS if row.get(k) not in (None, "")), None)
        if rid is None:
            bad.append(BadRow(where, f"malformed response row: no id ({'/'.join(ID_KEYS)})"))
            continue
        resp = row.get("response")
        if not isinstance(resp, str):
            bad.append(BadRow(str(rid), "malformed response row: 'response' is missing or not text"))
            continue
        if str(rid) in out:
            bad.append(BadRow(str(rid), "duplicate response (the first is scored)"))
            continue
        out[str(rid)] = resp
    return out, bad

