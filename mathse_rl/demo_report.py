"""What ``mathse-rl demo`` reports: the stage-by-stage table of one seed (lenient and strict held-out
accuracy, the sample-level facts, the online arms, the ORM), the plot, and the per-seed table with mean
and spread that says where a gap between arms is larger than the seeds' spread.

    text, data = seed_table([json.load(open(f"run/seed-{s}/demo_results.json")) for s in (0, 1, 2)])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

ARM_TITLES = {
    "distill": "distillation only (more teacher data)",
    "rs": "rejection sampling only (verifier, no reflection)",
    "mathse": "MathSE offline (ORM judge + critique, teacher reflects)",
    "grpo": "GRPO online (trl GRPOTrainer)",
    "mathse_grpo": "MathSE online (MathSETrainer, teacher reflects)",
}
OFFLINE, ONLINE = ("distill", "rs", "mathse"), ("grpo", "mathse_grpo")


def _pct(v: Any, unit: str = "") -> str:
    return "n/a" if v is None else f"{100 * v:.1f}{unit}"


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Final-vs-M0 gains per arm (lenient and strict), and MathSE against its baseline offline and online."""
    s: dict[str, Any] = {}
    m0 = next((r[0]["heldout_accuracy"] for r in results.values() if r and r[0]["heldout_accuracy"] is not None), None)
    s["m0_accuracy"] = m0
    for arm, rows in results.items():
        final, start = rows[-1], rows[0]
        s[f"{arm}_final_accuracy"] = final["heldout_accuracy"]
        s[f"{arm}_final_strict_accuracy"] = final.get("heldout_strict_accuracy")
        s[f"{arm}_gain_over_m0"] = (None if final["heldout_accuracy"] is None or start["heldout_accuracy"] is None
                                    else final["heldout_accuracy"] - start["heldout_accuracy"])
    for a, b in (("mathse", "rs"), ("mathse_grpo", "grpo")):
        x, y = s.get(f"{a}_final_accuracy"), s.get(f"{b}_final_accuracy")
        if x is not None and y is not None:
            s[f"{a}_minus_{b}"] = x - y
    return s


