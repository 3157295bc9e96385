"""``mathse-rl demo`` (what ``make demo`` runs): the whole MathSE method on a CPU, in minutes.

The world is :mod:`mathse_rl.data.synthetic` (bar charts whose heights are only in the
image); the teacher, the error injector and the exact step checker are
:mod:`mathse_rl.data.teacher`. One run:

1. builds a tiny Qwen2.5-VL policy and a tiny Qwen2.5-VL judge locally (random weights);
2. distils **M0** on a deliberately small teacher-written seed set;
3. runs **rejection sampling only** through the evolve loop (verifier judge, no reflection);
4. builds ORM data with exact labels (teacher paths, injected errors, M0's own samples,
   each labelled by the step checker), trains the **ORM** with trl's ``SFTTrainer`` and
   evaluates it in the paper's Table-5 layout (the tiny judge reads the compact judge
   prompt, whose reference answer sits right before the verdict);
5. runs **MathSE** through the evolve loop: verifier-gated ORM judge, ORM critiques, the
   teacher reflecting on each wrong path from the critique, re-judge, fine-tune;
6. runs **distillation only** with as many teacher-written paths as MathSE trained on;
7. prints the stage-by-stage table and writes ``demo_table.md``, ``demo_results.json``,
   ``heldout_accuracy.png`` and an offline wandb run under ``--out``.

Every arm starts from the same M0 and gets the same optimiser steps per round; the two
loop arms sample the same number of paths per unsolved question. ``--quick`` shrinks
everything (XS models, a handful of problems, trl's ``SFTTrainer``) for tests.

    mathse-rl demo --out mathse_runs/demo            # the full run
    mathse-rl demo --quick --out /tmp/demo-quick     # seconds to a few minutes
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mathse_rl.types import Problem


# --------------------------------------------------------------------------- torch helpers


def build_world_model(path, kind: str = "vlm", size: str = "S", seed: int = 0, vocab_size: int = 768) -> str:
    """A tiny model whose tokenizer also learnt the world's words, so the prompt and the
    solution words are single tokens and sequences stay short."""
    from mathse_rl.data.synthetic import vocabulary_text
    from mathse_rl.models.tiny import build_tiny

    return build_tiny(path, kind=kind, size=size, seed=seed, extra_text=vocabulary_text(),
                      vocab_size=vocab_size, tag="bars-v1")


class Encoder:
    """Turns problems (+ optional solutions) into model inputs, caching each prompt's encoding."""

    def __init__(self, processor):
        from mathse_rl.models.tiny import tokenizer_of

        self.processor = processor
        self.tok = tokenizer_of(processor)
        self._cache: dict[str, dict[str, Any]] = {}
        self.end_ids = self.tok("<|im_end|>", add_special_tokens=False)["input_ids"]

    def prompt(self, problem: Problem) -> dict[str, Any]:
        from mathse_rl.prompts import build_solve_messages

        return self.encode_prompt(problem.id, build_solve_messages(problem), problem.images)

    def encode_prompt(self, key: str, messages: list[dict[str, Any]], images: Sequence[Any]) -> dict[str, Any]:
        hit = self._cache.get(key)
        if hit is None:
            from PIL import Image

            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            pil = [im if isinstance(im, Image.Image) else Image.open(str(im)).convert("RGB") for im in images]
            enc = self.processor(text=[text], images=pil, return_tensors="pt")
            hit = {"ids": enc["input_ids"][0].tolist(), "pixel_values": enc["pixel_values"],
                   "grid": enc["image_grid_thw"]}
            self._cache[key] = hit
        return hit

    def train_batch(self, pairs: Sequence[tuple[Any, str]]) -> dict[str, Any]:
        """Right-padded inputs with the loss on the solution tokens only.

        A pair is (Problem, response) or (TrainRow, response)."""
        import torch

        rows, labels, pix, grids = [], [], [], []
        for item, response in pairs:
            if isinstance(item, Problem):
                p = self.prompt(item)
            else:  # an evolve TrainRow: its own messages and images
                p = self.encode_prompt(item.problem_id, item.messages, item.images)
            comp = self.tok(response, add_special_tokens=False)["input_ids"] + self.end_ids
            rows.append(p["ids"] + comp)
            labels.append([-100] * len(p["ids"]) + comp)
            pix.append(p["pixel_values"])
            grids.append(p["grid"])
        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, l) in enumerate(zip(rows, labels)):
            ids[i, : len(r)] = torch.tensor(r)
            lab[i, : len(l)] = torch.tensor(l)
            att[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": att, "labels": lab,
                "pixel_values": torch.cat(pix), "image_grid_thw": torch.cat(grids)}

    def gen_batch(self, problems: Sequence[Problem]) -> dict[str, Any]:
        """Left-padded prompts for generation."""
        import torch

        ps = [self.prompt(p) for p in problems]
        width = max(len(p["ids"]) for p in ps)
        pad = self.tok.pad_token_id
        ids = torch.full((len(ps), width), pad, dtype=torch.long)
        att = torch.zeros((len(ps), width), dtype=torch.long)
        for i, p in enumerate(ps):
            ids[i, width - len(p["ids"]):] = torch.tensor(p["ids"])
            att[i, width - len(p["ids"]):] = 1
        return {"input_ids": ids, "attention_mask": att,
                "pixel_values": torch.cat([p["pixel_values"] for p in ps]),
                "image_grid_thw": torch.cat([p["grid"] for p in ps])}


