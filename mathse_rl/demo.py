"""``mathse-rl demo`` (what ``make demo`` runs): the whole MathSE method on a CPU, on the project's own parts.

The world is :mod:`mathse_rl.data.synthetic` (bar charts whose heights are only in the image);
its teacher, error injector and exact step checker are :mod:`mathse_rl.data.teacher`, and the
teacher answers behind an OpenAI-compatible endpoint started here
(:mod:`mathse_rl.data.teacher_server`), as GPT-4o does in the paper. Everything that trains or
generates is what a user runs: the evolve loop with trl's ``SFTTrainer`` backend and the ``hf``
generator (``mathse-rl evolve``), the ORM trainer (``mathse-rl orm train``), and the online recipe
``recipes/trl/mathse_grpo.py`` with ``recipes/trl/mathse_grpo_tiny_cpu.yaml``. One run:

1. builds the world and a tiny Qwen2.5-VL policy and judge (random weights);
2. distils **M0** on a deliberately small teacher-written seed set (the evolve loop, zero rounds);
3. **offline arms** from M0, equal optimiser steps per round: rejection sampling only (verifier
   judge, no reflection), **MathSE** (the ORM, trained here on exact step labels, judges and
   critiques; the teacher endpoint reflects through ``reflect.refiner=openai``; re-judge) and
   distillation only (as many teacher-written paths as MathSE trained on);
4. **online arms** from M0, equal steps: plain GRPO (trl's ``GRPOTrainer``) and MathSE inside the
   GRPO step (``MathSETrainer``, add mode, the same teacher endpoint reflecting), each with the
   recipe's held-out guard; optionally a short verl ``mathse`` run through ``main_ppo`` (``--verl``);
5. writes ``demo_table.md``, ``demo_results.json`` (every number, the arms' config files and
   commands), ``heldout_accuracy.png`` and an offline wandb run under ``--out``.

    mathse-rl demo --out mathse_runs/demo                     # one seed (make demo)
    mathse-rl demo --seeds 0,1,2 --out mathse_runs/demo3      # the per-seed table with mean and spread
    mathse-rl demo --quick --out /tmp/demo-quick              # tiny sizes, for tests
    mathse-rl demo train.max_steps=100                        # evolve keys for every offline arm
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mathse_rl.demo_report import ARM_TITLES, ONLINE, format_report, plot, seed_table, summarise
from mathse_rl.types import Problem

ROOT = Path(__file__).resolve().parents[1]  # the checkout: recipes/ sits beside the package
ONLINE_RECIPE = "recipes/trl/mathse_grpo.py"


def build_world_model(path, kind: str = "vlm", size: str = "S", seed: int = 0, vocab_size: int = 768) -> str:
    """A tiny model whose tokenizer also learnt the world's words, so the prompt and the
    solution words are single tokens and sequences stay short."""
    from mathse_rl.data.synthetic import vocabulary_text
    from mathse_rl.models.tiny import build_tiny

    return build_tiny(path, kind=kind, size=size, seed=seed, extra_text=vocabulary_text(),
                      vocab_size=vocab_size, tag="bars-v1")


# --------------------------------------------------------------------------- configuration


@dataclass
class DemoConfig:
    """Sizes and budgets of one demo run (``--quick`` shrinks them for tests)."""

    seed: int = 0  # seeds the world, the models and every trainer
    size: str = "S"  # tiny model size for policy and judge (XS, S, L)
    levels: tuple[int, ...] = (1,)  # difficulty levels of the world (see mathse_rl.data.synthetic)
    mc_rate: float = 0.25  # share of multiple-choice problems
    seed_problems: int = 128  # teacher-solved seed set that distils M0 (deliberately small)
    pool_problems: int = 256  # questions with answers only, mined by the rounds and the online arms
    heldout_problems: int = 200  # held-out problems for accuracy after every stage
    orm_problems: int = 160  # problems whose paths (teacher, injected errors, M0 samples) train the ORM
    orm_test_fraction: float = 0.2  # share of ORM paths held out for its Table-5 evaluation
    rounds: int = 2  # self-evolving rounds per offline arm
    samples: int = 2  # sampled paths per unsolved question per round
    temperature: float = 1.0  # sampling temperature in the rounds
    max_new_tokens: int = 96  # completion budget (the longest solution is ~90 tokens)
    batch_size: int = 32  # training batch
    gen_batch_size: int = 64  # generation batch
    lr: float = 1e-3  # policy learning rate offline (tiny models from scratch need a large one)
    m0_steps: int = 150  # optimiser steps distilling M0 (train.max_steps_m0)
    round_steps: int = 60  # optimiser steps per round's fine-tune, the same in every offline arm (train.max_steps_round)
    orm_steps: int = 150  # optimiser steps training the ORM
    judge_max_new_tokens: int = 96  # tokens the ORM may write (its JSON verdict)
    orm_lr: float = 2e-3  # ORM learning rate
    orm_template: str = "compact"  # judge prompt (mathse_rl.orm.prompts.JUDGE_TEMPLATES): compact suits a tiny judge
    orm_label_format: str = "full"  # ORM training target (mathse_rl.orm.prompts.LABEL_FORMATS)
    online_steps: int = 60  # GRPO steps of each online arm (the recipe's batch and learning rate)
    online_recipe: str = "recipes/trl/mathse_grpo_tiny_cpu.yaml"  # the online arms' recipe (relative to the checkout)
    online_args: list[str] = field(default_factory=list)  # extra recipe flags for both online arms, e.g. [--learning_rate, "5e-5"]
    verl: bool = False  # also a short verl `mathse` run through main_ppo on CPU (minutes)
    verl_steps: int = 2  # its training steps
    threads: int = 0  # torch CPU threads (0: two, or one when the machine is already busy)
    arms: tuple[str, ...] = ("rs", "mathse", "distill", "grpo", "mathse_grpo")  # which arms run
    overrides: list[str] = field(default_factory=list)  # evolve key=value for every offline arm (a user's budget)


QUICK = dict(size="XS", seed_problems=4, pool_problems=4, heldout_problems=4, orm_problems=4, rounds=1,
             samples=1, m0_steps=1, round_steps=1, orm_steps=1, batch_size=4, gen_batch_size=16,
             max_new_tokens=64, judge_max_new_tokens=12, online_steps=1,
             online_args=["--per_device_train_batch_size", "4", "--num_generations", "2"])


# --------------------------------------------------------------------------- helpers


class _ArmTracker:
    """Forwards one arm's loop metrics to the demo's tracker under ``<arm>/``; the demo
    closes the shared run itself, so ``finish`` does nothing."""

    def __init__(self, tracker: Any, arm: str):
        self.tracker, self.arm = tracker, arm

    def log(self, metrics, step=None):
        self.tracker.log({f"{self.arm}/{k}": v for k, v in metrics.items()})

    def table(self, name, columns, rows, step=None):
        self.tracker.table(f"{self.arm}/{name}", columns, rows)

    def finish(self):
        pass


def _evolve_config(cfg: DemoConfig, out: Path, model: str, arm: dict[str, Any] | None = None):
    """The evolve config of one offline arm: the demo's settings beneath the user's ``overrides``
    (so a command-line ``train.max_steps`` replaces the demo's per-stage budgets, with a warning)."""
    from mathse_rl.evolve import load_config

    base: dict[str, Any] = {
        "model": model, "output_dir": str(out), "rounds": cfg.rounds, "seed": cfg.seed, "threads": cfg.threads,
        "distill_train": False,
        "generate": {"backend": "hf", "n": cfg.samples, "temperature": cfg.temperature,
                     "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.gen_batch_size, "chunk_size": 512},
        "pool": {"max_per_question": max(2, cfg.samples)},
        "reflect": {"enabled": False},  # only the MathSE arm reflects
        "train": {"backend": "sft", "max_steps_m0": cfg.m0_steps, "max_steps_round": cfg.round_steps,
                  "max_steps_final": cfg.round_steps, "learning_rate": cfg.lr,
                  "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": 1,
                  "warmup_ratio": 0.1, "weight_decay": 0.0, "use_cpu": True, "seed": cfg.seed, "save_steps": 0},
        "eval": {"judge": "verifier", "early_stop": False, "keep_best": False},
        "tracking": {"report_to": ["none"], "progress": True},
    }
    for key, value in (arm or {}).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return load_config(defaults=base, overrides=list(cfg.overrides))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _exact_share(by_id: dict[str, Problem], rows: Sequence[dict[str, Any]]) -> tuple[int, float | None]:
    """(count, share of rows whose steps are all correct by the exact checker)."""
    from mathse_rl.data.teacher import check_steps

    rows = [r for r in rows if r.get("problem_id") in by_id]
    if not rows:
        return 0, None
    ok = sum(check_steps(by_id[r["problem_id"]], r["response"]).all_correct for r in rows)
    return len(rows), ok / len(rows)


def _strict_share(by_id: dict[str, Problem], rows: Sequence[dict[str, Any]]) -> float | None:
    """Held-out accuracy of ``rows`` (problem_id, response) with strict extraction (a stated final answer)."""
    from mathse_rl.verify import verify

    rows = [r for r in rows if r.get("problem_id") in by_id]
    if not rows:
        return None
    ok = 0
    for r in rows:
        p = by_id[r["problem_id"]]
        ok += verify(r["response"], p.gold, choices=p.choices, strict=True).correct is True
    return ok / len(rows)


def _loop_arm_stats(result: Any, by_id: dict[str, Problem], rounds: int) -> list[dict[str, Any]]:
    """Per stage (M0, round 1..K): held-out accuracy (lenient, strict) and the round's sample-level facts."""
    stage_dir = Path(result.output_dir) / "stages"
    acc = {h["stage"]: h.get("accuracy") for h in result.heldout}
    out = []
    for i in range(0, rounds + 1):
        ev = "distill.eval" if i == 0 else f"r{i}.eval"
        examples = _read_jsonl(stage_dir / ev / "examples.jsonl")
        _, chains = _exact_share(by_id, examples)
        row: dict[str, Any] = {"stage": "M0" if i == 0 else f"round {i}", "heldout_accuracy": acc.get(ev),
                               "heldout_strict_accuracy": _strict_share(by_id, examples),
                               "heldout_all_steps_correct": chains}
        if i > 0:
            rec = result.stages.get(f"r{i}.judge", {})
            n_acc, share = _exact_share(by_id, _read_jsonl(stage_dir / f"r{i}.judge" / "accepted.jsonl"))
            n_ref, ref_share = _exact_share(by_id, _read_jsonl(stage_dir / f"r{i}.reflect" / "accepted.jsonl"))
            refl = result.stages.get(f"r{i}.reflect", {})
            train = result.stages.get(f"r{i}.train", {})
            row.update({
                "generated_paths": rec.get("paths"), "accepted_paths": n_acc, "accepted_all_steps_correct": share,
                "reflections": refl.get("refined"), "reflections_accepted": n_ref,
                "reflections_all_steps_correct": ref_share,
                "train_rows": train.get("rows"), "train_rows_by_source": train.get("rows_by_source"),
                "train_steps": train.get("max_steps"),
            })
        out.append(row)
    return out


def _default_threads() -> int:
    """Two threads on an idle 2-core machine; one when other work already fills the cores.

    Measured: with the cores oversubscribed, a two-thread torch job ran a training step
    ~10x slower than a one-thread job (threads spin-waiting for each other)."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores - 1
    except OSError:
        busy = False
    return 1 if busy or cores < 2 else 2


def _recipe(path: str) -> Path:
    full = ROOT / path
    if not full.exists():
        raise SystemExit(f"the online arms run {path} from the checkout, and {full} does not exist; run the demo "
                         "from a clone of the repository, or leave the online arms out (arms: [rs, mathse, distill])")
    return full


# --------------------------------------------------------------------------- the arms


def _online_arm(cfg: DemoConfig, arm: str, out: Path, m0: str, data: dict[str, str], teacher_url: str,
                threads: int) -> tuple[list[str], subprocess.Popen]:
    """Start one online arm: the online recipe, as a user runs it, in its own process."""
    cmd = [sys.executable, str(_recipe(ONLINE_RECIPE)), "--config", str(_recipe(cfg.online_recipe)),
           "--model", m0, "--train_data", data["pool"], "--heldout_data", data["heldout"],
           "--output_dir", str(out), "--max_steps", str(cfg.online_steps), "--seed", str(cfg.seed),
           "--max_completion_length", str(cfg.max_new_tokens), "--threads", str(threads), "--report_to", "none",
           "--trainer", "grpo" if arm == "grpo" else "mathse", *cfg.online_args]
    if arm == "mathse_grpo":
        cmd += ["--reflect_refiner", "openai", "--reflect_openai",
                json.dumps({"base_url": teacher_url, "model": "bars-teacher", "max_tokens": cfg.max_new_tokens})]
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    log = open(out / "run.log", "w")
    return cmd, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))


def _online_stats(out: Path, cmd: list[str], rc: int, steps: int) -> list[dict[str, Any]]:
    """M0 and after-training rows of an online arm, from the recipe's held-out guard record."""
    guard_path = out / "heldout_guard.json"
    if rc != 0 or not guard_path.exists():
        tail = (out / "run.log").read_text()[-3000:] if (out / "run.log").exists() else ""
        raise RuntimeError(f"online arm failed (exit {rc}): {' '.join(cmd)}\n{tail}")
    g = json.loads(guard_path.read_text())
    logs = [h for h in g["log_history"] if "loss" in h]
    verified = sum(h.get("mathse/refine_verified", 0.0) for h in logs)
    refined = sum(h.get("mathse/reflected", 0.0) for h in logs)
    accepted = [h["mathse/accepted_frac"] for h in logs if "mathse/accepted_frac" in h] or \
        [h["reward"] for h in logs if "reward" in h]
    return [{"stage": "M0", "heldout_accuracy": g["before"]["accuracy"],
             "heldout_strict_accuracy": g["before"]["strict_accuracy"]},
            {"stage": f"{steps} steps", "heldout_accuracy": g["after"]["accuracy"],
             "heldout_strict_accuracy": g["after"]["strict_accuracy"],
             "verified_refinements": verified if "mathse/refine_verified" in (logs[0] if logs else {}) else None,
             "refinements": refined if "mathse/reflected" in (logs[0] if logs else {}) else None,
             "accepted_share": sum(accepted) / len(accepted) if accepted else None,
             "guard": {"delivered": g["delivered"], "warnings": g["warnings"]},
             "learning_rate": g["learning_rate"], "command": cmd}]


def _train_orm(cfg: DemoConfig, out: Path, m0: str, judge_base: str, problems: Sequence[Problem],
               ecfg: Any) -> dict[str, Any]:
    """ORM data from exact labels: teacher paths, injected errors and M0's own samples."""
    from mathse_rl.data import teacher
    from mathse_rl.evolve import get_generator
    from mathse_rl.orm import build_orm_dataset, evaluate_judge, format_table, load_judge, train_orm
    from mathse_rl.orm.data import eval_items
    from mathse_rl.prompts import build_solve_messages

    rng = random.Random(cfg.seed)
    gen = get_generator("hf", ecfg, m0)
    sampled = gen.generate([build_solve_messages(p) for p in problems], [p.images for p in problems],
                           n=2, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    rows: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}

    def add(p: Problem, response: str, origin: str) -> None:
        j = teacher.exact_judgment(p, response)
        kinds[f"{origin}/{j.status}"] = kinds.get(f"{origin}/{j.status}", 0) + 1
        rows.append({"id": p.id, "question": p.question, "response": response, "gold": p.gold,
                     "choices": list(p.choices) if p.choices else None, "images": list(p.images),
                     "correct": j.correct, "error_step": j.error_step, "error_analysis": j.error_analysis,
                     "improvement_suggestion": j.improvement_suggestion})

    for p, outs in zip(problems, sampled):
        add(p, teacher.teacher_solution(p), "teacher")
        wrong = teacher.inject_error(p, rng.choice(teacher.ERROR_KINDS), rng)
        if wrong is not None:
            add(p, wrong.response, "injected")
        for o in outs:
            add(p, o, "m0_sample")
    ds = build_orm_dataset(rows, test_fraction=cfg.orm_test_fraction, seed=cfg.seed,
                           label_format=cfg.orm_label_format, template=cfg.orm_template)
    path = train_orm(model=judge_base, output_dir=str(out / "models" / "orm"), rows=ds.train,
                     max_steps=cfg.orm_steps, learning_rate=cfg.orm_lr, warmup_ratio=0.1, weight_decay=0.0,
                     per_device_train_batch_size=cfg.batch_size, use_cpu=True, seed=cfg.seed,
                     logging_steps=max(1, cfg.orm_steps // 10), sft_kwargs={"disable_tqdm": False})
    judge = load_judge({"backend": "local", "model": path, "device": "cpu", "batch_size": cfg.gen_batch_size,
                        "max_new_tokens": cfg.judge_max_new_tokens, "prompt_template": cfg.orm_template})
    items, labels = eval_items(ds.test)
    report = evaluate_judge(judge, items, labels) if items else {"n": 0}
    report.pop("counters", None)
    return {"path": path, "paths_by_origin": kinds, "data_stats": ds.stats, "report": report,
            "table": format_table(report, title=f"ORM on held-out paths (n={report.get('n', 0)})") if items else ""}


def _distill_arm(cfg: DemoConfig, out: Path, m0: str, questions: Sequence[Problem], heldout: Sequence[Problem],
                 by_id: dict[str, Problem], m0_row: dict[str, Any], rows_per_round: list[int | None]) -> list[dict]:
    """Distillation only: each round fine-tunes on as many teacher-written paths as the reference arm
    trained on, with the same step budget, through the same trainer backend and generator."""
    from mathse_rl.data import teacher
    from mathse_rl.evolve import Judge, get_generator, get_trainer
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.evolve.config import step_budget, step_config
    from mathse_rl.evolve.evaluate import evaluate

    ecfg = _evolve_config(cfg, out, m0)
    trainer = get_trainer(ecfg.train.backend, ecfg)
    judge = Judge(step_config(ecfg, require_final_answer=ecfg.eval.require_final_answer))
    rows_d, current, gen = [dict(m0_row)], m0, None
    for i in range(1, cfg.rounds + 1):
        n_rows = min(rows_per_round[i - 1] or len(questions), len(questions))
        rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in questions[:n_rows]]
        ecfg.train.max_steps = step_budget(ecfg.train, f"r{i}")
        if gen is not None:
            gen.release()
        current = trainer.train(rows, current, str(out / "checkpoints" / f"r{i}"))
        gen = get_generator(ecfg.generate.backend, ecfg, current)
        ev = evaluate(gen, judge, heldout, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size,
                      progress=True)
        _, chains = _exact_share(by_id, ev["examples"])
        rows_d.append({"stage": f"round {i}", "heldout_accuracy": ev["accuracy"],
                       "heldout_strict_accuracy": _strict_share(by_id, ev["examples"]),
                       "heldout_all_steps_correct": chains, "train_rows": len(rows), "teacher_paths": len(rows),
                       "train_steps": ecfg.train.max_steps})
    return rows_d


# --------------------------------------------------------------------------- the run


def run_demo(cfg: DemoConfig, out_dir: str | Path, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo for one seed; returns every number (also written to ``demo_results.json``)."""
    import torch
    from tqdm.auto import tqdm

    from mathse_rl.data import synthetic, teacher
    from mathse_rl.data.teacher_server import MODEL_NAME, serve_teacher
    from mathse_rl.evolve import run_evolve
    from mathse_rl.integrations.trl.backends import load_processing
    from mathse_rl.tracking import Tracker

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [a for a in cfg.arms if a not in ARM_TITLES]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {list(ARM_TITLES)}")
    cfg.threads = cfg.threads or _default_threads()
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    bar = tqdm(total=4 + len(cfg.arms), desc=f"demo seed {cfg.seed}", position=0)

    def done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        bar.set_postfix_str(f"{name} {timings[name]:.0f}s")
        bar.update(1)

    tracker = Tracker(["wandb"], project="mathse-rl-demo", run_name=f"demo-seed{cfg.seed}",
                      config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                      dir=str(out))

    # 1. the world, the two tiny models, and the teacher's endpoint
    t0 = time.perf_counter()
    world = synthetic.WorldConfig(levels=tuple(cfg.levels), mc_rate=cfg.mc_rate)
    seed_set = synthetic.make_split("seed", cfg.seed_problems, seed=cfg.seed, cfg=world)
    pool_set = synthetic.make_split("train", cfg.pool_problems, seed=cfg.seed, cfg=world)
    heldout = synthetic.make_split("heldout", cfg.heldout_problems, seed=cfg.seed, cfg=world)
    orm_set = synthetic.make_split("orm", cfg.orm_problems, seed=cfg.seed, cfg=world)
    by_id = {p.id: p for p in seed_set + pool_set + heldout + orm_set}
    policy_base = build_world_model(out / "models" / "policy-base", "vlm", cfg.size, cfg.seed)
    judge_base = build_world_model(out / "models" / "judge-base", "vlm", cfg.size, cfg.seed + 1)
    # The teacher counts tokens with the policy's tokenizer, so its max_tokens means what the policy's does.
    server = serve_teacher(tokenizer=getattr(load_processing(policy_base), "tokenizer", None))
    teacher_url = server.url + "/v1"
    teacher_openai = {"base_url": teacher_url, "model": MODEL_NAME, "max_tokens": cfg.max_new_tokens,
                      "concurrency": 8}
    done("build", t0)
    results: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, str] = {}
    try:
        # 2. M0: the evolve loop's distillation stage on the small teacher-written seed set
        t0 = time.perf_counter()
        m0_cfg = _evolve_config(cfg, out / "m0", policy_base, {"rounds": 0, "distill_train": True})
        m0_res = run_evolve(m0_cfg, seed_set, heldout, seed_attempts=[teacher.teacher_attempt(p) for p in seed_set],
                            tracker=_ArmTracker(tracker, "m0"))
        m0 = m0_res.last_checkpoint
        m0_row = _loop_arm_stats(m0_res, by_id, 0)[0]
        configs["m0"] = str(out / "m0" / "config.yaml")
        done("distill M0", t0)

        # 3. online arms start now, in their own processes, one thread each; the offline arms run meanwhile
        online: dict[str, tuple[list[str], subprocess.Popen]] = {}
        if any(a in cfg.arms for a in ONLINE):
            data = {"pool": synthetic.write_problems(out / "data" / "pool.jsonl", pool_set),
                    "heldout": synthetic.write_problems(out / "data" / "heldout.jsonl", heldout)}
            for arm in ONLINE:
                if arm in cfg.arms:
                    online[arm] = _online_arm(cfg, arm, out / "online" / arm, m0, data, teacher_url, threads=1)

        def threads_now() -> int:
            """One thread while the online arms' processes share the cores, all of them once they are done."""
            n = 1 if any(proc.poll() is None for _, proc in online.values()) else cfg.threads
            torch.set_num_threads(n)
            return n

        def loop_arm(arm: str, fields: dict[str, Any]) -> None:
            t0 = time.perf_counter()
            ecfg = _evolve_config(cfg, out / "arms" / arm, m0, fields)
            ecfg.threads = threads_now()
            res = run_evolve(ecfg, seed_set + pool_set, heldout, seed_attempts=[teacher.teacher_attempt(p)
                                                                                  for p in seed_set],
                             tracker=_ArmTracker(tracker, arm))
            results[arm] = _loop_arm_stats(res, by_id, cfg.rounds)
            configs[arm] = str(Path(res.output_dir) / "config.yaml")
            done(f"arm {arm}", t0)

        # 4. rejection sampling only: verifier judge, no reflection
        if "rs" in cfg.arms:
            loop_arm("rs", {"judge": "verifier", "reflect": {"enabled": False}})

        # 5. the ORM: paths with exact step labels -> SFT with trl -> Table-5 evaluation
        t0 = time.perf_counter()
        threads_now()
        orm_info = _train_orm(cfg, out, m0, judge_base, orm_set, m0_cfg) if "mathse" in cfg.arms else {}
        done("ORM", t0)

        # 6. MathSE: ORM judge (verifier-gated), ORM critiques, the teacher endpoint reflects, re-judge, fine-tune
        if "mathse" in cfg.arms:
            judge_opts = {"backend": "local", "model": orm_info["path"], "device": "cpu",
                          "batch_size": cfg.gen_batch_size, "max_new_tokens": cfg.judge_max_new_tokens,
                          "fallback": "verifier", "prompt_template": cfg.orm_template}
            loop_arm("mathse", {"judge": "orm_gated", "judge_options": judge_opts, "critic": judge_opts,
                                "reflect": {"enabled": True, "when": "every_round", "max_per_question": 1,
                                            "refiner": "openai", "openai": teacher_openai}})

        # 7. distillation only: the same steps on as many teacher-written paths as the reference arm trained on
        if "distill" in cfg.arms:
            t0 = time.perf_counter()
            ref = next((a for a in ("mathse", "rs") if a in results), None)
            per_round = [results[ref][i].get("train_rows") if ref else len(seed_set) + i * len(pool_set) // cfg.rounds
                         for i in range(1, cfg.rounds + 1)]
            threads_now()
            results["distill"] = _distill_arm(cfg, out / "arms" / "distill", m0, seed_set + pool_set, heldout, by_id,
                                              m0_row, per_round)
            done("arm distill", t0)

        # 8. the online arms' results (their processes have been running beside the offline arms)
        for arm, (cmd, proc) in online.items():
            t0 = time.perf_counter()
            rc = proc.wait()
            results[arm] = _online_stats(out / "online" / arm, cmd, rc, cfg.online_steps)
            configs[arm] = " ".join(cmd)
            done(f"arm {arm} (waited)", t0)
        verl = _run_verl(cfg, out / "verl", m0, pool_set) if cfg.verl else None
    finally:
        teacher_requests = server.app.state.teacher.requests
        server.stop()

    # 9. report: table, JSON, plot, wandb
    t0 = time.perf_counter()
    summary = summarise(results)
    table = format_report(cfg, results, summary, orm_info, verl)
    printer(table)
    (out / "demo_table.md").write_text(table + "\n")
    png = plot(cfg, results, out / "heldout_accuracy.png")
    total = round(time.perf_counter() - t_start, 1)
    payload = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "seeds": {"world": cfg.seed, "policy_init": cfg.seed, "judge_init": cfg.seed + 1, "trainer": cfg.seed},
        "splits": {"seed": len(seed_set), "pool": len(pool_set), "heldout": len(heldout), "orm": len(orm_set)},
        "arms": results, "summary": summary, "orm": {k: v for k, v in orm_info.items() if k != "path"},
        "teacher": {"endpoint": teacher_url, "model": MODEL_NAME, "requests": teacher_requests},
        "arm_configs": configs, "verl": verl,
        "timings_s": timings, "wall_time_s": total, "torch_threads": cfg.threads,
        "load_average": os.getloadavg(),
        "artefacts": {"table": "demo_table.md", "plot": png.name, "wandb_dir": "wandb"},
    }
    (out / "demo_results.json").write_text(json.dumps(payload, indent=1, default=str))
    tracker.table("demo/heldout_accuracy", ["arm", "stage", "lenient", "strict"],
                  [[a, r["stage"], r.get("heldout_accuracy"), r.get("heldout_strict_accuracy")]
                   for a, rows in results.items() for r in rows])
    if tracker.run is not None:
        import wandb

        tracker.run.log({"demo/plot": wandb.Image(str(png))})
        tracker.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    tracker.finish()
    done("report", t0)
    bar.close()
    printer(f"wall time {total:.0f}s; artefacts in {out}")
    return payload


def _run_verl(cfg: DemoConfig, out: Path, m0: str, problems: Sequence[Problem]) -> dict[str, Any]:
    """A short verl ``mathse`` run (MathSE-RFT estimator and loss, the reflect agent loop, the verifier
    judging) through verl's own ``main_ppo`` on CPU, from M0 on the pool (the command line of
    ``mathse_rl.integrations.verl.cpu.debug``, which ``scripts/verl_cpu_debug.sh`` runs)."""
    from mathse_rl.data.verl_parquet import write_verl_parquet
    from mathse_rl.integrations.verl.cpu.debug import main_ppo_command

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_verl_parquet(problems, out / "train.parquet")
    cmd = main_ppo_command(m0, str(out / "train.parquet"), str(out), steps=cfg.verl_steps, batch_size=2,
                           group_size=2, response_length=cfg.max_new_tokens, prompt_length=192, extra=[
                               "algorithm.adv_estimator=mathse_rft",
                               "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft",
                               "trainer.v1.trainer_mode=mathse",
                               "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect",
                               "+mathse.judge=verifier", "+mathse.reflect.attempts=1",
                               "reward.reward_manager.name=mathse", "+reward.reward_kwargs.reward=verifier",
                               f"actor_rollout_ref.actor.optim.lr={cfg.lr}"])
    env = {**os.environ, "VERL_PLATFORM": "cpu", "VERL_FILE_LOGGER_PATH": str(out / "metrics.jsonl"),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    metrics = _read_jsonl(out / "metrics.jsonl")
    keep = ("mathse/", "critic/score/mean", "response_length/mean")
    steps = [{k: v for k, v in (m.get("data") or m).items() if k.startswith(keep)} | {"step": m.get("step")}
             for m in metrics]
    return {"command": cmd, "exit_status": rc, "seconds": round(time.perf_counter() - t0, 1), "steps": steps}


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (for tests)")
    parser.add_argument("--out", default="mathse_runs/demo", help="output directory (table, JSON, plot, wandb)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the models and the trainers")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds: one run per seed under --out/seed-<s>, then the per-seed table "
                             "(demo_seeds.md) with mean and spread")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 2, or 1 when the machine is already busy)")
    parser.add_argument("--rounds", type=int, default=None, help="self-evolving rounds per offline arm")
    parser.add_argument("--online-steps", type=int, default=None, help="GRPO steps of each online arm")
    parser.add_argument("--arms", default=None, help=f"comma-separated arms (default all: {','.join(ARM_TITLES)})")
    parser.add_argument("--verl", action="store_true", help="also a short verl mathse run through main_ppo on CPU")
    parser.add_argument("--config", default=None,
                        help="YAML of DemoConfig fields (see recipes/demo/); flags above override it")
    parser.add_argument("overrides", nargs="*",
                        help="evolve key=value for every offline arm, e.g. train.max_steps=100 (a general key given "
                             "here replaces the demo's per-stage budgets, with a warning)")


def config_from_args(args) -> DemoConfig:
    fields: dict[str, Any] = dict(QUICK) if args.quick else {}
    if getattr(args, "config", None):
        from omegaconf import OmegaConf

        if not Path(args.config).exists():
            raise SystemExit(f"demo config not found: {args.config}")
        merged = OmegaConf.merge(OmegaConf.structured(DemoConfig(**fields)), OmegaConf.load(args.config))
        fields = OmegaConf.to_container(merged)  # unknown keys fail in the merge above
        fields["levels"] = tuple(fields["levels"])
        fields["arms"] = tuple(fields["arms"])
    fields["seed"] = args.seed
    for name, key in (("threads", "threads"), ("rounds", "rounds"), ("online_steps", "online_steps")):
        if getattr(args, name, None) is not None:
            fields[key] = getattr(args, name)
    if getattr(args, "arms", None):
        fields["arms"] = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    if getattr(args, "verl", False):
        fields["verl"] = True
    overrides = list(getattr(args, "overrides", None) or [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"overrides must be key=value, got {bad}")
    fields["overrides"] = [*fields.get("overrides", []), *overrides]
    cfg = DemoConfig(**fields)
    _evolve_config(cfg, Path("/nonexistent"), "m")  # a bad override fails here, before any work
    return cfg


def _fresh(out: Path) -> None:
    """A demo run is always fresh (its numbers come from this run only), but only a previous demo's
    folder is ever deleted."""
    import shutil

    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise SystemExit(f"--out {out} exists and is not a demo folder; choose another path")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("mathse-rl demo output\n")


def run(args) -> int:
    from mathse_rl.evolve.config import ConfigError

    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        raise SystemExit(f"mathse-rl demo: {exc}") from None
    out = Path(args.out)
    _fresh(out)
    if not getattr(args, "seeds", None):
        run_demo(cfg, out)
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    payloads = []
    for s in seeds:
        cfg_s = DemoConfig(**{**vars(cfg), "seed": s})
        payloads.append(run_demo(cfg_s, out / f"seed-{s}"))
        text, data = seed_table(payloads)  # rewritten after every seed: a partial table survives a kill
        (out / "demo_seeds.md").write_text(text + "\n")
        (out / "demo_seeds.json").write_text(json.dumps(data, indent=1))
    print(text)
    return 0


_MARKER = ".mathse_demo"