def format_report(cfg: Any, results: dict[str, list[dict[str, Any]]], summary: dict[str, Any],
                  orm_info: dict[str, Any], verl: dict[str, Any] | None = None) -> str:
    """Held-out accuracy per stage and arm (lenient / strict), the sample-level facts, the ORM table."""
    lines = [f"## MathSE demo, seed {cfg.seed}: held-out accuracy (%) on {cfg.heldout_problems} problems, "
             "lenient / strict extraction", ""]
    offline = [a for a in OFFLINE if a in results]
    if offline:
        lines += ["| stage | " + " | ".join(ARM_TITLES[a] for a in offline) + " |", "|---|" + "---|" * len(offline)]
        for i in range(max(len(results[a]) for a in offline)):
            cells = []
            for a in offline:
                r = results[a][i] if i < len(results[a]) else {}
                extra = f" ({_pct(r.get('heldout_all_steps_correct'))} all steps right)" \
                    if r.get("heldout_all_steps_correct") is not None else ""
                cells.append(f"{_pct(r.get('heldout_accuracy'))} / {_pct(r.get('heldout_strict_accuracy'))}{extra}")
            label = results[offline[0]][i]["stage"]
            if label == "M0":
                label = f"M0 (distilled on {cfg.seed_problems} teacher paths)"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("| final − M0 (points) | " + " | ".join(
            "n/a" if summary.get(f"{a}_gain_over_m0") is None else f"{100 * summary[f'{a}_gain_over_m0']:+.1f}"
            for a in offline) + " |")
        lines += ["", "Sample-level facts per round (exact step checker):", "",
                  "| arm | round | generated paths | accepted | accepted with all steps right | reflections verified "
                  "(all steps right) | training rows | steps |", "|---|---|---|---|---|---|---|---|"]
        for a in offline:
            for r in results[a][1:]:
                refl = "—" if r.get("reflections") is None else \
                    f"{r.get('reflections_accepted', 0)}/{r.get('reflections')} " \
                    f"({_pct(r.get('reflections_all_steps_correct'), '%')})"
                lines.append(f"| {a} | {r['stage']} | {r.get('generated_paths') or '—'} | "
                             f"{r.get('accepted_paths', r.get('teacher_paths', '—'))} | "
                             f"{_pct(r.get('accepted_all_steps_correct'), '%') if 'accepted_all_steps_correct' in r else '100.0% (teacher)'} | "
                             f"{refl} | {r.get('train_rows', '—')} | {r.get('train_steps', '—')} |")
    online = [a for a in ONLINE if a in results]
    if online:
        lines += ["", f"Online arms from the same M0, {cfg.online_steps} GRPO steps each "
                  f"({cfg.online_recipe}, learning rate {results[online[0]][-1].get('learning_rate')}):", "",
                  "| arm | M0 lenient / strict | after lenient / strict | verified refinements | accepted share "
                  "| guard |", "|---|---|---|---|---|---|"]
        for a in online:
            b, r = results[a][0], results[a][-1]
            ver = "—" if r.get("verified_refinements") is None else \
                f"{r['verified_refinements']:.0f} of {r.get('refinements') or 0:.0f}"
            guard = r["guard"]["delivered"] + ("; " + " ".join(r["guard"]["warnings"]) if r["guard"]["warnings"] else "")
            lines.append(f"| {ARM_TITLES[a]} | {_pct(b['heldout_accuracy'])} / {_pct(b['heldout_strict_accuracy'])} | "
                         f"{_pct(r['heldout_accuracy'])} / {_pct(r['heldout_strict_accuracy'])} | {ver} | "
                         f"{_pct(r.get('accepted_share'), '%')} | {guard} |")
    if verl:
        steps = "; ".join(f"step {m.get('step')}: {m.get('mathse/accepted', 0):.0f} of {m.get('mathse/paths', 0):.0f} "
                          f"paths accepted, {m.get('mathse/refine_verified', 0):.0f} of "
                          f"{m.get('mathse/reflected', 0):.0f} refinements verified" for m in verl["steps"])
        lines += ["", f"verl `mathse` (MathSE-RFT, reflect agent loop, the policy refining) through main_ppo on CPU "
                  f"from M0: exit status {verl['exit_status']}, {verl['seconds']:.0f}s; {steps or 'no step logged'}."]
    notes = ["One seed: at these horizons seed-to-seed spread is ±10-20 points; compare arms over seeds "
             "(`mathse-rl demo --seeds 0,1,2`) before trusting a gap."]
    if "mathse_minus_rs" in summary:
        notes.append(f"MathSE − rejection sampling (offline, equal steps) = {100 * summary['mathse_minus_rs']:+.1f} "
                     "points on this seed.")
    if "mathse_grpo_minus_grpo" in summary:
        notes.append(f"MathSE − GRPO (online, equal steps) = {100 * summary['mathse_grpo_minus_grpo']:+.1f} points "
                     "on this seed.")
    rep = (orm_info or {}).get("report") or {}
    if rep.get("negative_accuracy") is not None and rep["negative_accuracy"] < 0.5:
        notes.append(f"The ORM did not learn to reject wrong paths ({100 * rep['negative_accuracy']:.0f}% of wrong "
                     "paths judged wrong), so MathSE's accept decisions were in effect the verifier's.")
    lines += [""] + notes
    if (orm_info or {}).get("table"):
        lines += ["", orm_info["table"]]
    return "\n".join(lines)


