"""The self-evolving loop (the paper's Algorithm 1) as resumable stages.

    distill.judge → distill.train (M0) → distill.eval
    r{i}.generate → r{i}.judge (accept + critique) → [r{i}.reflect] → r{i}.train → r{i}.eval   i = 1..K
    reflect.generate → reflect.judge → final.train → final.eval      (reflect.when = "after")

Each stage writes its outputs atomically under ``<output_dir>/stages/<stage>/`` and then a
completion record in ``stages.jsonl``. Run again with ``resume=True`` and every recorded
stage is skipped: work continues at the stage that did not finish, with the pool intact.

    >>> from mathse_rl.evolve import load_config, run_evolve                         # doctest: +SKIP
    >>> result = run_evolve(load_config("recipes/trl/tiny_cpu.yaml"), train, heldout,
    ...                     seed_attempts=teacher_solutions)                          # doctest: +SKIP
    >>> result.heldout[-1]["accuracy"], result.pool_counts                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mathse_rl.evolve.components import (
    Critic, Generator, Judge, Refiner, Trainer, get_generator, get_refiner, get_trainer, solve_row, text_token_counter,
)
from mathse_rl.evolve.config import (
    ConfigError, EvolveConfig, check_paths, coerce, orm_options, resolve_threads, step_budget, step_config, to_yaml,
)
from mathse_rl.evolve.evaluate import evaluate
from mathse_rl.evolve.lock import RunLock
from mathse_rl.evolve.pool import (
    Bookkeeping, Pool, StageLog, atomic_write_text, attempt_from_row, attempt_to_row, chunked, read_jsonl,
    write_jsonl,
)
from mathse_rl.prompts import build_solve_messages
from mathse_rl.step import (
    Generation, PathVerdict, ReflectItem, StepCounters, TokenBudget, critique, reflect_and_rejudge,
)
from mathse_rl.types import Attempt, Judgment, Problem

logger = logging.getLogger(__name__)

# fault(stage, point) is called at "start", after each durable "chunk", and at "end" (before the
# completion record); tests raise from it to simulate a crash at that instant.
FaultHook = Callable[[str, str], None]


@dataclass
class EvolveResult:
    """What a run produced: per-stage records, held-out accuracy per model, the pool and checkpoints."""

    output_dir: str
    stages: dict[str, dict[str, Any]]
    heldout: list[dict[str, Any]]
    pool_counts: dict[str, int]
    pool_size: int
    final_checkpoint: str  # what the run delivers: the best held-out checkpoint (M0 included) when eval.keep_best
    best_checkpoint: str
    best_accuracy: float | None
    early_stopped: bool = False
    delivered_stage: str | None = None  # the eval stage whose model is delivered
    worse_stages: list[dict[str, Any]] = field(default_factory=list)  # stages that made held-out accuracy worse
    last_checkpoint: str = ""  # the model the last stage produced (delivered only if it is the best)
    skipped_problems: list[dict[str, str]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0  # this invocation, start to end
    bookkeeping_seconds: float = 0.0  # of which durable files and stage records


def run_evolve(config: EvolveConfig | Mapping[str, Any] | str, problems_train: Sequence[Problem],
               problems_eval: Sequence[Problem] | None = None, *, seed_attempts: Sequence[Attempt] = (),
               generator: Generator | None = None, trainer: Trainer | None = None, judge: Judge | None = None,
               critic: Critic | Any | None = None, refiner: Refiner | None = None, eval_judge: Judge | None = None,
               tracker: Any = None, resume: bool = False, faults: FaultHook | None = None,
               skipped: Sequence[Mapping[str, str]] = ()) -> EvolveResult:
    """Run (or resume) the self-evolving rounds with reflection.

    Components default to the registry names in ``config``; pass objects to override
    (the demo passes a programmatic teacher as ``refiner``). ``seed_attempts`` are the
    teacher's solutions (source ``distilled``); they are judged and the accepted ones start
    the pool. ``resume=False`` on a directory with finished stages is refused, and so is a
    directory another live run holds (``run.lock``). ``skipped`` are rows a loader already
    dropped (``{"id", "reason"[, "split"]}``); ``result.json`` lists them with the loop's own.
    Missing models, data files and an empty held-out set (evaluation on) fail before any stage.
    """
    cfg = coerce(config)
    return _Loop(cfg, problems_train, problems_eval, seed_attempts, generator, trainer, judge, critic, refiner,
                 eval_judge, tracker, resume, faults, skipped).run()


def _set_threads(threads: int) -> int:
    """Apply the ``threads`` option to torch (generation and fine-tunes run in this process)."""
    n = resolve_threads(threads)
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    logger.info("torch uses %d CPU threads (threads=%s)", n, threads or "auto")
    return n


def _problem_id(request: Any) -> str:
    return request.id if isinstance(request, Problem) else request.problem_id


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]


@contextlib.contextmanager
def _step_budget(train: Any, stage: str):
    """Trainers read ``config.train.max_steps`` when ``train()`` runs: set it to this stage's budget."""
    saved = train.max_steps
    train.max_steps = step_budget(train, stage)
    try:
        yield
    finally:
        train.max_steps = saved