def train_steps(model, encoder: Encoder, pairs: Sequence[tuple[Any, str]], steps: int,
                batch_size: int = 32, lr: float = 1e-3, seed: int = 0, warmup: int = 10,
                progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Plain AdamW next-token training on ``pairs`` for ``steps`` steps, linear warm-up then
    cosine decay to zero (decay at the end of each phase tames seed-to-seed noise)."""
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
    model.train()
    order: list[int] = []
    losses = []
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order.extend(fresh)
        idx, order = order[:batch_size], order[batch_size:]
        batch = encoder.train_batch([pairs[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress:
            progress(step, losses[-1])
    model.eval()
    return losses


def generate(model, encoder: Encoder, problems: Sequence[Problem], n: int = 1, temperature: float = 0.0,
             batch_size: int = 64, max_new_tokens: int = 72, seed: int = 0) -> list[list[str]]:
    """``n`` responses per problem (greedy when ``temperature`` is 0)."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = [[] for _ in problems]
    flat = [(i, p) for i, p in enumerate(problems) for _ in range(n)]
    model.eval()
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s: s + batch_size]
            batch = encoder.gen_batch([p for _, p in chunk])
            kw: dict[str, Any] = {"do_sample": temperature > 0}
            if temperature > 0:
                kw.update(temperature=temperature, top_k=0, top_p=1.0)
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, **kw)
            texts = encoder.tok.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for (i, _), t in zip(chunk, texts):
                out[i].append(t.strip())
    return out


# --------------------------------------------------------------------------- loop components


class TorchSFTTrainer:
    """Trainer backend ``torch`` for the evolve loop: the same next-token loss on the
    completion as trl's ``SFTTrainer``, in a plain PyTorch loop (cached prompt encodings,
    no dataset/collator/checkpoint machinery), for the full demo's time budget on CPU.

    Reads ``config.train``: ``max_steps``, ``per_device_train_batch_size``,
    ``learning_rate``, ``warmup_ratio``, ``seed``.
    """

    def __init__(self, config: Any):
        self.cfg = config.train
        self.encoders: dict[str, Encoder] = {}

    def train(self, rows, init_model: str, output_dir: str) -> str:
        from mathse_rl.integrations.trl.backends import save_policy
        from mathse_rl.models.tiny import load_tiny

        model, proc = load_tiny(init_model)
        tok_key = str(Path(init_model).resolve().parent)
        enc = self.encoders.get(tok_key) or Encoder(proc)
        self.encoders[tok_key] = enc
        steps = max(1, int(self.cfg.max_steps))
        train_steps(model, enc, [(r, r.response) for r in rows], steps,
                    batch_size=self.cfg.per_device_train_batch_size, lr=self.cfg.learning_rate,
                    seed=self.cfg.seed, warmup=max(1, int(self.cfg.warmup_ratio * steps)),
                    progress=_bar(steps, f"train {Path(output_dir).name}"))
        return save_policy(model, proc, output_dir)


