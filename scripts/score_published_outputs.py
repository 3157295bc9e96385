#!/usr/bin/env python3
"""Score the released outputs of MathVista's and MATH-Vision's repositories with ``mathse-rl eval
--responses`` and compare with their published accuracies (the table of docs/eval_reproduction.md).

    python scripts/score_published_outputs.py --mathvista PATH/MathVista --mathvision PATH/MATH-V \\
        [--out /tmp/published] [--repeat 5]

Checkouts may be work trees or bare git directories (their HEAD is read). Per output file: the
published accuracy (``scores_*.json`` / ``*_result.json`` beside it), ours (the same code path as
``mathse-rl eval --responses``, zero LLM calls), the difference, how many rows the two verdicts
disagree on (accepted by us only / by the release only), our reason for each disagreeing verdict,
and the median scoring time of 1,000 responses over ``--repeat`` runs (scoring only, files read).
Then the ranking: Kendall's tau between published and ours, and the pairs of models whose order
flips, with their published gap.

Left out: MathVista's random/frequent-guess baselines and its leaderboard templates (no model),
and files a checkout holds only as a pointer (listed as missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import head_commit, read_text  # noqa: E402

from mathse_rl.eval import get_benchmark, load_benchmark  # noqa: E402
from mathse_rl.eval.responses import read_responses  # noqa: E402
from mathse_rl.eval.run import EvalSettings, run_eval, score_rows  # noqa: E402

_NOT_MODELS = ("random", "template", "frequent_guess", "Random-Chance")


def list_files(root: str, under: str) -> list[str]:
    """Files below ``under`` of a work tree or a bare git directory (names may hold spaces)."""
    import subprocess

    base = Path(root)
    if (base / under).is_dir():
        return sorted(str(p.relative_to(base)) for p in (base / under).rglob("*") if p.is_file())
    out = subprocess.run(["git", "--git-dir", str(base), "ls-tree", "-r", "-z", "--name-only", "HEAD", under],
                         capture_output=True, check=True, text=True).stdout
    return [p for p in out.split("\0") if p]


def _materialise(root: str, rel: str, into: Path) -> Path | None:
    text = read_text(root, rel)
    if text is None or text.startswith("version https://git-lfs"):
        return None
    path = into / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mathvista_files(root: str, into: Path) -> tuple[Path, list[tuple[str, Path | None, float]]]:
    data = _materialise(root, "data/testmini.json", into)
    if data is None:
        raise SystemExit(f"{root}: data/testmini.json not found")
    runs = []
    for rel in list_files(root, "results"):
        name = Path(rel).name
        if not (name.startswith("output_") and name.endswith(".json")) or any(s in rel for s in _NOT_MODELS):
            continue
        scores = read_text(root, str(Path(rel).with_name(name.replace("output_", "scores_", 1))))
        if scores is None:
            continue
        published = float(json.loads(scores)["average"]["accuracy"])
        runs.append((name[len("output_"):-len(".json")], _materialise(root, rel, into), published))
    return data, runs


def mathvision_files(root: str, into: Path) -> tuple[Path, list[tuple[str, Path | None, float]]]:
    data = _materialise(root, "data/test.jsonl", into)
    if data is None:
        raise SystemExit(f"{root}: data/test.jsonl not found")
    runs = []
    for rel in list_files(root, "outputs"):
        if not rel.endswith("_result.json") or any(s in rel for s in _NOT_MODELS):
            continue
        published = float(json.loads(read_text(root, rel))["-all"].split("=")[1].rstrip("%"))
        out_rel = rel[:-len("_result.json")] + ".jsonl"
        runs.append((Path(out_rel).stem, _materialise(root, out_rel, into), published))
    return data, runs


def labels(bench: str, path: Path) -> dict[str, bool]:
    """The release's own per-row verdicts inside an output file."""
    if bench == "mathvista":
        return {str(r.get("pid", k)): r.get("true_false") in (True, "True")
                for k, r in json.loads(path.read_text()).items()}
    return {str(json.loads(line)["id"]): bool(json.loads(line)["correct"])
            for line in path.read_text().splitlines() if line.strip()}