class _BudgetCounter:
    """Wraps the policy's generator and counts paths that used the whole ``max_new_tokens``.

    Tokens are counted by :func:`~mathse_rl.evolve.components.text_token_counter` (the generator's
    own tokenizer); a generator without one is counted as not measured.
    """

    def __init__(self, inner: Generator):
        self.inner = inner
        self.hits = self.total = 0
        self.measured = True

    def __getattr__(self, name: str) -> Any:  # load, release and anything a backend adds
        return getattr(self.inner, name)

    def snapshot(self) -> tuple[int, int, bool]:
        return self.hits, self.total, self.measured

    def generate(self, messages, images, *, n, temperature, max_new_tokens):
        out = self.inner.generate(messages, images, n=n, temperature=temperature, max_new_tokens=max_new_tokens)
        count = self._counter()
        flat = [r for rs in out for r in rs]
        self.total += len(flat)
        if count is None:
            self.measured = False
        else:
            self.hits += sum(count(r) >= max_new_tokens for r in flat)
        return out

    def _counter(self) -> Callable[[str], int] | None:
        return text_token_counter(self.inner)


class _Loop:
    def __init__(self, cfg, train, heldout, seed, generator, trainer, judge, critic, refiner, eval_judge, tracker,
                 resume, faults, skipped=()):
        self.cfg = cfg
        # At the edge: models and files the loop will load itself must exist before anything is written.
        check_paths(cfg, model=generator is None or trainer is None, data=False)
        if generator is None or trainer is None:  # the loop puts models on GPUs: refuse what cannot fit there
            from mathse_rl.plan import preflight_evolve

            preflight_evolve(cfg)
        self.out = Path(cfg.output_dir)
        self.stage_dir = self.out / "stages"
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.out)
        self.lock.acquire()
        try:
            self._setup(cfg, train, heldout, seed, generator, trainer, judge, critic, refiner, eval_judge, tracker,
                        resume, faults, skipped)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, cfg, train, heldout, seed, generator, trainer, judge, critic, refiner, eval_judge, tracker,
               resume, faults, skipped):
        self.log = StageLog(self.out / "stages.jsonl")
        if self.log.records and not resume:
            raise FileExistsError(f"{self.out} holds a started run; pass resume=True (--resume) or a new output_dir")
        self.faults = faults or (lambda stage, point: None)
        self.skipped: list[dict[str, str]] = [{"split": "", **dict(s)} for s in skipped]
        self.train = self._prepare(train, "train")
        given = heldout is not None  # an eval set that was given but is empty is an error, never a split
        heldout = list(heldout) if given else []
        if not given and cfg.data.eval_fraction > 0:
            rng = random.Random(cfg.seed)
            order = sorted(self.train, key=lambda p: p.id)
            rng.shuffle(order)
            cut = max(1, int(len(order) * cfg.data.eval_fraction))
            held_ids = {p.id for p in order[:cut]}
            heldout = [p for p in self.train if p.id in held_ids]
            self.train = [p for p in self.train if p.id not in held_ids]
        else:
            heldout = self._prepare(heldout, "eval", exclude={p.id for p in self.train})
        self.heldout = heldout
        if cfg.eval.enabled and not heldout:
            raise ConfigError("the held-out set is empty (no usable eval problems): give data.eval (or eval problems), "
                              "set data.eval_fraction > 0, or turn evaluation off with eval.enabled=false")
        if resume and not (self.out / "config.yaml").exists():
            logger.info("resume requested but %s has no run yet; starting fresh", self.out)
        elif resume and (self.out / "config.yaml").read_text() != to_yaml(cfg):
            logger.warning("resuming %s with a config that differs from the one it started with; finished "
                           "stages keep their results", self.out)
        atomic_write_text(self.out / "config.yaml", to_yaml(cfg))
        self.by_id = {p.id: p for p in list(self.train) + list(self.heldout)}
        self.seed = self._check_seed(seed)
        self.pool = Pool(self.out / "pool.jsonl", dedup=cfg.pool.dedup, max_per_question=cfg.pool.max_per_question)
        self._generator = _BudgetCounter(generator) if generator is not None else None
        self.trainer = trainer
        self._judge, self._own_judge = judge, judge is None  # built on first use; our own are released
        self._critic, self._own_critic = critic, critic is None  # before each SFT stage (see _release_judges)
        self._refiner = refiner
        self.refiner_name = cfg.reflect.refiner
        # Acceptance for training is strict by default (require_final_answer); held-out scoring has its own
        # switch (eval.require_final_answer, lenient by default), so the two never share a judge silently.
        self._eval_judge, self._own_eval_judge = eval_judge, eval_judge is None
        if tracker is None:
            from mathse_rl.tracking import Tracker

            tracker = Tracker(cfg.tracking.report_to, project=cfg.tracking.project,
                              run_name=cfg.tracking.run_name or self.out.name, config=dataclasses.asdict(cfg),
                              dir=str(self.out))
        self.tracker = tracker
        self.reflecting = self._plan_reflection()
        self.current_model = cfg.model
        self.loaded_model: str | None = None
        self.heldout_log: list[dict[str, Any]] = []
        self.early_stopped = False

    def _check_seed(self, seed: Sequence[Attempt]) -> list[Attempt]:
        """Seed solutions must name training questions: unknown ids fail here, before any work."""
        train_ids = {p.id for p in self.train}
        held_ids = {p.id for p in self.heldout}
        skipped_ids = {s["id"] for s in self.skipped}
        unknown = sorted({a.problem_id for a in seed} - train_ids - held_ids - skipped_ids)
        if unknown:
            n = sum(a.problem_id in set(unknown) for a in seed)
            raise ValueError(f"{n} seed solutions name questions that are not in data.train (first ids: "
                             f"{unknown[:5]}); M0 would be trained without them. Fix data.seed's problem_id "
                             "values or add those questions to data.train.")
        # Teacher solutions of held-out questions would leak them into training: they are dropped.
        leaked = [a for a in seed if a.problem_id in held_ids and a.problem_id not in train_ids]
        if leaked:
            logger.warning("%d seed solutions are of held-out questions and are not used (first ids: %s)",
                           len(leaked), sorted({a.problem_id for a in leaked})[:5])
        return [a for a in seed if a.problem_id in train_ids]

    def _plan_reflection(self) -> bool:
        """Whether reflection runs, and with which refiner (``reflect.refiner=auto`` resolved here).

        ``auto`` reflects only with a teacher: a refiner object passed in, or the OpenAI-compatible
        teacher when ``reflect.openai.base_url`` is set. A policy that never saw the reflection prompt
        rarely writes a verified reflection (measured: README, "the refiner"), so it reflects only
        when asked for by name (``reflect.refiner=policy``).
        """
        r = self.cfg.reflect
        if not r.enabled or r.when == "never":
            return False
        if self._refiner is not None or r.refiner != "auto":
            return True
        if (r.openai or {}).get("base_url"):
            self.refiner_name = "openai"
            return True
        self._say("reflection is off: reflect.refiner=auto found no teacher refiner. Pass refiner=..., set "
                  "reflect.refiner=openai (reflect.openai.*), or reflect.refiner=policy to let the policy reflect on "
                  "its own wrong paths (a policy never trained on the reflection prompt rarely writes a verified one).")
        return False

    # ------------------------------------------------------------------ components (built on first use)
    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = _BudgetCounter(get_generator(self.cfg.generate.backend, self.cfg, self.current_model))
            self.loaded_model = self.current_model
        if self.loaded_model != self.current_model:
            self._generator.load(self.current_model)
            self.loaded_model = self.current_model
        return self._generator

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge(step_config(self.cfg))
        return self._judge

    @property
    def eval_judge(self) -> Judge:
        if self._eval_judge is None:
            cfg = self.cfg
            self._eval_judge = Judge(step_config(
                cfg, judge=cfg.eval.judge, judge_options=dict(cfg.judge_options) if cfg.eval.judge == cfg.judge else {},
                require_final_answer=cfg.eval.require_final_answer))
        return self._eval_judge

    @property
    def critic(self) -> Any:
        if self._critic is None:
            self._critic = Critic(orm_options(self.cfg, self.cfg.critic))
        return self._critic

    def _release_judges(self) -> None:
        """Free a local ORM (judge or critic, on GPU 0 in this process) before an SFT stage: the stage's
        processes and the vLLM engines after it get that memory back; the ORM loads again when next needed."""
        local = [c for c in (self.cfg.critic, self.cfg.judge_options) if (c or {}).get("backend") == "local"]
        if not local:
            return
        from mathse_rl.orm.reward import release_shared_judges

        if self._own_critic and self._critic is not None:
            backend = getattr(self._critic, "backend", None)
            if backend is not None and hasattr(backend, "close"):
                backend.close()
            self._critic = None
        if self._own_judge:
            self._judge = None
        if self._own_eval_judge:
            self._eval_judge = None
        released = release_shared_judges()
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        logger.info("released the local ORM before the fine-tune (%d shared judge(s))", released)

    @property
    def refiner(self) -> Refiner:
        if self._refiner is None:
            self._refiner = get_refiner(self.refiner_name, self.cfg, self.generator)
        return self._refiner

    def _trainer(self) -> Trainer:
        if self.trainer is None and self.cfg.launch.launcher != "none":
            from mathse_rl.evolve.launch import LaunchedTrainer  # a job of N processes per SFT stage

            self.trainer = LaunchedTrainer(self.cfg)
        if self.trainer is None:
            self.trainer = get_trainer(self.cfg.train.backend, self.cfg)
        return self.trainer

    # ------------------------------------------------------------------ problems and images
    def _prepare(self, problems: Sequence[Problem], split: str, exclude: set[str] = frozenset()) -> list[Problem]:
        """Save in-memory images under the run directory and reference them by path; skip bad rows."""
        img_dir = self.out / "images"
        kept: list[Problem] = []
        seen: set[str] = set()
        first_new = len(self.skipped)
        for p in problems:
            if p.id in seen:
                self.skipped.append({"id": p.id, "split": split, "reason": "duplicate id"})
                continue
            if p.id in exclude:
                self.skipped.append({"id": p.id, "split": split, "reason": "also in the training split"})
                continue
            if p.gold is None or str(p.gold).strip() == "":
                self.skipped.append({"id": p.id, "split": split, "reason": "missing answer"})
                continue
            paths = []
            try:
                for k, img in enumerate(p.images):
                    paths.append(self._image_path(img, img_dir / f"{_safe(p.id)}_{k}.png"))
            except Exception as exc:
                self.skipped.append({"id": p.id, "split": split, "reason": f"unreadable image: {exc}"})
                continue
            seen.add(p.id)
            kept.append(dataclasses.replace(p, images=tuple(paths)))
        for s in self.skipped[first_new:]:
            logger.warning("skipped problem %s (%s): %s", s["id"], s["split"], s["reason"])
        return kept

    def _image_path(self, img: Any, target: Path) -> str:
        from PIL import Image

        if isinstance(img, Image.Image):
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp.png")
                img.convert("RGB").save(tmp)
                tmp.replace(target)
            return str(target)
        path = Path(str(img))
        if not path.is_absolute() and self.cfg.data.image_root:
            path = Path(self.cfg.data.image_root) / path
        with Image.open(path) as im:  # fail here, at the edge, not inside a round
            im.verify()
        return str(path)

    # ------------------------------------------------------------------ stage plumbing
    def _stage(self, name: str, fn: Callable[[Path], dict[str, Any]], step: int | None = None) -> dict[str, Any]:
        if self.log.done(name):
            record = self.log.get(name)
            self._restore(record)
            return record
        self.faults(name, "start")
        t0, b0 = time.perf_counter(), Bookkeeping.seconds
        sdir = self.stage_dir / name
        sdir.mkdir(parents=True, exist_ok=True)
        hits0 = self._generator.snapshot() if self._generator is not None else (0, 0, True)
        info = fn(sdir)
        info.update(self._budget_hits(name, hits0))
        self.faults(name, "end")
        info["seconds"] = time.perf_counter() - t0
        info["bookkeeping_seconds"] = Bookkeeping.seconds - b0
        record = self.log.complete(name, **info)
        self._restore(record)
        metrics = {"stage": name, **{k: v for k, v in info.items() if not isinstance(v, (list, dict))},
                   **{f"pool/{k}": v for k, v in self.pool.counts_by_source().items()}, "pool/size": len(self.pool)}
        self.tracker.log(metrics, step=step)
        return record

    def _budget_hits(self, stage: str, before: tuple[int, int, bool]) -> dict[str, Any]:
        """Paths of this stage that used the whole ``max_new_tokens`` (cut off); warned about."""
        if self._generator is None:
            return {}
        hits, total, measured = self._generator.snapshot()
        hits0, total0, _ = before
        if total == total0:
            return {}
        if not measured:
            return {"hit_max_new_tokens": None}
        n, of = hits - hits0, total - total0
        if n:
            logger.warning("%s: %d of %d generated paths hit max_new_tokens (cut off before they end); raise "
                           "generate.max_new_tokens (eval.max_new_tokens for held-out evaluation)", stage, n, of)
        return {"hit_max_new_tokens": n, "hit_max_new_tokens_rate": n / of}

    def _restore(self, record: Mapping[str, Any]) -> None:
        if record.get("checkpoint"):
            self.current_model = record["checkpoint"]
        if "heldout" in record:
            entry = dict(record["heldout"])
            if not any(h["stage"] == entry["stage"] for h in self.heldout_log):
                self.heldout_log.append(entry)
        if record.get("early_stop"):
            # Held-out accuracy fell: stop the rounds and go on from the best model so far.
            self.early_stopped = True
            scored = [h for h in self.heldout_log if h.get("accuracy") is not None]
            if self.cfg.eval.keep_best and scored:
                self.current_model = max(scored, key=lambda h: h["accuracy"])["model"]

    def _generate_parts(self, sdir: Path, stage: str, requests: Sequence[Any],
                        make: Callable[[Sequence[Any]], list[dict[str, Any]]], desc: str) -> list[dict[str, Any]]:
        """Run ``make`` over chunks of ``requests``; each finished chunk is a durable part file."""
        from tqdm.auto import tqdm

        rows: list[dict[str, Any]] = []
        chunks = chunked(list(requests), self.cfg.generate.chunk_size)
        for k, chunk in enumerate(tqdm(chunks, desc=desc, disable=not self.cfg.tracking.progress, leave=False)):
            part = sdir / f"part-{k:05d}.jsonl"
            if part.exists():
                saved = read_jsonl(part)
                if {r["problem_id"] for r in saved} == {_problem_id(x) for x in chunk}:
                    rows.extend(saved)
                    continue
                logger.warning("%s: %s was written for other questions (data changed?); regenerating it",
                               stage, part.name)
            out = make(chunk)
            write_jsonl(part, out)
            rows.extend(out)
            self.faults(stage, "chunk")
        return rows

    def _judge_in_batches(self, problems: list[Problem], responses: list[str], desc: str,
                          counters: StepCounters | None = None) -> list[PathVerdict]:
        """The step's verdicts (True / False / None = undecidable), judged a chunk at a time."""
        from tqdm.auto import tqdm

        results: list[PathVerdict] = []
        size = max(1, self.cfg.generate.chunk_size)
        for i in tqdm(range(0, len(problems), size), desc=desc, disable=not self.cfg.tracking.progress, leave=False):
            results.extend(self.judge.judge(problems[i:i + size], responses[i:i + size], counters=counters))
        return results

    def _agreement(self, problems: list[Problem], responses: list[str], decisions: list[bool]) -> float | None:
        """Share of paths where the judge and the rule verifier agree on acceptance (1.0 when the judge is it)."""
        if not problems:
            return None
        if isinstance(self.judge, Judge) and self.judge.name == "verifier":
            return 1.0
        verifier = Judge(step_config(self.cfg, judge="verifier", judge_options={}))
        accepted = [v.correct is True for v in verifier.judge(problems, responses)]
        return sum(int(a == d) for a, d in zip(accepted, decisions)) / len(problems)

    @staticmethod
    def _judge_counts(counters: StepCounters) -> dict[str, int]:
        """What a judging stage records besides its acceptances: undecidable paths and judge failures."""
        return {"undecidable": counters["undecidable"], "judge_errors": counters["judge_errors"]}

    # ------------------------------------------------------------------ the stages
    def run(self) -> EvolveResult:
        cfg = self.cfg
        self._t0, self._b0 = time.perf_counter(), Bookkeeping.seconds
        self.threads = _set_threads(cfg.threads)
        try:
            self._stage("distill.judge", self._distill_judge, step=0)
            if cfg.distill_train and len(self.pool) > 0:
                self._stage("distill.train", lambda d: self._train(d, "m0"), step=0)
            self._stage("distill.eval", lambda d: self._eval(d, "distill.eval", round_=0), step=0)
            for i in range(1, cfg.rounds + 1):
                if self.early_stopped:
                    break
                self._stage(f"r{i}.generate", lambda d, i=i: self._round_generate(d, i), step=i)
                self._stage(f"r{i}.judge", lambda d, i=i: self._round_judge(d, i), step=i)
                if self.reflecting and cfg.reflect.when == "every_round":
                    self._stage(f"r{i}.reflect", lambda d, i=i: self._reflect(d, f"r{i}.reflect", i,
                                                                            self._wrong_of([f"r{i}.judge"])), step=i)
                self._stage(f"r{i}.train", lambda d, i=i: self._train(d, f"r{i}", round_=i), step=i)
                self._stage(f"r{i}.eval", lambda d, i=i: self._eval(d, f"r{i}.eval", round_=i), step=i)
            if self.reflecting and cfg.reflect.when == "after":
                final_round = cfg.rounds + 1
                judged = [f"r{i}.judge" for i in range(1, cfg.rounds + 1)]
                self._stage("reflect", lambda d: self._reflect(d, "reflect", final_round, self._wrong_of(judged)),
                            step=final_round)
                self._stage("final.train", lambda d: self._train(d, "final", round_=final_round), step=final_round)
                self._stage("final.eval", lambda d: self._eval(d, "final.eval", round_=final_round), step=final_round)
            result = self._result()
            atomic_write_text(self.out / "result.json", json.dumps(dataclasses.asdict(result), indent=1))
            return result
        finally:
            self.tracker.finish()
            self.lock.release()

    def _distill_judge(self, sdir: Path) -> dict[str, Any]:
        seed = [dataclasses.replace(a, source="distilled") for a in self.seed]
        problems = [self.by_id[a.problem_id] for a in seed]
        responses = [a.response for a in seed]
        counters = StepCounters()
        results = self._judge_in_batches(problems, responses, "judge seed", counters) if seed else []
        accepted = [dataclasses.replace(a, correct=True, round=0, meta={**a.meta, "judge_score": r.score})
                    for a, r in zip(seed, results) if r.correct]
        write_jsonl(sdir / "accepted.jsonl", (attempt_to_row(a) for a in accepted))
        added = self.pool.add(accepted)
        return {"seed_paths": len(seed), "accepted": len(accepted), "added": added, "threads": self.threads,
                "reflection": (self.refiner_name if self._refiner is None else type(self._refiner).__name__)
                if self.reflecting else "off",
                **self._judge_counts(counters),
                "accept_rate": len(accepted) / len(seed) if seed else None,
                "skipped_problems": len(self.skipped), "skipped": self.skipped}

    def _round_generate(self, sdir: Path, i: int) -> dict[str, Any]:
        solved = self.pool.solved()
        remaining = [p for p in self.train if p.id not in solved]
        n, g = self.cfg.generate.n, self.cfg.generate

        def make(chunk: Sequence[Problem]) -> list[dict[str, Any]]:
            rows = []
            for start in range(0, len(chunk), g.batch_size):
                batch = list(chunk[start:start + g.batch_size])
                outs = self.generator.generate([build_solve_messages(p, self.cfg.solve_template) for p in batch], [p.images for p in batch],
                                               n=n, temperature=g.temperature, max_new_tokens=g.max_new_tokens)
                for p, responses in zip(batch, outs):
                    rows.extend({"problem_id": p.id, "response": r} for r in responses)
            return rows

        rows = self._generate_parts(sdir, f"r{i}.generate", remaining, make, f"round {i} generate")
        return {"round": i, "questions_attempted": len(remaining), "paths": len(rows), "model": self.current_model}

    def _round_judge(self, sdir: Path, i: int) -> dict[str, Any]:
        rows = self._rows_of(f"r{i}.generate")
        problems = [self.by_id[r["problem_id"]] for r in rows]
        responses = [r["response"] for r in rows]
        counters = StepCounters()
        results = self._judge_in_batches(problems, responses, f"round {i} judge", counters)
        accepted, wrong, wrong_verdicts = [], [], []
        for p, resp, res in zip(problems, responses, results):
            a = Attempt(p.id, resp, "sampled", round=i, correct=res.correct, meta={"judge_score": res.score})
            if res.correct:
                accepted.append(a)
            elif self.judge.reflects_on(res):  # wrong; undecidable only with undecidable_as_wrong (else counted)
                wrong.append(a)
                wrong_verdicts.append(res)
        critiques = self._critique(wrong, wrong_verdicts, counters)
        wrong = [dataclasses.replace(a, judgment=c) for a, c in zip(wrong, critiques)]
        write_jsonl(sdir / "accepted.jsonl", (attempt_to_row(a) for a in accepted))
        write_jsonl(sdir / "wrong.jsonl", (attempt_to_row(a) for a in wrong))
        self.faults(f"r{i}.judge", "chunk")
        added = self.pool.add(accepted)
        solved_now = {a.problem_id for a in accepted}
        questions = {p.id for p in problems}
        agreement = self._agreement(problems, responses, [r.correct is True for r in results])
        self._examples_table(f"round{i}/examples", wrong[: self.cfg.tracking.table_rows], None, step=i)
        return {"round": i, "paths": len(rows), "accepted": len(accepted), "added": added, "wrong": len(wrong),
                "accept_rate": len(accepted) / len(rows) if rows else None,
                "questions_attempted": len(questions), "questions_solved": len(solved_now),
                "judge_verifier_agreement": agreement, **self._judge_counts(counters),
                "critic_errors": counters["critic_errors"]}

    def _rows_of(self, stage: str) -> list[dict[str, Any]]:
        rows = []
        for part in sorted((self.stage_dir / stage).glob("part-*.jsonl")):
            rows.extend(read_jsonl(part))
        return rows

    def _critique(self, wrong: list[Attempt], verdicts: list[PathVerdict],
                  counters: StepCounters) -> list[Judgment | None]:
        """The step's critiques, a chunk at a time; a failed critique leaves the path reflectable ("unknown" step)."""
        if not wrong:
            return []
        from tqdm.auto import tqdm

        out: list[Judgment | None] = []
        size = max(1, self.cfg.generate.chunk_size)
        for s in tqdm(range(0, len(wrong), size), desc="critique", disable=not self.cfg.tracking.progress, leave=False):
            batch = wrong[s:s + size]
            out.extend(critique(self.critic, [self.by_id[a.problem_id] for a in batch], [a.response for a in batch],
                                verdicts=verdicts[s:s + size], counters=counters))
        return out

    def _wrong_of(self, judge_stages: Sequence[str]) -> list[Attempt]:
        wrong = [attempt_from_row(r) for s in judge_stages for r in read_jsonl(self.stage_dir / s / "wrong.jsonl")]
        if self.cfg.reflect.only_unsolved:
            solved = self.pool.solved()
            wrong = [a for a in wrong if a.problem_id not in solved]
        cap = self.cfg.reflect.max_per_question
        if cap is not None:
            seen: dict[str, int] = {}
            kept = []
            for a in wrong:
                if seen.get(a.problem_id, 0) < cap:
                    kept.append(a)
                    seen[a.problem_id] = seen.get(a.problem_id, 0) + 1
            wrong = kept
        return wrong

    def _reflect(self, sdir: Path, stage: str, round_: int, wrong: list[Attempt]) -> dict[str, Any]:
        """The step's reflect-and-rejudge on stored wrong paths, a durable chunk at a time.

        Each part row records the outcome (``status``: verified, rejected, undecidable, truncated,
        too_long, error); only verified refinements join the pool. A refinement that hit its token
        budget (``reflect.max_tokens``, else ``generate.max_new_tokens``) is ``truncated``: counted,
        never accepted.
        """
        r = self.cfg.reflect
        step = step_config(self.cfg)
        budget = TokenBudget(max_tokens=step.reflect.max_tokens or self.cfg.generate.max_new_tokens, engine="hf")
        critic = self.critic if step.reflect.attempts > 1 else None

        def make(chunk: Sequence[Attempt]) -> list[dict[str, Any]]:
            items = [ReflectItem(self.by_id[a.problem_id], a.response, a.judgment, key=a) for a in chunk
                     for _ in range(r.n)]
            outs = reflect_and_rejudge(self.judge, items, self._refine, budget, critic=critic, options=step.reflect)
            return [{"problem_id": o.item.key.problem_id, "parent": o.item.wrong, "parent_round": o.item.key.round,
                     "response": o.generation.text if o.generation else "", "status": o.status,
                     "judge_score": o.verdict.score if o.verdict else None, "attempts": o.attempts,
                     "critique": o.item.critique.error_analysis if o.item.critique else ""} for o in outs]

        rows = self._generate_parts(sdir, stage, wrong, make, f"{stage} refine")
        accepted = [Attempt(x["problem_id"], x["response"], "reflected", round=round_, correct=True,
                            parent=x["parent"], meta={"judge_score": x["judge_score"], "parent_round": x["parent_round"]})
                    for x in rows if x["status"] == "verified"]
        write_jsonl(sdir / "accepted.jsonl", (attempt_to_row(a) for a in accepted))
        added = self.pool.add(accepted)
        table = [[(self.by_id[x["problem_id"]].images or (None,))[0], self.by_id[x["problem_id"]].question,
                  x["parent"], x["critique"], x["response"], "CORRECT" if x["status"] == "verified" else x["status"]]
                 for x in rows[: self.cfg.tracking.table_rows]]
        self.tracker.table(f"{stage}/examples", ["image", "question", "wrong_path", "critique", "refinement",
                                                 "verdict"], table, step=round_)
        status = {k: sum(x["status"] == k for x in rows) for k in ("truncated", "too_long", "error", "undecidable")}
        refined = len(rows) - status["too_long"]
        return {"round": round_, "wrong_paths": len(wrong), "refined": refined, "verified": len(accepted),
                "added": added, "reflection_success_rate": len(accepted) / refined if refined else None,
                "questions_rescued": len({a.problem_id for a in accepted}), "truncated": status["truncated"],
                "reflect_too_long": status["too_long"], "generate_errors": status["error"],
                "undecidable": status["undecidable"], "max_tokens": budget.max_tokens}

    def _refine(self, requests: Sequence[Any]) -> list[Generation]:
        """The step's generate function over the refiner: one refinement per request, within its ``max_tokens``."""
        if not requests:
            return []
        first = requests[0]
        outs = self.refiner.refine([q.item.problem for q in requests], [q.item.wrong for q in requests],
                                   [q.item.critique for q in requests], n=1,
                                   temperature=self.cfg.reflect.temperature if first.temperature is None
                                   else first.temperature, max_new_tokens=first.max_tokens,
                                   template=self.cfg.reflect.template)
        count = text_token_counter(self._refiner_generator())
        gens = []
        for refs in outs:
            g = refs[0] if refs else ""
            gens.append(g if isinstance(g, Generation) else Generation(str(g), None, count(str(g)) if count else None))
        return gens

    def _refiner_generator(self) -> Any:
        return getattr(self.refiner, "generator", None)

    def _examples_table(self, name: str, wrong: list[Attempt], _unused: Any, step: int) -> None:
        rows = [[(self.by_id[a.problem_id].images or (None,))[0], self.by_id[a.problem_id].question, a.response,
                 a.judgment.error_analysis if a.judgment else "", "", "WRONG"] for a in wrong]
        self.tracker.table(name, ["image", "question", "wrong_path", "critique", "refinement", "verdict"], rows,
                           step=step)

    def _train(self, sdir: Path, name: str, round_: int = 0) -> dict[str, Any]:
        cfg = self.cfg
        attempts = list(self.pool)
        if not cfg.pool.accumulate:
            attempts = [a for a in attempts if a.source == "distilled" or a.round == round_]
        rows = [solve_row(self.by_id[a.problem_id], a.response, a.source, cfg.solve_template) for a in attempts if a.problem_id in self.by_id]
        init = cfg.model if cfg.train.from_base else self.current_model
        target = str(self.out / "checkpoints" / name)
        if not rows:
            logger.warning("stage %s: the pool is empty; keeping %s", name, self.current_model)
            return {"round": round_, "rows": 0, "checkpoint": self.current_model, "init": init}
        if self._generator is not None and hasattr(self._generator, "release"):
            self._generator.release()  # hand the accelerator memory to the fine-tune (vLLM, HF on GPU)
            self.loaded_model = None
        self._release_judges()
        with _step_budget(cfg.train, name):
            checkpoint = self._trainer().train(rows, init, target)
        return {"round": round_, "rows": len(rows), "checkpoint": checkpoint, "init": init,
                "max_steps": step_budget(cfg.train, name), "rows_by_source": {s: sum(r.source == s for r in rows) for s in ("distilled", "sampled", "reflected")}}

    def _eval(self, sdir: Path, stage: str, round_: int) -> dict[str, Any]:
        cfg = self.cfg
        if not cfg.eval.enabled or not self.heldout:
            return {"round": round_, "heldout": {"stage": stage, "round": round_, "model": self.current_model,
                                                 "accuracy": None}}
        res = evaluate(self.generator, self.eval_judge, self.heldout, k=cfg.eval.k, temperature=cfg.eval.temperature,
                       max_new_tokens=cfg.eval.max_new_tokens or cfg.generate.max_new_tokens,
                       batch_size=cfg.generate.batch_size, progress=cfg.tracking.progress,
                       template=cfg.solve_template)
        write_jsonl(sdir / "examples.jsonl", res.pop("examples"))
        entry = {"stage": stage, "round": round_, "model": self.current_model, **res}
        scored = [h for h in self.heldout_log if h.get("accuracy") is not None]
        best = max(scored, key=lambda h: h["accuracy"]) if scored else None
        info = {"round": round_, "heldout_accuracy": res["accuracy"], "heldout": entry}
        if cfg.eval.k > 0:
            info[f"heldout_pass@{cfg.eval.k}"] = res[f"pass@{cfg.eval.k}"]
        if best is not None and res["accuracy"] < best["accuracy"] - cfg.eval.tolerance:
            # The same rule for the rounds and the final fine-tune: a stage that falls below the best
            # model so far stops the rounds, and its checkpoint is not what the run delivers.
            info["made_worse"] = 1
            info["best_before"] = best["accuracy"]
            info["best_stage_before"] = best["stage"]
            if cfg.eval.early_stop:
                info["early_stop"] = True
            keep = best["model"] if cfg.eval.keep_best else self.current_model
            self._say(f"WARNING: {stage} made held-out accuracy worse: {100 * res['accuracy']:.1f}% < "
                      f"{100 * best['accuracy']:.1f}% ({best['stage']}); the run delivers {keep}"
                      + (" unless a later stage beats it" if stage != self._last_eval_stage() else ""))
        return info

    def _last_eval_stage(self) -> str:
        cfg = self.cfg
        if self.reflecting and cfg.reflect.when == "after":
            return "final.eval"
        return f"r{cfg.rounds}.eval" if cfg.rounds > 0 else "distill.eval"

    def _say(self, message: str) -> None:
        """A plain line on the console (also when the console sink is off) and in the log."""
        printer = getattr(self.tracker, "printer", None)
        if printer is not None and "console" in getattr(self.tracker, "sinks", ()):
            printer(message)
        else:
            logger.warning(message)

    def _result(self) -> EvolveResult:
        scored = [h for h in self.heldout_log if h.get("accuracy") is not None]
        best = max(scored, key=lambda h: h["accuracy"]) if scored else None  # the earliest of equal ones
        trained = [rec["checkpoint"] for rec in self.log.records.values() if rec.get("checkpoint")]
        last_checkpoint = trained[-1] if trained else self.cfg.model
        delivered = best["model"] if best and self.cfg.eval.keep_best else last_checkpoint
        delivered_stage = best["stage"] if best and self.cfg.eval.keep_best else (scored[-1]["stage"] if scored else None)
        worse = [{"stage": name, "accuracy": rec["heldout_accuracy"], "best_before": rec["best_before"],
                  "best_stage_before": rec["best_stage_before"]}
                 for name, rec in self.log.records.items() if rec.get("made_worse")]
        if scored:
            path = " -> ".join(f"{h['stage'].split('.')[0]} {100 * h['accuracy']:.1f}%" for h in scored)
            self._say(f"held-out accuracy: {path}; delivered: {delivered_stage} ({delivered})"
                      + (f"; made worse: {', '.join(w['stage'] for w in worse)}" if worse else ""))
        if hasattr(self.tracker, "summary"):
            self.tracker.summary({"delivered_checkpoint": delivered, "delivered_stage": delivered_stage,
                                  "delivered_accuracy": best["accuracy"] if best else None,
                                  "stages_made_worse": ", ".join(w["stage"] for w in worse) or "none"})
        return EvolveResult(
            output_dir=str(self.out), stages=dict(self.log.records), heldout=list(self.heldout_log),
            pool_counts=self.pool.counts_by_source(), pool_size=len(self.pool), final_checkpoint=delivered,
            best_checkpoint=best["model"] if best else self.current_model,
            best_accuracy=best["accuracy"] if best else None, early_stopped=self.early_stopped,
            delivered_stage=delivered_stage, worse_stages=worse, last_checkpoint=last_checkpoint,
            skipped_problems=list(self.skipped), metrics=list(getattr(self.tracker, "history", [])),
            wall_seconds=time.perf_counter() - self._t0, bookkeeping_seconds=Bookkeeping.seconds - self._b0)
