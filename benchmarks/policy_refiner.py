"""Can the policy refine its own wrong paths? The policy refiner measured on finished runs.

Takes run directories written by ``benchmarks/evolve_defaults.py`` (reflection off by default),
copies each run's pool and stage records to ``run-policy/`` and resumes it with
``reflect.refiner=policy``: the loop's own reflect stage (the policy writes a refinement of every
stored wrong path from the paper's prompt and the critique), strict re-judge, final fine-tune and
final held-out evaluation. Then it re-reads every refinement and prints, per run:

- refinements written, and how many the strict judge verified (the loop's acceptance);
- how many the lenient verifier (last-number fallback) would have accepted;
- of the verified ones, how many end with an explicit correct answer sentence;
- held-out accuracy before (best of M0 and the rounds) and after the final fine-tune.

    python benchmarks/policy_refiner.py mathse_runs/defaults/bars-0 mathse_runs/defaults/bars-1
    python benchmarks/policy_refiner.py mathse_runs/defaults/bars-0 reflect.max_per_question=1   # key=value: overrides
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mathse_rl.prompts import ANSWER_PHRASE


def resume_with_policy(run_dir: Path, overrides: list[str]) -> Path:
    from omegaconf import OmegaConf

    from mathse_rl.cli import main

    src, dst = run_dir / "run", run_dir / "run-policy"
    if not (dst / "result.json").exists():
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for name in ("pool.jsonl", "stages.jsonl", "config.yaml"):
            shutil.copy(src / name, dst / name)
        shutil.copytree(src / "stages", dst / "stages")
        if (src / "images").exists():
            shutil.copytree(src / "images", dst / "images")
        cfg = OmegaConf.load(src / "config.yaml")
        args = ["evolve", "--config", str(src / "config.yaml"), f"output_dir={dst}", "reflect.refiner=policy",
                "tracking.progress=false", *overrides, "--resume"]
        assert cfg.model and main(args) == 0
    return dst


def measure(run_dir: Path, overrides: list[str]) -> dict:
    from mathse_rl.data.loaders import load_problems
    from mathse_rl.verify import verify

    dst = resume_with_policy(run_dir, overrides)
    problems = {p.id: p for p in load_problems(str(run_dir / "data" / "train.jsonl"))[0]}
    rows = [json.loads(line) for f in sorted((dst / "stages" / "reflect").glob("part-*.jsonl"))
            for line in f.read_text().splitlines()]
    verified = [r for r in rows if r["status"] == "verified"]
    lenient = sum(verify(r["response"], problems[r["problem_id"]].gold, choices=problems[r["problem_id"]].choices)
                  .correct for r in rows)
    explicit = sum(ANSWER_PHRASE.lower() in r["response"].lower() and verify(
        r["response"], problems[r["problem_id"]].gold, choices=problems[r["problem_id"]].choices, strict=True).correct
        for r in verified)
    res = json.loads((dst / "result.json").read_text())
    acc = {h["stage"]: h["accuracy"] for h in res["heldout"]}
    before = max(v for k, v in acc.items() if k != "final.eval" and v is not None)
    return {"run": run_dir.name, "refined": len(rows), "verified_strict": len(verified), "verified_lenient": lenient,
            "verified_with_explicit_correct_answer": explicit, "truncated": sum(r["status"] == "truncated" for r in rows),
            "heldout_best_before": before, "heldout_final": acc.get("final.eval"),
            "delivered": res.get("delivered_stage")}


def main(argv: list[str]) -> int:
    overrides = [a for a in argv if "=" in a]
    out = [measure(Path(a), overrides) for a in argv if "=" not in a]
    print("| run | refinements | verified (strict) | lenient would accept | verified with explicit correct answer "
          "| cut off at max_new_tokens | held-out best before | after final fine-tune | delivered |")
    print("|" + "---|" * 9)
    for r in out:
        final = "-" if r["heldout_final"] is None else f"{100 * r['heldout_final']:.1f}"
        print(f"| {r['run']} | {r['refined']} | {r['verified_strict']} | {r['verified_lenient']} | "
              f"{r['verified_with_explicit_correct_answer']} | {r['truncated']} | {100 * r['heldout_best_before']:.1f} | "
              f"{final} | {r['delivered']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