def score(bench_name: str, data: Path, runs, out: Path, repeat: int) -> list[dict]:
    bench, problems, _ = load_benchmark(bench_name, data)
    rows = []
    for model, path, published in sorted(runs, key=lambda r: -r[2]):
        if path is None:
            rows.append({"model": model, "published": published, "missing": True})
            continue
        results = run_eval(EvalSettings(benchmark=bench_name, data=str(data), responses=str(path),
                                        out=str(out / bench_name / model), progress=False, report_to=["none"]),
                           printer=lambda _: None)
        responses, _ = read_responses(path, bench)
        times = []
        for _ in range(repeat):  # scoring alone, the files already read
            start = time.perf_counter()
            scored = score_rows(bench, problems, responses)
            times.append(time.perf_counter() - start)
        official = labels(bench_name, path)
        ours_only = [r for r in scored if r["correct"] and not official.get(r["id"], False)]
        theirs_only = [r for r in scored if not r["correct"] and official.get(r["id"], False)]
        why: dict[str, int] = {}
        for r in ours_only + theirs_only:
            why[r["reason"]] = why.get(r["reason"], 0) + 1
        rows.append({"model": model, "published": published, "ours": results["overall"]["accuracy"],
                     "diff": round(results["overall"]["accuracy"] - published, 2), "n": len(scored),
                     "ours_only": len(ours_only), "theirs_only": len(theirs_only),
                     "why": dict(sorted(why.items(), key=lambda kv: -kv[1])),
                     "seconds_per_1000": statistics.median(times) * 1000 / len(scored)})
    return rows


def kendall(rows: list[dict]) -> tuple[float, list[tuple[str, str, float]]]:
    scored = [r for r in rows if "ours" in r]
    concordant = discordant = 0
    flips = []
    for a, b in combinations(scored, 2):
        p, o = a["published"] - b["published"], a["ours"] - b["ours"]
        if p * o > 0:
            concordant += 1
        elif p * o < 0:
            discordant += 1
            flips.append((a["model"], b["model"], round(abs(p), 2)))
    pairs = len(scored) * (len(scored) - 1) / 2
    return (concordant - discordant) / pairs if pairs else float("nan"), sorted(flips, key=lambda f: -f[2])


def table(title: str, rows: list[dict], commit: str | None) -> str:
    lines = [f"### {title} (commit {commit})", "",
             "| model | published | ours | difference | disagreeing rows (ours only / release only) "
             "| our reason on those rows | seconds per 1,000 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("missing"):
            lines.append(f"| {r['model']} | {r['published']:.2f} | - | - | output file not in the checkout | | |")
            continue
        why = ", ".join(f"{k} {v}" for k, v in list(r["why"].items())[:4])
        lines.append(f"| {r['model']} | {r['published']:.2f} | {r['ours']:.2f} | {r['diff']:+.2f} | "
                     f"{r['ours_only']} / {r['theirs_only']} | {why} | {r['seconds_per_1000']:.2f} |")
    tau, flips = kendall(rows)
    within = [r for r in rows if "ours" in r and abs(r["diff"]) <= 2.0]
    lines += ["", f"Within 2.0 points: {len(within)} of {sum('ours' in r for r in rows)}. Kendall's tau "
              f"(published vs ours): {tau:.3f}; pairs whose order flips: {len(flips)}"
              + (f", the widest published gap among them {flips[0][2]:.2f} points ({flips[0][0]} / {flips[0][1]})"
                 if flips else "") + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mathvista", help="checkout of lupantech/MathVista")
    ap.add_argument("--mathvision", help="checkout of mathllm/MATH-V")
    ap.add_argument("--out", default=None, help="where the per-model results go (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=3, help="timed scoring passes per output file (median)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="published-"))
    out = Path(args.out) if args.out else work / "results"
    everything = {}
    for name, root, files in (("mathvista", args.mathvista, mathvista_files),
                              ("mathvision", args.mathvision, mathvision_files)):
        if not root:
            continue
        data, runs = files(root, work / name)
        rows = score(name, data, runs, out, args.repeat)
        everything[name] = rows
        print(table(f"{get_benchmark(name).title} ({'testmini' if name == 'mathvista' else 'test'})", rows,
                    head_commit(root)))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