def _bar(total: int, desc: str):
    """A tqdm progress callback ``(step, loss)`` that closes itself on the last step."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False)

    def update(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if step + 1 >= total:
            bar.close()

    return update


class TeacherRefiner:
    """The reflection refiner of the demo: the programmatic teacher reads the wrong path and
    the judge's critique, keeps the steps before the named error step and redoes the rest
    (:func:`mathse_rl.data.teacher.teacher_reflect`). A critique that names the wrong step
    gives a wrong refinement, which the re-judge then has to catch."""

    def refine(self, problems, wrong, critiques, *, n, temperature, max_new_tokens, template):
        from mathse_rl.data.teacher import teacher_reflect

        return [[teacher_reflect(p, w, c)] for p, w, c in zip(problems, wrong, critiques)]


# --------------------------------------------------------------------------- configuration


@dataclass
class DemoConfig:
    """Sizes and budgets of one demo run (``--quick`` shrinks them for tests)."""

    seed: int = 0  # seeds the world, the models and every trainer
    size: str = "S"  # tiny model size for policy and judge (XS, S, L)
    levels: tuple[int, ...] = (1,)  # difficulty levels of the world (see mathse_rl.data.synthetic)
    mc_rate: float = 0.25  # share of multiple-choice problems
    seed_problems: int = 128  # teacher-solved seed set that distils M0 (deliberately small)
    pool_problems: int = 256  # questions with answers only, mined by the rounds
    heldout_problems: int = 200  # held-out problems for accuracy after every stage
    orm_problems: int = 160  # problems whose paths (teacher, injected errors, M0 samples) train the ORM
    orm_test_fraction: float = 0.2  # share of ORM paths held out for its Table-5 evaluation
    rounds: int = 2  # self-evolving rounds per arm
    samples: int = 2  # sampled paths per unsolved question per round
    temperature: float = 1.0  # sampling temperature in the rounds
    max_new_tokens: int = 96  # completion budget (the longest solution is ~90 tokens)
    batch_size: int = 32  # training batch
    gen_batch_size: int = 64  # generation batch
    lr: float = 1e-3  # policy learning rate (tiny models from scratch need a large one)
    m0_steps: int = 150  # optimiser steps distilling M0
    round_steps: int = 60  # optimiser steps per round's fine-tune (same in every arm)
    orm_steps: int = 150  # optimiser steps training the ORM
    judge_max_new_tokens: int = 96  # tokens the ORM may write (its JSON verdict)
    orm_lr: float = 2e-3  # ORM learning rate
    orm_template: str = "compact"  # judge prompt (mathse_rl.orm.prompts.JUDGE_TEMPLATES): compact suits a tiny judge
    orm_label_format: str = "full"  # ORM training target (mathse_rl.orm.prompts.LABEL_FORMATS)
    trainer: str = "torch"  # trainer backend of the rounds: torch (plain loop) | sft (trl SFTTrainer)
    threads: int = 0  # torch CPU threads (0: two, or one when the machine is already busy)
    arms: tuple[str, ...] = ("rs", "mathse", "distill")  # which arms run


QUICK = dict(size="XS", seed_problems=4, pool_problems=4, heldout_problems=4, orm_problems=4, rounds=1,
             samples=1, m0_steps=1, round_steps=1, orm_steps=1, batch_size=4, gen_batch_size=16,
             max_new_tokens=16, judge_max_new_tokens=12, trainer="sft")

ARM_TITLES = {
    "distill": "distillation only (more teacher data)",
    "rs": "rejection sampling only (verifier, no reflection)",
    "mathse": "MathSE (ORM judge + critique + reflection)",
}


# --------------------------------------------------------------------------- the run


class _ArmTracker:
    """Forwards one arm's loop metrics to the demo's tracker under ``<arm>/``; the demo
    closes the shared run itself, so ``finish`` does nothing."""

    def __init__(self, tracker: Any, arm: str):
        self.tracker, self.arm = tracker, arm
        self.history: list[dict[str, Any]] = []

    def log(self, metrics, step=None):
        self.history.append({"step": step, **metrics})
        self.tracker.log({f"{self.arm}/{k}": v for k, v in metrics.items()})

    def table(self, name, columns, rows, step=None):
        self.tracker.table(f"{self.arm}/{name}", columns, rows)

    def finish(self):
        pass


def _evolve_config(cfg: DemoConfig, out: Path, model: str, steps: int, **fields: Any):
    from mathse_rl.evolve import load_config

    base = {
        "model": model, "output_dir": str(out), "rounds": cfg.rounds, "seed": cfg.seed,
        "distill_train": False,
        "generate": {"backend": "hf", "n": cfg.samples, "temperature": cfg.temperature,
                     "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.gen_batch_size, "chunk_size": 512},
        "pool": {"max_per_question": max(2, cfg.samples)},
        "train": {"backend": cfg.trainer, "max_steps": steps, "learning_rate": cfg.lr,
                  "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": 1,
                  "warmup_ratio": 0.1, "weight_decay": 0.0, "use_cpu": True, "seed": cfg.seed},
        "eval": {"judge": "verifier", "early_stop": False, "keep_best": False},
        "tracking": {"report_to": ["none"], "progress": True},
    }
    return load_config(defaults=base, **fields)


def register_demo_trainer() -> None:
    """Register :class:`TorchSFTTrainer` in the evolve loop's trainer registry as ``torch``."""
    from mathse_rl.evolve import register_trainer

    register_trainer("torch", lambda config: TorchSFTTrainer(config))


