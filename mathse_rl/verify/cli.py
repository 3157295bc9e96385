"""``mathse-rl verify``: check one answer, or a JSONL file of them.

    mathse-rl verify --gold 7 --response "The answer to this problem is 7."
    mathse-rl verify --gold C --response "\\boxed{14}" --choices 10 12 14 16
    mathse-rl verify --input rollouts.jsonl --output verdicts.jsonl

JSONL rows need ``response`` and ``gold`` (``choices`` optional); each output row is the
input row plus ``correct``, ``score``, ``pred`` and ``reason``.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gold", help="reference answer (single check)")
    parser.add_argument("--response", help="model output (single check)")
    parser.add_argument("--choices", nargs="+", default=None, help="options of a multiple-choice question, in order")
    parser.add_argument("--input", help="JSONL with response, gold[, choices] per line (batch mode)")
    parser.add_argument("--output", help="where to write the JSONL verdicts (default: stdout)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds allowed per sample")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for batch mode")
    parser.add_argument("--batch-size", type=int, default=256, help="rows verified per progress step")
    parser.add_argument("--strict", action="store_true",
                        help="accept only a stated final answer (box, answer sentence); no last-number guess")


def _run_one(args) -> int:
    from mathse_rl.types import to_dict
    from mathse_rl.verify import verify

    v = verify(args.response, args.gold, choices=args.choices, timeout=args.timeout, strict=args.strict)
    print(json.dumps({**to_dict(v), "score": v.score}, ensure_ascii=False))
    return 0


def _run_file(args) -> int:
    from tqdm import tqdm

    from mathse_rl.verify import verify_batch

    rows = []
    with open(args.input, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{args.input}:{lineno}: not JSON ({err})")
            if "response" not in row or "gold" not in row:
                raise SystemExit(f"{args.input}:{lineno}: needs 'response' and 'gold'")
            rows.append(row)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    correct = 0
    try:
        with tqdm(total=len(rows), desc="verify", unit="sample", file=sys.stderr) as bar:
            for s in range(0, len(rows), args.batch_size):
                part = rows[s:s + args.batch_size]
                verdicts = verify_batch([r["response"] for r in part], [r["gold"] for r in part],
                                        choices=[r.get("choices") for r in part], timeout=args.timeout,
                                        workers=args.workers, strict=args.strict)
                for row, v in zip(part, verdicts):
                    correct += v.correct
                    out.write(json.dumps({**row, "correct": v.correct, "score": v.score, "pred": v.pred,
                                          "reason": v.reason}, ensure_ascii=False) + "\n")
                bar.update(len(part))
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{correct}/{len(rows)} correct", file=sys.stderr)
    return 0


def run(args) -> int:
    if args.input:
        return _run_file(args)
    if args.gold is None or args.response is None:
        print("mathse-rl verify: give --gold and --response, or --input FILE.jsonl", file=sys.stderr)
        return 2
    return _run_one(args)
