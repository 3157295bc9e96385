"""Our verifier against Math-Verify on the same labelled corpus, in one process.

    .venv/bin/python benchmarks/verifier_bench.py [--rollouts 400] [--seed 0] [--batch-copies 10]
    .venv/bin/python benchmarks/verifier_bench.py --mv-tests mv_tests.jsonl --real real.jsonl --no-batch

``--mv-tests``: Math-Verify's own regression tests, converted from a local checkout by
``scripts/convert_math_verify_tests.py``; ``--real``: real model responses with labels from
the benchmarks' own pipelines, rebuilt by ``scripts/build_real_responses.py`` (provenance in
docs/verifier_eval.md). With either, one run prints a breakdown (Math-Verify's tests, our dev
cases, real free-form, real multiple choice) and a per-kind table, side by side.

Corpus: the public dev cases (../shared/verifier/dev_cases.jsonl, or $MATHSE_SHARED_DIR)
plus rollout-like responses generated here: a long chain of thought with intermediate
numbers, equations and (sometimes) a discarded boxed guess inside <think>, ending in an
answer written in one of the forms models use. Each is labelled by construction: the
final answer is either an equivalent form of the gold or a perturbed value.

Math-Verify runs as its README shows: ``verify(parse(gold), parse(response))`` with default
settings, the gold wrapped in ``\\boxed{}`` when bare. It runs on the main thread, where its
signal-based timeouts work. Both are warmed up before timing. Then ``verify_batch`` with 2
worker processes is timed against 1 on a larger copy of the corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ------------------------------------------------------------------ corpus

FILLER = [
    "Let me reread the question and identify what is being asked.",
    "From the figure, the two triangles share the angle at the vertex, so they are similar.",
    "We set up the equation carefully and keep track of the units.",
    "Check: substituting back gives a consistent result.",
    "Note that the total must be positive, which rules out the other root.",
    "Hmm, wait. Let me double-check the arithmetic in the previous step.",
    "Using the Pythagorean theorem on the right triangle gives the missing side.",
    "The area of the shaded region is the difference of the two areas.",
]


def _cot(rng: random.Random, steps: int) -> str:
    parts = []
    for k in range(1, steps + 1):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        op = rng.choice(["+", "-", "\\times"])
        val = a + b if op == "+" else a - b if op == "-" else a * b
        form = rng.choice([
            f"Step {k}: we compute ${a} {op} {b} = {val}$.",
            f"So the intermediate value is {val}, since {a} and {b} combine as $ {a} {op} {b} $.",
            f"Step {k}: let $x_{k} = {val}$; then $2x_{k} = {2 * val}$.",
            f"Then \\[ \\frac{{{a}}}{{{b}}} \\approx {a / b:.3f} \\] which we keep for later.",
        ])
        parts.append(form)
        if rng.random() < 0.5:
            parts.append(rng.choice(FILLER))
    return "\n".join(parts)


ENDINGS = [
    "The answer to this problem is {a}.",
    "Therefore, the final answer is $\\boxed{{{a}}}$.",
    "**Final Answer**\n\\[ \\boxed{{{a}}} \\]",
    "Answer: {a}",
    "So the final answer is ${a}$.",
    "所以答案是 ${a}$。",
    "</think>\n\nPutting it together, the answer is $\\boxed{{{a}}}$.",
    "**Answer:** {a}",
    "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "</think>\n<answer>{a}</answer>",
]


def _case(rng: random.Random):
    """(gold, correct answer forms, wrong answer forms, choices, category)."""
    kind = rng.choice(["int", "frac", "sqrt", "mc_letter", "mc_value", "units", "degrees", "percent",
                       "interval", "expr", "set", "text", "thousands", "equation", "scientific"])
    n = rng.randint(2, 99)
    if kind == "int":
        return str(n), [str(n), f"{n}.0", f"x = {n}"], [str(n + 1), str(-n), f"{n}.5"], None, kind
    if kind == "frac":
        p, q = rng.choice([(1, 3), (2, 3), (3, 4), (5, 6), (7, 8), (3, 7), (5, 9), (4, 11)])
        return (f"\\frac{{{p}}}{{{q}}}", [f"\\frac{{{2 * p}}}{{{2 * q}}}", f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}", f"{p / q:.6f}"],
                [f"\\frac{{{q}}}{{{p}}}", f"{p / q:.1f}", f"\\frac{{{p + 1}}}{{{q}}}"], None, kind)
    if kind == "sqrt":
        a, b = rng.choice([(2, 2), (2, 3), (3, 2), (2, 5), (3, 3), (4, 2), (2, 7)])
        return (f"{a}\\sqrt{{{b}}}", [f"\\sqrt{{{a * a * b}}}", f"{a}\\sqrt{b}", f"{a} \\sqrt{{{b}}}"],
                [f"{a + 1}\\sqrt{{{b}}}", f"\\sqrt{{{a * b}}}", f"{a * b}"], None, kind)
    if kind in ("mc_letter", "mc_value"):
        vals = rng.sample(range(10, 90), 4)
        choices = [str(v) for v in vals]
        k = rng.randrange(4)
        letter = "ABCD"[k]
        gold = letter if kind == "mc_letter" else choices[k]
        wrong_letter = "ABCD"[(k + 1) % 4]
        return (gold, [f"({letter})", f"{letter}", f"{letter}. {choices[k]}", choices[k]],
                [f"({wrong_letter})", choices[(k + 2) % 4], f"{letter} or {wrong_letter}"], choices, kind)
    if kind == "units":
        cm = rng.randint(11, 999)
        return (f"{cm}\\text{{ cm}}", [f"{cm / 100:g}\\text{{ m}}", f"{cm} cm", f"{cm * 10}\\text{{ mm}}", str(cm)],
                [f"{cm / 10:g}\\text{{ m}}", f"{cm + 1} cm", f"{cm}\\text{{ m}}"], None, kind)
    if kind == "degrees":
        deg, rad = rng.choice([(30, "\\frac{\\pi}{6}"), (45, "\\frac{\\pi}{4}"), (60, "\\frac{\\pi}{3}"),
                               (90, "\\frac{\\pi}{2}"), (120, "\\frac{2\\pi}{3}"), (135, "\\frac{3\\pi}{4}")])
        return (f"{deg}^\\circ", [rad, f"{deg}°", str(deg), f"{deg}^{{\\circ}}"],
                [f"{deg + 15}^\\circ", "\\frac{\\pi}{5}" if deg != 36 else "\\pi", str(deg * 2)], None, kind)
    if kind == "percent":
        pct = rng.randint(2, 98)
        return (f"{pct}\\%", [f"{pct}\\%", f"{pct / 100:g}", str(pct), f"{pct}%"],
                [f"{pct + 1}\\%", f"{pct / 10:g}", f"{(pct + 5) / 100:g}"], None, kind)
    if kind == "interval":
        a, b = sorted(rng.sample(range(-9, 10), 2))
        return (f"[{a}, {b})", [f"[{a},{b})", f"{a} \\le x < {b}", f"x \\in [{a}, {b})"],
                [f"({a}, {b})", f"[{a}, {b}]", f"[{a}, {b + 1})"], None, kind)
    if kind == "expr":
        a = rng.randint(1, 9)
        return (f"(x+{a})^2", [f"x^2+{2 * a}x+{a * a}", f"(x + {a})^{{2}}", f"x^2 + {a * a} + {2 * a}x"],
                [f"x^2+{a * a}", f"x^2+{a}x+{a * a}", f"(x-{a})^2"], None, kind)
    if kind == "set":
        a, b = sorted(rng.sample(range(-9, 10), 2))
        return (f"{a}, {b}", [f"{b}, {a}", f"\\{{{a}, {b}\\}}", f"x = {a} \\text{{ or }} x = {b}"],
                [f"{a}", f"{a}, {b + 1}", f"{a}, {b}, {b + 2}"], None, kind)
    if kind == "text":
        word, other = rng.choice([("Yes", "No"), ("No", "Yes"), ("isosceles", "scalene"), ("parallel", "perpendicular")])
        return word, [word.lower(), word.upper(), f"\\text{{{word}}}"], [other, other.lower()], None, kind
    if kind == "thousands":
        big = rng.randint(1001, 999_999)
        return (str(big), [f"{big:,}", f"{big:,}".replace(",", "{,}"), f"{big:,}".replace(",", "\\,")],
                [f"{big + 1000:,}", str(big // 10)], None, kind)
    if kind == "equation":
        m, c = rng.sample(range(2, 10), 2)  # distinct, so "y = cx + m" is really wrong
        return (f"y = {m}x + {c}", [f"y={c}+{m}x", f"y = {m}x+{c}", f"2y = {2 * m}x + {2 * c}"],
                [f"y = {m}x - {c}", f"y = {c}x + {m}"], None, kind)
    e = rng.randint(3, 7)
    mant = rng.randint(11, 99) / 10
    value = f"{mant * 10 ** -e:.{e + 1}f}"
    return (value, [f"{mant} \\times 10^{{-{e}}}", f"{mant}e-{e}", value],
            [f"{mant} \\times 10^{{-{e + 1}}}", f"{mant} \\times 10^{{{e}}}"], None, "scientific")


def rollouts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        gold, right, wrong, choices, kind = _case(rng)
        for _ in range(2):
            correct = rng.random() < 0.5
            ans = rng.choice(right if correct else wrong)
            ending = rng.choice(ENDINGS)
            body = _cot(rng, rng.randint(4, 14))
            if "</think>" in ending:
                body = "<think>\n" + body + f"\nMaybe \\boxed{{{rng.choice(wrong)}}}? Let me verify.\n"
            out.append({"category": f"rollout/{kind}", "response": body + "\n" + ending.format(a=ans),
                        "gold": gold, "expected": int(correct), "choices": choices})
    return out[:n]


# (gold, answer, label): near misses that look right but are not, beside their correct twins.
NEAR_MISSES = [
    ("-\\frac{3}{4}", "\\frac{3}{4}", 0), ("-\\frac{3}{4}", "-0.75", 1),
    ("(2, 5)", "(5, 2)", 0), ("(2, 5)", "(2,5)", 1),
    ("[1, 3]", "[1, 3)", 0), ("[1, 3]", "1 \\le x \\le 3", 1),
    ("\\pm 2", "2", 0), ("\\pm 2", "-2, 2", 1),
    ("0.35", "0.36", 0), ("0.35", "\\frac{7}{20}", 1),
    ("0.25", "25", 0), ("25\\%", "0.025", 0), ("25\\%", "\\frac{1}{4}", 1),
    ("\\frac{\\pi}{6}", "30", 0), ("\\frac{\\pi}{6}", "30^\\circ", 1),
    ("5\\text{ km}", "5\\text{ m}", 0), ("5\\text{ m}", "500\\text{ cm}", 1),
    ("x^2-1", "(x-1)^2", 0), ("x^2-1", "(x+1)(x-1)", 1),
    ("\\{1, 2, 3\\}", "\\{1, 2\\}", 0), ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", 1),
    ("y = 2x + 1", "x = 2y + 1", 0), ("y = 2x + 1", "y - 2x = 1", 1),
    ("123456789", "123456788", 0), ("123456789", "123,456,789", 1),
    ("2\\sqrt{3}", "3\\sqrt{2}", 0), ("2\\sqrt{3}", "\\sqrt{12}", 1),
    ("1.5 \\times 10^{-3}", "1.5 \\times 10^{-4}", 0), ("1.5 \\times 10^{-3}", "0.0015", 1),
    ("12:00", "1:00", 0), ("(0, 1)", "(0, 1.5)", 0),
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}", 0), ("2^{100}", "2^{100} + 1", 0), ("2^{100}", "1267650600228229401496703205376", 1),
    ("x^{10}", "x^{10} + 1", 0), ("\\sqrt{x^2}", "x", 0), ("|x|", "\\sqrt{x^2}", 1),
    ("\\frac{1}{3}", "0.3", 0), ("\\frac{1}{3}", "0.333", 1),
    ("e^{2}", "e^{2.01}", 0), ("\\ln 2", "0.6931", 1),
]


def near_misses(seed: int) -> list[dict]:
    rng = random.Random(seed + 1)
    out = []
    for gold, ans, label in NEAR_MISSES:
        ending = rng.choice(ENDINGS)
        out.append({"category": "near_miss", "response": _cot(rng, rng.randint(3, 8)) + "\n" + ending.format(a=ans),
                    "gold": gold, "expected": label, "choices": None})
    return out


def dev_cases() -> list[dict]:
    shared = Path(os.environ.get("MATHSE_SHARED_DIR", ROOT / ".." / "shared"))
    path = shared / "verifier" / "dev_cases.jsonl"
    if not path.exists():
        print(f"(dev cases not found at {path}; rollouts only)")
        return []
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


# ------------------------------------------------------------------ runners

def run_ours(corpus):
    from mathse_rl.verify import verify

    out, lat = [], []
    for row in corpus:
        t = time.perf_counter()
        v = verify(row["response"], row["gold"], choices=row.get("choices"), timeout=5.0)
        lat.append(time.perf_counter() - t)
        out.append(v.correct)
    return out, lat


def _mv_gold(gold: str) -> str:
    g = gold.strip()
    return g if g.startswith(("$", "\\boxed", "\\(", "\\[")) else "\\boxed{" + g + "}"


def run_math_verify(corpus):
    from math_verify import parse, verify

    out, lat = [], []
    for row in corpus:
        t = time.perf_counter()
        try:
            ok = bool(verify(parse(_mv_gold(row["gold"])), parse(row["response"])))
        except Exception:
            ok = False
        lat.append(time.perf_counter() - t)
        out.append(ok)
    return out, lat


def _stats(name, preds, lat, corpus):
    labels = [bool(r["expected"]) for r in corpus]
    agree = sum(p == y for p, y in zip(preds, labels))
    fp = sum(p and not y for p, y in zip(preds, labels))
    fn = sum(y and not p for p, y in zip(preds, labels))
    lat_sorted = sorted(lat)
    p99 = lat_sorted[min(len(lat) - 1, int(0.99 * len(lat)))]
    return {"name": name, "agree": agree, "n": len(labels), "fp": fp, "fn": fn,
            "median_ms": statistics.median(lat) * 1e3, "p99_ms": p99 * 1e3, "total_s": sum(lat)}


def _group(row: dict) -> str:
    cat = row.get("category", "")
    if cat.startswith("math_verify/"):
        return "math-verify tests"
    if cat.startswith("real/"):
        return "real multiple choice" if row.get("choices") else "real free-form"
    if cat.startswith(("rollout/", "near_miss")):
        return "generated"
    return "dev cases"


def _kind(row: dict) -> str:
    cat = row.get("category", "")
    if cat.startswith("math_verify/"):
        return "mv:" + cat.split("::")[-1].removeprefix("test_")
    if cat.startswith("real/"):
        return f"{cat.split('/')[1]}:{'mc' if row.get('choices') else 'free'}:{row.get('answer_type') or '-'}"
    return cat.split("/")[-1]


def _breakdown(title: str, key, corpus, results) -> None:
    """One line per group: ours and Math-Verify side by side on the same samples."""
    print(f"\n{title}")
    print(f"{'':<34}{'n':>5} | {'ours agree':>11}{'FP':>4}{'FN':>4}{'med ms':>8} | {'MV agree':>10}{'FP':>4}{'FN':>4}"
          f"{'med ms':>8} | {'ok':>3}")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(corpus):
        groups.setdefault(key(row), []).append(i)
    for g, idx in sorted(groups.items()):
        sub = [corpus[i] for i in idx]
        cells = []
        for preds, lat in results:
            cells.append(_stats("", [preds[i] for i in idx], [lat[i] for i in idx], sub))
        a, b = cells
        ok = "yes" if a["agree"] >= b["agree"] and a["fp"] <= b["fp"] else "NO"
        print(f"{g[:34]:<34}{len(idx):>5} | {100 * a['agree'] / a['n']:>10.1f}%{a['fp']:>4}{a['fn']:>4}"
              f"{a['median_ms']:>8.3f} | {100 * b['agree'] / b['n']:>9.1f}%{b['fp']:>4}{b['fn']:>4}"
              f"{b['median_ms']:>8.3f} | {ok:>3}")


def _print_table(rows):
    print(f"{'verifier':<14}{'agreement':>18}{'FP':>6}{'FN':>6}{'median ms':>12}{'p99 ms':>11}{'total s':>10}")
    for r in rows:
        pct = 100 * r["agree"] / r["n"]
        print(f"{r['name']:<14}{r['agree']:>6}/{r['n']:<5} {pct:>5.1f}%{r['fp']:>6}{r['fn']:>6}"
              f"{r['median_ms']:>12.3f}{r['p99_ms']:>11.2f}{r['total_s']:>10.2f}")


def machine_parallelism(seconds: float = 0.5, repeats: int = 3) -> float:
    """Throughput of two busy processes over one, right now (median of a few tries): what any
    2-worker speed-up is bounded by on a shared machine."""
    import subprocess

    code = f"import time\nt=time.process_time()\nwhile time.process_time()-t<{seconds}: pass"
    ratios = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        one = time.perf_counter() - t
        t = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
        for p in procs:
            p.wait()
        ratios.append(2 * one / (time.perf_counter() - t))
    return statistics.median(ratios)


def bench_batch(corpus, copies: int, repeats: int = 3):
    from mathse_rl.verify import verify_batch, warmup

    big = corpus * copies
    responses = [r["response"] for r in big]
    golds = [r["gold"] for r in big]
    choices = [r.get("choices") for r in big]
    warmup(workers=2, wait=120.0)
    times = {1: float("inf"), 2: float("inf")}
    for _ in range(repeats):  # interleaved, so both see the same background load
        for workers in (1, 2):
            t = time.perf_counter()
            verify_batch(responses, golds, choices=choices, timeout=5.0, workers=workers)
            times[workers] = min(times[workers], time.perf_counter() - t)
    return len(big), times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rollouts", type=int, default=400, help="generated rollout-like responses")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated corpus")
    ap.add_argument("--batch-copies", type=int, default=10, help="corpus copies for the verify_batch timing")
    ap.add_argument("--show-errors", action="store_true", help="list the samples each verifier gets wrong")
    ap.add_argument("--batch-only", action="store_true", help="only time verify_batch with 2 workers against 1")
    ap.add_argument("--extra", default=None,
                    help="also score a labelled JSONL (response, gold, expected[, choices]) as its own table")
    ap.add_argument("--mv-tests", default=None, help="Math-Verify's tests (scripts/convert_math_verify_tests.py)")
    ap.add_argument("--real", default=None, help="real model responses (scripts/build_real_responses.py)")
    ap.add_argument("--no-batch", action="store_true", help="skip the verify_batch timing")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # math-verify logs every unparsable string

    corpus = dev_cases() + rollouts(args.rollouts, args.seed) + near_misses(args.seed)
    for path in (args.mv_tests, args.real):
        if path:
            corpus += [json.loads(line) for line in Path(path).open(encoding="utf-8") if line.strip()]
    if args.extra:
        extra = [json.loads(line) for line in Path(args.extra).open(encoding="utf-8") if line.strip()]
        for row in extra:
            row.setdefault("category", "extra")
        from mathse_rl.verify import warmup as _warm

        _warm(wait=120.0)
        rows = [_stats("mathse-rl", *run_ours(extra), extra), _stats("math-verify", *run_math_verify(extra), extra)]
        print(f"extra corpus {args.extra}: {len(extra)} samples")
        _print_table(rows)
        return 0
    if args.batch_only:
        _print_batch(corpus, args.batch_copies)
        return 0
    from mathse_rl.verify import warmup
    from mathse_rl.verify.core import parse_gold
    from mathse_rl.verify.answer import parse_answer

    warmup(wait=120.0)
    # Both warmed on the same inputs before timing: a few of each kind, and every sample our
    # fast path leaves to the symbolic path (SymPy loads what a form needs on first use).
    from mathse_rl.verify.core import fast_verify

    undecided = [r for r in corpus if fast_verify(r["response"], r["gold"], r.get("choices"))[1] is not None]
    warm = corpus[:20] + undecided
    run_ours(warm)
    run_math_verify(warm)
    parse_gold.cache_clear()
    parse_answer.cache_clear()

    ours, lat_ours = run_ours(corpus)
    mv, lat_mv = run_math_verify(corpus)
    rows = [_stats("mathse-rl", ours, lat_ours, corpus), _stats("math-verify", mv, lat_mv, corpus)]
    if args.mv_tests or args.real:
        results = [(ours, lat_ours), (mv, lat_mv)]
        _breakdown("breakdown (ok: agreement >= Math-Verify's and FP <= Math-Verify's)", _group, corpus, results)
        _breakdown("per answer kind", _kind, corpus, results)
        print()
    groups: dict[str, int] = {}
    for r in corpus:
        groups[_group(r)] = groups.get(_group(r), 0) + 1
    print(f"corpus: {len(corpus)} samples (" + ", ".join(f"{n} {g}" for g, n in sorted(groups.items()))
          + f"; seed {args.seed}); {sum(r['expected'] for r in corpus)} labelled correct; "
          f"{len(undecided)} left to the symbolic path by our fast path")
    _print_table(rows)
    print(f"speed ratio (math-verify median / ours): {rows[1]['median_ms'] / rows[0]['median_ms']:.1f}x; "
          f"total time ratio: {rows[1]['total_s'] / rows[0]['total_s']:.1f}x")

    for name, preds in (("mathse-rl", ours), ("math-verify", mv)):
        by_cat: dict[str, list[int]] = {}
        for p, r in zip(preds, corpus):
            cat = r["category"].split("/")[-1]
            by_cat.setdefault(cat, [0, 0])
            by_cat[cat][0] += p == bool(r["expected"])
            by_cat[cat][1] += 1
        print(f"{name:<12} per category: " + ", ".join(f"{c} {a}/{n}" for c, (a, n) in sorted(by_cat.items())))
    if args.show_errors:
        for name, preds in (("mathse-rl", ours), ("math-verify", mv)):
            for p, r in zip(preds, corpus):
                if p != bool(r["expected"]):
                    print(f"[{name}] {r['category']} expected={r['expected']} gold={r['gold']!r} "
                          f"choices={r.get('choices')} tail={r['response'][-150:]!r}")

    if not args.no_batch:
        _print_batch(corpus, args.batch_copies)
    return 0


def _print_batch(corpus, copies: int) -> None:
    n, times = bench_batch(corpus, copies)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine parallelism now (2 busy processes vs 1, throughput): {machine_parallelism():.2f}x")
    print(f"verify_batch on {n} samples (best of 3): 1 worker {times[1]:.2f} s, 2 workers {times[2]:.2f} s, "
          f"speed-up {times[1] / times[2]:.2f}x (cpu count {os.cpu_count()}, load average {load:.1f})")


if __name__ == "__main__":
    sys.exit(main())