def _trainer(cfg: DemoConfig, ecfg: Any):
    from mathse_rl.evolve import get_trainer

    register_demo_trainer()
    return get_trainer(cfg.trainer, ecfg)


def _exact_share(by_id: dict[str, Problem], rows: Sequence[dict[str, Any]]) -> tuple[int, float | None]:
    """(count, share of rows whose steps are all correct by the exact checker)."""
    from mathse_rl.data.teacher import check_steps

    rows = [r for r in rows if r.get("problem_id") in by_id]
    if not rows:
        return 0, None
    ok = sum(check_steps(by_id[r["problem_id"]], r["response"]).all_correct for r in rows)
    return len(rows), ok / len(rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _loop_arm_stats(result: Any, by_id: dict[str, Problem], rounds: int) -> list[dict[str, Any]]:
    """Per stage (M0, round 1..K): held-out accuracy and the sample-level facts of the round."""
    stage_dir = Path(result.output_dir) / "stages"
    acc = {h["stage"]: h.get("accuracy") for h in result.heldout}
    out = []
    for i in range(0, rounds + 1):
        ev = "distill.eval" if i == 0 else f"r{i}.eval"
        _, chains = _exact_share(by_id, [{**r, "response": r["response"]} for r in _read_jsonl(stage_dir / ev / "examples.jsonl")])
        row: dict[str, Any] = {"stage": "M0" if i == 0 else f"round {i}", "heldout_accuracy": acc.get(ev),
                               "heldout_all_steps_correct": chains}
        if i > 0:
            rec = result.stages.get(f"r{i}.judge", {})
            n_acc, share = _exact_share(by_id, _read_jsonl(stage_dir / f"r{i}.judge" / "accepted.jsonl"))
            n_ref, ref_share = _exact_share(by_id, _read_jsonl(stage_dir / f"r{i}.reflect" / "accepted.jsonl"))
            refl = result.stages.get(f"r{i}.reflect", {})
            train = result.stages.get(f"r{i}.train", {})
            row.update({
                "generated_paths": rec.get("paths"), "accepted_paths": n_acc,
                "accepted_all_steps_correct": share,
                "reflections": refl.get("refined"), "reflections_accepted": n_ref,
                "reflections_all_steps_correct": ref_share,
                "train_rows": train.get("rows"), "train_rows_by_source": train.get("rows_by_source"),
            })
        out.append(row)
    return out


def _default_threads() -> int:
    """Two threads on an idle 2-core machine; one when other work already fills the cores.

    Measured: with the cores oversubscribed, a two-thread torch job ran a training step
    ~10x slower than a one-thread job (threads spin-waiting for each other)."""
    import os

    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores - 1
    except OSError:
        busy = False
    return 1 if busy or cores < 2 else 2


def run_demo(cfg: DemoConfig, out_dir: str | Path, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo; returns every number (also written to ``demo_results.json``)."""
    import json
    import os

    import torch
    from tqdm.auto import tqdm

    from mathse_rl.data import synthetic, teacher
    from mathse_rl.evolve import Critic, Judge, get_generator, run_evolve
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.evolve.evaluate import evaluate
    from mathse_rl.prompts import build_solve_messages
    from mathse_rl.tracking import Tracker

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.threads = cfg.threads or _default_threads()
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    n_stages = 3 + len(cfg.arms) + 1
    bar = tqdm(total=n_stages, desc="demo", position=0)

    def done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        bar.set_postfix_str(f"{name} {timings[name]:.0f}s")
        bar.update(1)

    tracker = Tracker(["wandb"], project="mathse-rl-demo", run_name=f"demo-seed{cfg.seed}",
                      config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                      dir=str(out))

    # 1. the world and the two tiny models
    t0 = time.perf_counter()
    world = synthetic.WorldConfig(levels=tuple(cfg.levels), mc_rate=cfg.mc_rate)
    seed_set = synthetic.make_split("seed", cfg.seed_problems, seed=cfg.seed, cfg=world)
    pool_set = synthetic.make_split("train", cfg.pool_problems, seed=cfg.seed, cfg=world)
    heldout = synthetic.make_split("heldout", cfg.heldout_problems, seed=cfg.seed, cfg=world)
    orm_set = synthetic.make_split("orm", cfg.orm_problems, seed=cfg.seed, cfg=world)
    by_id = {p.id: p for p in seed_set + pool_set + heldout + orm_set}
    policy_base = build_world_model(out / "models" / "policy-base", "vlm", cfg.size, cfg.seed)
    judge_base = build_world_model(out / "models" / "judge-base", "vlm", cfg.size, cfg.seed + 1)
    done("build", t0)

    # 2. M0: distil the policy on the small teacher-written seed set
    t0 = time.perf_counter()
    m0_cfg = _evolve_config(cfg, out / "m0", policy_base, cfg.m0_steps)
    seed_rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in seed_set]
    m0 = _trainer(cfg, m0_cfg).train(seed_rows, policy_base, str(out / "models" / "m0"))
    done("distill M0", t0)

    seed_attempts = [teacher.teacher_attempt(p) for p in seed_set]
    results: dict[str, Any] = {}
    arm_results: dict[str, Any] = {}

    def loop_arm(arm: str, **kw: Any) -> None:
        t0 = time.perf_counter()
        ecfg = _evolve_config(cfg, out / "arms" / arm, m0, cfg.round_steps, **kw.pop("fields", {}))
        res = run_evolve(ecfg, seed_set + pool_set, heldout, seed_attempts=seed_attempts,
                         trainer=_trainer(cfg, ecfg), tracker=_ArmTracker(tracker, arm), **kw)
        arm_results[arm] = res
        results[arm] = _loop_arm_stats(res, by_id, cfg.rounds)
        done(f"arm {arm}", t0)

    # 3. rejection sampling only: verifier judge, no reflection
    if "rs" in cfg.arms:
        loop_arm("rs", fields={"judge": "verifier", "reflect": {"enabled": False}})

    # 4. the ORM: paths with exact step labels -> SFT with trl -> Table-5 evaluation
    t0 = time.perf_counter()
    orm_info = _train_orm(cfg, out, m0, judge_base, orm_set, m0_cfg)
    done("ORM", t0)

    # 5. MathSE: ORM judge (verifier-gated), ORM critiques, reflection, re-judge, fine-tune
    if "mathse" in cfg.arms:
        judge_opts = {"backend": "local", "model": orm_info["path"], "device": "cpu", "batch_size": cfg.gen_batch_size,
                      "max_new_tokens": cfg.judge_max_new_tokens, "fallback": "verifier",
                      "prompt_template": cfg.orm_template}
        loop_arm("mathse", fields={"judge": "orm_gated", "critic": judge_opts,
                                   "reflect": {"enabled": True, "when": "every_round", "max_per_question": 1}},
                 judge=Judge("orm_gated", 0.5, **judge_opts), critic=Critic(judge_opts), refiner=TeacherRefiner())

    # 6. distillation only: the same training steps on as many teacher-written paths
    if "distill" in cfg.arms:
        t0 = time.perf_counter()
        ref_arm = next((a for a in ("mathse", "rs") if a in results), None)
        d_cfg = _evolve_config(cfg, out / "arms" / "distill", m0, cfg.round_steps)
        trainer = _trainer(cfg, d_cfg)
        gen = get_generator("hf", d_cfg, m0)
        questions = seed_set + pool_set
        rows_d = [{"stage": "M0", "heldout_accuracy": results[ref_arm][0]["heldout_accuracy"] if ref_arm else None,
                   "heldout_all_steps_correct": results[ref_arm][0]["heldout_all_steps_correct"] if ref_arm else None}]
        current = m0
        for i in range(1, cfg.rounds + 1):
            n_rows = (results[ref_arm][i].get("train_rows") if ref_arm else None) or \
                len(seed_set) + i * len(pool_set) // cfg.rounds
            n_rows = min(n_rows, len(questions))
            rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in questions[:n_rows]]
            current = trainer.train(rows, current, str(out / "arms" / "distill" / "checkpoints" / f"d{i}"))
            gen.load(current)
            ev = evaluate(gen, Judge("verifier"), heldout, max_new_tokens=cfg.max_new_tokens,
                          batch_size=cfg.gen_batch_size, progress=True)
            _, chains = _exact_share(by_id, ev["examples"])
            rows_d.append({"stage": f"round {i}", "heldout_accuracy": ev["accuracy"],
                           "heldout_all_steps_correct": chains, "train_rows": len(rows),
                           "teacher_paths": len(rows)})
            tracker.log({"distill/heldout_accuracy": ev["accuracy"], "distill/round": i})
        results["distill"] = rows_d
        done("arm distill", t0)

    # 7. report: table, JSON, plot, wandb
    t0 = time.perf_counter()
    summary = _summarise(cfg, results)
    table = format_report(cfg, results, summary, orm_info)
    printer(table)
    (out / "demo_table.md").write_text(table + "\n")
    png = _plot(cfg, results, out / "heldout_accuracy.png")
    total = round(time.perf_counter() - t_start, 1)
    payload = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "seeds": {"world": cfg.seed, "policy_init": cfg.seed, "judge_init": cfg.seed + 1, "trainer": cfg.seed},
        "splits": {"seed": len(seed_set), "pool": len(pool_set), "heldout": len(heldout), "orm": len(orm_set)},
        "arms": results, "summary": summary, "orm": {k: v for k, v in orm_info.items() if k != "path"},
        "timings_s": timings, "wall_time_s": total, "torch_threads": cfg.threads,
        "artefacts": {"table": "demo_table.md", "plot": png.name, "wandb_dir": "wandb"},
    }
    (out / "demo_results.json").write_text(json.dumps(payload, indent=1, default=str))
    tracker.table("demo/heldout_accuracy", ["stage", *[ARM_TITLES[a] for a in cfg.arms if a in results]],
                  [[row["stage"], *[results[a][i]["heldout_accuracy"] for a in cfg.arms if a in results]]
                   for i, row in enumerate(results[next(iter(results))])])
    if tracker.run is not None:
        import wandb

        tracker.run.log({"demo/plot": wandb.Image(str(png))})
        tracker.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    tracker.finish()
    done("report", t0)
    bar.close()
    printer(f"wall time {total:.0f}s; artefacts in {out}")
    payload["wall_time_s"] = total
    return payload


def _train_orm(cfg: DemoConfig, out: Path, m0: str, judge_base: str, problems: Sequence[Problem],
               ecfg: Any) -> dict[str, Any]:
    """ORM data from exact labels: teacher paths, injected errors and M0's own samples."""
    from mathse_rl.data import teacher
    from mathse_rl.evolve import get_generator
    from mathse_rl.prompts import build_solve_messages
    from mathse_rl.orm import build_orm_dataset, evaluate_judge, format_table, load_judge, train_orm
    from mathse_rl.orm.data import eval_items

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


# --------------------------------------------------------------------------- report


def _pct(v: Any, unit: str = "") -> str:
    return "n/a" if v is None else f"{100 * v:.1f}{unit}"


def _summarise(cfg: DemoConfig, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Final-vs-M0 gains per arm and the two targets of the demo, stated plainly."""
    s: dict[str, Any] = {}
    m0 = next((r[0]["heldout_accuracy"] for r in results.values() if r and r[0]["heldout_accuracy"] is not None), None)
    s["m0_accuracy"] = m0
    for arm, rows in results.items():
        final = rows[-1]["heldout_accuracy"]
        s[f"{arm}_final_accuracy"] = final
        s[f"{arm}_gain_over_m0"] = None if final is None or m0 is None else final - m0
    if "mathse" in results and m0 is not None and s.get("mathse_final_accuracy") is not None:
        s["target_mathse_ge_m0_plus_10_points"] = s["mathse_gain_over_m0"] >= 0.10
    for arm, rows in results.items():
        s[f"{arm}_policy_samples"] = sum(r.get("generated_paths") or 0 for r in rows)
        s[f"{arm}_teacher_paths"] = sum(r.get("reflections") or 0 for r in rows) if arm != "distill" else \
            (rows[-1].get("teacher_paths") or 0)
    if "mathse" in results and "rs" in results:
        a, b = s.get("mathse_final_accuracy"), s.get("rs_final_accuracy")
        if a is not None and b is not None:
            s["mathse_minus_rs"] = a - b
            s["target_mathse_ge_rs"] = a >= b
    return s


def format_report(cfg: DemoConfig, results: dict[str, list[dict[str, Any]]], summary: dict[str, Any],
                  orm_info: dict[str, Any]) -> str:
    """The stage-by-stage table (held-out accuracy per arm), the sample-level facts, the ORM table."""
    arms = [a for a in ("distill", "rs", "mathse") if a in results]
    lines = [f"## MathSE demo: held-out accuracy (%) on {cfg.heldout_problems} problems, seed {cfg.seed}", "",
             "| stage | " + " | ".join(ARM_TITLES[a] for a in arms) + " |",
             "|---|" + "---|" * len(arms)]
    n = max(len(results[a]) for a in arms)
    for i in range(n):
        cells = []
        for a in arms:
            r = results[a][i] if i < len(results[a]) else {}
            extra = f" ({_pct(r.get('heldout_all_steps_correct'))} all steps right)" \
                if r.get("heldout_all_steps_correct") is not None else ""
            cells.append(_pct(r.get("heldout_accuracy")) + extra)
        label = results[arms[0]][i]["stage"] if i < len(results[arms[0]]) else f"round {i}"
        if label == "M0":
            label = f"M0 (distilled on {cfg.seed_problems} teacher paths)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gains = []
    for a in arms:
        g = summary.get(f"{a}_gain_over_m0")
        gains.append("n/a" if g is None else (f"{100 * g:+.1f}" + ("" if g > 0 else " (does not help)")))
    lines.append("| final − M0 (points) | " + " | ".join(gains) + " |")
    lines += ["", "Sample-level facts per round (exact step checker):", "",
              "| arm | round | generated paths | accepted | accepted with all steps right | reflections accepted "
              "(all steps right) | training rows |", "|---|---|---|---|---|---|---|"]
    for a in arms:
        for r in results[a][1:]:
            refl = "—" if r.get("reflections") is None else \
                f"{r.get('reflections_accepted', 0)}/{r.get('reflections')} ({_pct(r.get('reflections_all_steps_correct'), '%')})"
            lines.append(f"| {a} | {r['stage']} | {r.get('generated_paths', '—') or '—'} | "
                         f"{r.get('accepted_paths', r.get('teacher_paths', '—'))} | "
                         f"{_pct(r.get('accepted_all_steps_correct'), '%') if 'accepted_all_steps_correct' in r else '100.0% (teacher)'} | "
                         f"{refl} | {r.get('train_rows', '—')} |")
    verdicts = []
    if "target_mathse_ge_m0_plus_10_points" in summary:
        verdicts.append(f"MathSE final − M0 = {100 * summary['mathse_gain_over_m0']:+.1f} points: target ≥ +10 "
                        + ("met." if summary["target_mathse_ge_m0_plus_10_points"] else "NOT met."))
    if "target_mathse_ge_rs" in summary:
        verdicts.append(f"MathSE − rejection sampling = {100 * summary['mathse_minus_rs']:+.1f} points with equal "
                        f"training steps (policy samples: MathSE {summary['mathse_policy_samples']}, rejection "
                        f"sampling {summary['rs_policy_samples']}; "
                        f"MathSE also used {summary['mathse_teacher_paths']} teacher reflections): target ≥ 0 "
                        + ("met." if summary["target_mathse_ge_rs"] else "NOT met."))
    verdicts += _caveats(results, orm_info)
    if verdicts:
        lines += [""] + verdicts
    if orm_info.get("table"):
        lines += ["", orm_info["table"]]
    return "\n".join(lines)


def _caveats(results: dict[str, list[dict[str, Any]]], orm_info: dict[str, Any]) -> list[str]:
    """Plain statements of what the numbers above do not show, read off this run's numbers."""
    notes = ["One seed: at these training horizons seed-to-seed spread is ±10-20 points; "
             "compare arms over several seeds (--seed) before trusting a gap."]
    rep = orm_info.get("report") or {}
    neg = rep.get("negative_accuracy")
    if neg is not None and neg < 0.5:
        notes.append(f"The ORM did not learn to reject wrong paths ({100 * neg:.0f}% of wrong paths judged "
                     "wrong), so MathSE's accept decisions were in effect the verifier's; its gain over "
                     "rejection sampling comes from the reflected (teacher-corrected) paths.")
    finals = [rows[-1] for rows in results.values() if rows]
    acc = max((r.get("heldout_accuracy") or 0.0) for r in finals) if finals else 0.0
    steps = max((r.get("heldout_all_steps_correct") or 0.0) for r in finals) if finals else 0.0
    if acc > 0 and steps < acc / 2:
        notes.append(f"Most right held-out answers come with wrong intermediate steps (final models: at most "
                     f"{100 * steps:.1f}% fully right chains, up to {100 * acc:.1f}% right answers): "
                     "answer-only accuracy overstates what the tiny model has learnt.")
    return notes


def _figure(cfg: DemoConfig, results: dict[str, list[dict[str, Any]]]):
    """Held-out accuracy per stage and arm; the legend sits below the axes, where it covers no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.6), dpi=100)
    for arm, rows in results.items():
        xs = list(range(len(rows)))
        ys = [None if r["heldout_accuracy"] is None else 100 * r["heldout_accuracy"] for r in rows]
        ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=ARM_TITLES[arm])
    ax.set_xticks(range(cfg.rounds + 1), ["M0"] + [f"round {i}" for i in range(1, cfg.rounds + 1)])
    ax.set_xlabel("stage (model after distillation, then after each round)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"MathSE demo (tiny Qwen2.5-VL, synthetic bar charts, seed {cfg.seed})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def _plot(cfg: DemoConfig, results: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(cfg, results)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (seconds; for tests)")
    parser.add_argument("--out", default="mathse_runs/demo", help="output directory (table, JSON, plot, wandb)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the models and the trainers")
    parser.add_argument("--trainer", choices=("torch", "sft"), default=None,
                        help="fine-tune backend of the rounds: torch (plain loop, default) or sft (trl SFTTrainer)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 2, or 1 when the machine is already busy)")
    parser.add_argument("--rounds", type=int, default=None, help="self-evolving rounds per arm")
    parser.add_argument("--config", default=None,
                        help="YAML of DemoConfig fields (see recipes/demo/); flags above override it")


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
    for name in ("trainer", "threads", "rounds"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    return DemoConfig(**fields)


def run(args) -> int:
    import shutil

    cfg = config_from_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        # A demo run is always fresh (its numbers come from this run only), but only a
        # previous demo's folder is ever deleted.
        if not (out / _MARKER).exists():
            raise SystemExit(f"--out {out} exists and is not a demo folder; choose another path")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("mathse-rl demo output\n")
    run_demo(cfg, out)
    return 0


_MARKER = ".mathse_demo"