def _figure(cfg: Any, results: dict[str, list[dict[str, Any]]]):
    """Held-out accuracy per stage and arm; the legend sits below the axes, where it covers no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.8), dpi=100)
    stages = max((len(rows) for rows in results.values()), default=1)
    for arm, rows in results.items():
        ys = [float("nan") if r.get("heldout_accuracy") is None else 100 * r["heldout_accuracy"] for r in rows]
        xs = list(range(len(rows))) if arm not in ONLINE else [0, stages - 1]
        ax.plot(xs, ys, marker="o", linestyle="--" if arm in ONLINE else "-", label=ARM_TITLES.get(arm, arm))
    ax.set_xticks(range(stages), ["M0"] + [f"round {i}" for i in range(1, stages)])
    ax.set_xlabel("stage (M0, then each round; online arms: after all their steps)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"MathSE demo (tiny Qwen2.5-VL, synthetic bar charts, seed {cfg.seed})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def plot(cfg: Any, results: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(cfg, results)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- several seeds


def seed_table(payloads: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Held-out accuracy per arm and stage for each seed, with mean and spread (sample standard
    deviation, and min-max), and the MathSE-vs-baseline claims the spread allows.

    A claim "A > B" is made only when A beats B in every seed and the mean gap is larger than the
    standard deviation of the per-seed gaps (otherwise the table says the gap is within noise).
    """
    import statistics

    seeds = [p["config"]["seed"] for p in payloads]
    cells: dict[tuple[str, str], list[float | None]] = {}
    for p in payloads:
        for arm, rows in p["arms"].items():
            for r in rows:
                for kind in ("heldout_accuracy", "heldout_strict_accuracy"):
                    cells.setdefault((arm, r["stage"], kind), []).append(r.get(kind))  # type: ignore[index]

    def stats(xs: list[float | None]) -> dict[str, float | None]:
        v = [x for x in xs if x is not None]
        if not v:
            return {"mean": None, "sd": None, "min": None, "max": None}
        return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                "min": min(v), "max": max(v)}

    lines = [f"## MathSE demo over seeds {', '.join(map(str, seeds))}: held-out accuracy (%), lenient "
             "(strict in brackets)", "", "| arm | stage | " + " | ".join(f"seed {s}" for s in seeds) +
             " | mean ± sd | min-max |", "|---|---|" + "---|" * len(seeds) + "---|---|"]
    data: dict[str, Any] = {"seeds": seeds, "cells": []}
    for arm in (*OFFLINE, *ONLINE):
        for (a, stage, kind), xs in cells.items():
            if a != arm or kind != "heldout_accuracy":
                continue
            strict = cells.get((a, stage, "heldout_strict_accuracy"), [None] * len(xs))
            st, ss = stats(xs), stats(strict)
            data["cells"].append({"arm": a, "stage": stage, "lenient": xs, "strict": strict, **st,
                                  "strict_mean": ss["mean"]})
            per = " | ".join(f"{_pct(x)} ({_pct(y)})" for x, y in zip(xs, strict))
            lines.append(f"| {ARM_TITLES[a]} | {stage} | {per} | {_pct(st['mean'])} ± {_pct(st['sd'])} "
                         f"({_pct(ss['mean'])}) | {_pct(st['min'])}-{_pct(st['max'])} |")
    lines.append("")
    data["claims"] = {}
    for a, b in (("mathse", "rs"), ("mathse", "distill"), ("mathse_grpo", "grpo")):
        gaps = []
        for p in payloads:
            ra, rb = p["arms"].get(a), p["arms"].get(b)
            if ra and rb and ra[-1]["heldout_accuracy"] is not None and rb[-1]["heldout_accuracy"] is not None:
                gaps.append(ra[-1]["heldout_accuracy"] - rb[-1]["heldout_accuracy"])
        if len(gaps) < 2:
            continue
        g = stats(gaps)
        claim = all(x > 0 for x in gaps) and g["mean"] > (g["sd"] or 0.0)
        data["claims"][f"{a}>{b}"] = {"gaps": gaps, **g, "claimed": claim}
        verdict = (f"{ARM_TITLES[a]} > {ARM_TITLES[b]}: claimed" if claim else
                   f"{ARM_TITLES[a]} vs {ARM_TITLES[b]}: within the seed spread, no claim")
        lines.append(f"- final-stage gap {a} − {b} per seed: " + ", ".join(f"{100 * x:+.1f}" for x in gaps) +
                     f" points (mean {100 * g['mean']:+.1f} ± {100 * g['sd']:.1f}). {verdict}.")
    walls = [p["wall_time_s"] for p in payloads]
    lines.append(f"- wall time per seed: {', '.join(f'{w:.0f}s' for w in walls)}; load average at the end of each: "
                 + ", ".join(f"{p['load_average'][0]:.1f}" for p in payloads))
    return "\n".join(lines), data
