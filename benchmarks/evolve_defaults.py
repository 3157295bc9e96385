"""The evolve loop with the recipe's defaults, as a new user runs it, on a task nobody tuned for.

One run: build the task's files and a tiny local model (random weights), then
``mathse-rl evolve --config recipes/trl/tiny_cpu.yaml`` with only model, data and
output_dir set. Tasks: ``stories`` (text only, :mod:`mathse_rl.data.stories`: 100 seed /
200 pool / 150 held-out) and ``bars`` (the demo's multimodal world, level 1, same sizes).

    python benchmarks/evolve_defaults.py --task stories --seed 0 --out mathse_runs/defaults/stories-0
    python benchmarks/evolve_defaults.py --table mathse_runs/defaults/*     # the README table

The table reads each run's ``result.json`` and stage files: held-out accuracy per stage,
what the run delivered, and how many accepted paths (seed, sampled, reflected) lack an
explicit final answer (strict extraction).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "trl" / "tiny_cpu.yaml"
SIZES = {"seed": 100, "pool": 200, "heldout": 150}


def prepare(task: str, seed: int, out: Path, size: str = "XS") -> dict[str, str]:
    """The task's train/heldout/seed files and a tiny model whose tokenizer knows its words."""
    from mathse_rl.models.tiny import build_tiny

    data = out / "data"
    if task == "stories":
        from mathse_rl.data import stories

        t = stories.make_task(seed, SIZES["seed"], SIZES["pool"], SIZES["heldout"])
        paths = stories.write_task(data, t)
        model = build_tiny(out / "model", kind="lm", size=size, seed=seed, extra_text=stories.vocabulary_text(),
                           vocab_size=512, tag="stories-v1")
    elif task == "bars":
        from mathse_rl.data import synthetic, teacher

        world = synthetic.WorldConfig(levels=(1,), mc_rate=0.25)
        seed_set = synthetic.make_split("seed", SIZES["seed"], seed=seed, cfg=world)
        pool = synthetic.make_split("train", SIZES["pool"], seed=seed, cfg=world)
        heldout = synthetic.make_split("heldout", SIZES["heldout"], seed=seed, cfg=world)
        paths = _write_bars(data, seed_set + pool, heldout, [teacher.teacher_attempt(p) for p in seed_set])
        model = build_tiny(out / "model", kind="vlm", size=size, seed=seed, extra_text=synthetic.vocabulary_text(),
                           vocab_size=768, tag="bars-v1")
    else:
        raise SystemExit(f"unknown task {task!r}; choose stories or bars")
    return {**paths, "model": model}


def _write_bars(data: Path, train, heldout, seed_attempts) -> dict[str, str]:
    (data / "images").mkdir(parents=True, exist_ok=True)

    def rows(problems) -> str:
        lines = []
        for p in problems:
            img = data / "images" / f"{p.id}.png"
            if not img.exists():
                p.images[0].save(img)
            lines.append(json.dumps({"id": p.id, "question": p.question, "answer": p.gold, "images": [str(img)],
                                     **({"choices": list(p.choices)} if p.choices else {})}) + "\n")
        return "".join(lines)

    paths = {"train": data / "train.jsonl", "eval": data / "heldout.jsonl", "seed": data / "seed.jsonl"}
    paths["train"].write_text(rows(train))
    paths["eval"].write_text(rows(heldout))
    paths["seed"].write_text("".join(json.dumps({"problem_id": a.problem_id, "response": a.response}) + "\n"
                                     for a in seed_attempts))
    return {k: str(v) for k, v in paths.items()}


def run(task: str, seed: int, out: Path, overrides: list[str], size: str = "XS") -> int:
    from mathse_rl.cli import main

    paths = prepare(task, seed, out, size)
    args = ["evolve", "--config", str(RECIPE), f"model={paths['model']}", f"data.train={paths['train']}",
            f"data.eval={paths['eval']}", f"data.seed={paths['seed']}", f"output_dir={out / 'run'}",
            f"seed={seed}", f"train.seed={seed}", *overrides]
    print("mathse-rl " + " ".join(args), flush=True)
    return main(args)


# --------------------------------------------------------------------------- the table
def lacks_final_answer(response: str, gold: str, choices) -> bool:
    """True when strict extraction finds no explicit final answer in ``response``."""
    from mathse_rl.verify import verify

    v = verify(response, gold, choices=choices, strict=True)
    return v.reason in ("no_final_answer", "no_answer")


def summarise(run_dir: Path) -> dict:
    from mathse_rl.data.loaders import load_problems

    res = json.loads((run_dir / "run" / "result.json").read_text())
    problems = {p.id: p for p in load_problems(str(run_dir / "data" / "train.jsonl"))[0]}
    accepted = {"seed": 0, "sampled": 0, "reflected": 0}
    lacking = 0
    for f in sorted((run_dir / "run" / "stages").glob("*/accepted.jsonl")):
        kind = "seed" if f.parent.name.startswith("distill") else "reflected" if "reflect" in f.parent.name else "sampled"
        for line in f.read_text().splitlines():
            row = json.loads(line)
            p = problems[row["problem_id"]]
            accepted[kind] += 1
            lacking += lacks_final_answer(row["response"], p.gold, p.choices)
    acc = {h["stage"].split(".")[0]: h["accuracy"] for h in res["heldout"] if h.get("accuracy") is not None}
    delivered = res.get("delivered_stage")
    stages = res["stages"]
    refl = stages.get("reflect", {})
    return {"run": run_dir.name, "acc": acc, "delivered": delivered,
            "delivered_acc": acc.get(delivered.split(".")[0]) if delivered else None,
            "accepted": accepted, "lacking_answer": lacking,
            "reflect": {k: refl.get(k) for k in ("refined", "verified", "skipped_reason")} if refl else None,
            "made_worse": [w["stage"] for w in res.get("worse_stages", [])],
            "minutes": round(sum(s.get("seconds", 0) for s in stages.values()) / 60, 1)}


def table(run_dirs: list[Path]) -> str:
    rows = [summarise(d) for d in run_dirs if (d / "run" / "result.json").exists()]
    cols = ["distill", "r1", "r2", "final"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    out = ["| run | M0 | round 1 | round 2 | final | delivered | accepted paths (seed / sampled / reflected) | "
           "without final answer | reflections verified | made worse | minutes |", "|" + "---|" * 11]
    for r in rows:
        refl = r["reflect"] or {}
        rv = f"{refl.get('verified')}/{refl.get('refined')}" if refl.get("refined") is not None else "off"
        delivered = f"{pct(r['delivered_acc'])} ({(r['delivered'] or '-').split('.')[0].replace('distill', 'M0')})"
        out.append(f"| {r['run']} | " + " | ".join(pct(r["acc"].get(c)) for c in cols)
                   + f" | {delivered} | {' / '.join(str(v) for v in r['accepted'].values())} | {r['lacking_answer']} | {rv} | "
                   f"{', '.join(r['made_worse']) or '-'} | {r['minutes']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["stories", "bars"], default="stories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="XS", help="tiny model size (mathse_rl.models.tiny.SIZES); XS fits a shared "
                    "2-core machine: six runs in well under an hour")
    ap.add_argument("--out", type=Path, default=None, help="run directory (data, model, run)")
    ap.add_argument("--table", type=Path, nargs="*", default=None, help="print the table of these run directories")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the recipe (none: the defaults)")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(table(sorted(args.table)))
        return 0
    out = args.out or Path("mathse_runs/defaults") / f"{args.task}-{args.seed}"
    return run(args.task, args.seed, out, args.overrides, args.size)


if __name__ == "__main__":
    sys.exit(main())
