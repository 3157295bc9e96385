"""Turn Math-Verify's own regression tests into a labelled JSONL for ``benchmarks/verifier_bench.py``.

    python scripts/convert_math_verify_tests.py --checkout PATH/TO/Math-Verify --out mv_tests.jsonl

``PATH`` is a local checkout of https://github.com/huggingface/Math-Verify (a work tree or
a bare git directory). Every ``@pytest.mark.parametrize`` table under ``tests/`` whose
columns include a gold, a prediction and a 0/1 expectation becomes rows
``{"category", "gold", "response", "expected", "choices": null}``; the tables are read
with ``ast.literal_eval`` (the test code is never imported or run). Nothing converted is
committed: the file is rebuilt from the checkout each time.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import head_commit, list_files, read_text  # noqa: E402

_GOLD = ("gold",)
_PRED = ("pred", "prediction", "answer")
_LABEL = ("expected", "result", "expected_result")


def _argnames(node: ast.expr) -> list[str] | None:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return None


def _rows_of(call: ast.Call) -> tuple[list[str], list] | None:
    if len(call.args) < 2:
        return None
    names = _argnames(call.args[0])
    if not names:
        return None
    try:
        values = ast.literal_eval(call.args[1])
    except ValueError:
        return None  # a table built at run time (pytest.param, comprehensions): skipped
    return names, list(values)


def convert_source(source: str, file_name: str) -> list[dict]:
    out = []
    tree = ast.parse(source)
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "parametrize"):
                continue
            table = _rows_of(dec)
            if table is None:
                continue
            names, values = table
            gi = next((names.index(n) for n in _GOLD if n in names), None)
            pi = next((names.index(n) for n in _PRED if n in names), None)
            li = next((names.index(n) for n in _LABEL if n in names), None)
            if gi is None or pi is None or li is None:
                continue
            for row in values:
                if not isinstance(row, (list, tuple)) or len(row) != len(names):
                    continue
                gold, pred, label = row[gi], row[pi], row[li]
                if not isinstance(gold, str) or not isinstance(pred, str) or label not in (0, 1, True, False):
                    continue
                extra = {n: row[i] for i, n in enumerate(names) if i not in (gi, pi, li)}
                out.append({"category": f"math_verify/{Path(file_name).stem}::{fn.name}", "gold": gold,
                            "response": pred, "expected": int(label), "choices": None,
                            "settings": extra or None})
    return out


def convert(checkout: str) -> list[dict]:
    rows = []
    for rel in list_files(checkout, "tests"):
        if not rel.endswith(".py"):
            continue
        text = read_text(checkout, rel)
        if text:
            rows.extend(convert_source(text, rel))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkout", required=True, help="local Math-Verify checkout (work tree or git directory)")
    ap.add_argument("--out", required=True, help="JSONL to write")
    args = ap.parse_args(argv)
    rows = convert(args.checkout)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows from {args.checkout} (commit {head_commit(args.checkout)}) -> {args.out}; "
          f"{sum(r['expected'] for r in rows)} labelled correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
