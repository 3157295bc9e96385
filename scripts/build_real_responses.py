"""Rebuild the real-model-response set for ``benchmarks/verifier_bench.py --real``.

    python scripts/build_real_responses.py --mathvista PATH/TO/MathVista --tora PATH/TO/ToRA --out real.jsonl

Sources (local checkouts, work tree or bare git directory; provenance in docs/verifier_eval.md):

- ``lupantech/MathVista`` ``results/*/output_*.json``: per-sample responses of several
  models on MathVista testmini (multimodal; multiple choice and free form), each with the
  benchmark's own verdict ``true_false`` (its pipeline: answer extraction, then its
  normalised comparison). Program-of-thought outputs (``*_code*``) and the random/template
  baselines are left out: their response is code or no response at all. A response whose
  recorded ``extraction`` (the text the benchmark judged) does not occur in it, as a whole
  token sequence, is left out too: its label was made from text that is not the response.
- ``microsoft/ToRA`` ``src/outputs/llm-agents/*/gsm8k/*.jsonl``: responses of two ToRA models
  on GSM8K (text, free form). The label is ToRA's own extracted prediction (``pred``) equal
  to the GSM8K integer answer (``gt``) as numbers.

Labels never come from our verifier. A fixed-seed sample of ``--per-model`` responses is
kept per model. Nothing built here is committed: run the script against the checkouts.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import head_commit, list_files, read_text  # noqa: E402

_SKIP = ("_code", "random", "template", "frequent_guess")


def _choices(value) -> list[str] | None:
    if value is None or value == "None":
        return None
    if isinstance(value, list):
        return [str(c) for c in value]
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        return None
    return [str(c) for c in parsed] if isinstance(parsed, (list, tuple)) else None


def _norm(s) -> str:
    return re.sub(r"\s+", " ", str(s)).strip().lower()


def _judged_text_in_response(extraction, response: str) -> bool:
    ex = _norm(extraction or "")
    return bool(ex) and re.search(r"(?<!\w)" + re.escape(ex) + r"(?!\w)", _norm(response)) is not None


def mathvista(checkout: str, per_model: int, seed: int) -> list[dict]:
    out = []
    for rel in list_files(checkout, "results"):
        name = Path(rel).name
        if not (name.startswith("output_") and name.endswith(".json")) or any(s in rel for s in _SKIP):
            continue
        text = read_text(checkout, rel)
        if not text:
            continue
        data = json.loads(text)
        rows = []
        for pid, e in sorted(data.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]):
            if "true_false" not in e or not isinstance(e.get("response"), str) or not e["response"].strip():
                continue
            if not _judged_text_in_response(e.get("extraction"), e["response"]):
                continue
            label = e["true_false"] if isinstance(e["true_false"], bool) else str(e["true_false"]) == "True"
            mc = e.get("question_type") == "multi_choice"
            rows.append({"category": f"real/mathvista/{'mc' if mc else 'free'}", "source": f"{rel}#{pid}",
                         "gold": str(e["answer"]), "response": e["response"], "expected": int(label),
                         "choices": _choices(e.get("choices")) if mc else None,
                         "answer_type": e.get("answer_type")})
        random.Random(f"{seed}/{rel}").shuffle(rows)
        out.extend(rows[:per_model])
    return out


def _num(s) -> float | None:
    try:
        return float(str(s).replace(",", "").strip())
    except ValueError:
        return None


def tora(checkout: str, per_model: int, seed: int) -> list[dict]:
    out = []
    for rel in list_files(checkout, "src/outputs"):
        if "/gsm8k/" not in rel or not rel.endswith(".jsonl"):
            continue
        text = read_text(checkout, rel)
        if not text:
            continue
        rows = []
        for line in text.splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            if not e.get("code") or not e.get("pred"):
                continue
            gt, pred = _num(e["gt"]), _num(e["pred"][0])
            label = gt is not None and pred is not None and abs(gt - pred) < 1e-9
            rows.append({"category": "real/tora_gsm8k/free", "source": f"{rel}#{e['idx']}", "gold": str(e["gt"]),
                         "response": e["code"][0], "expected": int(label), "choices": None, "answer_type": "integer"})
        random.Random(f"{seed}/{rel}").shuffle(rows)
        out.extend(rows[:per_model])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mathvista", help="local checkout of lupantech/MathVista")
    ap.add_argument("--tora", help="local checkout of microsoft/ToRA")
    ap.add_argument("--per-model", type=int, default=80, help="responses kept per model output file")
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-model sample")
    ap.add_argument("--out", required=True, help="JSONL to write")
    args = ap.parse_args(argv)
    rows = []
    if args.mathvista:
        rows += mathvista(args.mathvista, args.per_model, args.seed)
        print(f"MathVista commit {head_commit(args.mathvista)}")
    if args.tora:
        rows += tora(args.tora, args.per_model, args.seed)
        print(f"ToRA commit {head_commit(args.tora)}")
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    by = {}
    for r in rows:
        by.setdefault(r["category"], [0, 0])
        by[r["category"]][0] += 1
        by[r["category"]][1] += r["expected"]
    print(f"{len(rows)} responses -> {args.out}: " + ", ".join(f"{c} {n} ({k} correct)" for c, (n, k) in sorted(by.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
