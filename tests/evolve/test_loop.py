"""The self-evolving loop with a scripted policy: stages, pool, metrics, resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_parts import (
    RecordingTrainer, ScriptedGenerator, TeacherRefiner, make_problems, scripted_config, seed_for,
)

from mathse_rl.evolve import run_evolve
from mathse_rl.evolve.pool import read_jsonl
from mathse_rl.types import Problem

TRAIN = make_problems(6)
HELDOUT = make_problems(2, prefix="h", start=10)
SEED = seed_for(TRAIN[:2])  # q0 right (accepted), q1 wrong (rejected by the judge)


def _run(out: Path, gen=None, trainer=None, **kw):
    cfg = kw.pop("cfg", None) or scripted_config(out)
    return run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=gen or ScriptedGenerator(),
                      trainer=trainer or RecordingTrainer(), **kw)


def _pool(out: Path) -> set[tuple]:
    return {(r["problem_id"], r["response"], r["source"], r["round"]) for r in read_jsonl(out / "pool.jsonl")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    trainer = RecordingTrainer()
    result = _run(out, trainer=trainer)
    return out, result, trainer


def test_two_rounds_then_reflection_then_final_fine_tune(reference):
    out, result, trainer = reference
    expected = ["distill.judge", "distill.train", "distill.eval", "r1.generate", "r1.judge", "r1.train", "r1.eval",
                "r2.generate", "r2.judge", "r2.train", "r2.eval", "reflect", "final.train", "final.eval"]
    assert list(result.stages) == expected
    s = result.stages
    # The judge filtered the teacher's seed: one of two kept.
    assert s["distill.judge"]["seed_paths"] == 2 and s["distill.judge"]["accepted"] == 1
    # Round 1 attempts every question not solved by the seed, n=2 paths each.
    assert s["r1.generate"]["questions_attempted"] == 5 and s["r1.generate"]["paths"] == 10
    assert s["r1.judge"]["accepted"] + s["r1.judge"]["wrong"] == 10
    assert s["r1.judge"]["accept_rate"] == pytest.approx(s["r1.judge"]["accepted"] / 10)
    # Round 2 only attempts questions still unsolved after round 1.
    solved_after_r1 = 1 + s["r1.judge"]["questions_solved"]
    assert s["r2.generate"]["questions_attempted"] == 6 - solved_after_r1
    # Reflection covers every stored wrong path of both rounds; success rate = verified / refined.
    wrong = s["r1.judge"]["wrong"] + s["r2.judge"]["wrong"]
    assert s["reflect"]["wrong_paths"] == wrong == s["reflect"]["refined"]
    assert 0 < s["reflect"]["verified"] < wrong
    assert s["reflect"]["reflection_success_rate"] == pytest.approx(s["reflect"]["verified"] / wrong)
    # The pool accumulates by source and matches the file on disk.
    pool = read_jsonl(out / "pool.jsonl")
    by_source = {src: sum(r["source"] == src for r in pool) for src in ("distilled", "sampled", "reflected")}
    assert by_source == result.pool_counts and by_source["distilled"] == 1
    assert by_source["sampled"] == s["r1.judge"]["added"] + s["r2.judge"]["added"] > 0
    assert by_source["reflected"] == s["reflect"]["added"] > 0
    assert all(r["parent"] for r in pool if r["source"] == "reflected")
    # Each fine-tune continues from the last checkpoint on the whole pool so far; the final one sees everything.
    inits = [Path(c["init"]).name for c in trainer.calls]
    assert inits == ["base", "m0", "r1", "r2"]
    final_rows = json.loads((Path(s["final.train"]["checkpoint"]) / "rows.json").read_text())
    assert len(final_rows) == len(pool) and s["final.train"]["rows_by_source"] == by_source
    # Images are saved once under the run directory and referenced by path.
    assert all(Path(i).parent == out / "images" and Path(i).exists() for r in final_rows for i in r["images"])
    # Held-out evaluation after M0, each round and the final fine-tune, with pass@k.
    assert [h["stage"] for h in result.heldout] == ["distill.eval", "r1.eval", "r2.eval", "final.eval"]
    assert all(0.0 <= h["accuracy"] <= 1.0 and "pass@2" in h for h in result.heldout)
    assert result.best_accuracy == max(h["accuracy"] for h in result.heldout)
    # Time per stage and bookkeeping time are recorded for every stage.
    assert all(r["seconds"] >= r["bookkeeping_seconds"] >= 0 for r in s.values())
    assert json.loads((out / "result.json").read_text())["pool_size"] == len(pool)


def test_a_started_run_is_not_overwritten_without_resume(reference):
    out, _, _ = reference
    with pytest.raises(FileExistsError, match="resume"):
        _run(out)


def test_resume_of_a_finished_run_redoes_nothing(reference, tmp_path):
    out, result, _ = reference
    trainer, gen = RecordingTrainer(), ScriptedGenerator()
    again = _run(out, gen=gen, trainer=trainer, resume=True)
    assert trainer.calls == [] and gen.calls == []
    assert again.pool_counts == result.pool_counts and again.heldout == result.heldout


class Crash(RuntimeError):
    pass


CHUNKED = ("r1.generate", "r2.generate", "r1.judge", "r2.judge", "reflect")
STAGES = ["distill.judge", "distill.train", "distill.eval", "r1.generate", "r1.judge", "r1.train", "r1.eval",
          "r2.generate", "r2.judge", "r2.train", "r2.eval", "reflect", "final.train", "final.eval"]
CASES = [(s, p) for s in STAGES for p in ("start", "end")] + [(s, "chunk") for s in CHUNKED]


@pytest.mark.parametrize("stage,point", CASES)
def test_resume_after_a_crash_loses_no_accepted_sample(reference, tmp_path, stage, point):
    ref_out, ref_result, _ = reference

    def fault(s, p):
        if (s, p) == (stage, point):
            raise Crash(f"{s}:{p}")

    with pytest.raises(Crash):
        _run(tmp_path, faults=fault)
    pool_at_crash = _pool(tmp_path)
    finished = {r["stage"]: r["finished_at"] for r in read_jsonl(tmp_path / "stages.jsonl")}
    assert stage not in finished

    result = _run(tmp_path, resume=True)
    # Nothing accepted before the crash is lost, and the run ends exactly where an uninterrupted one does.
    assert pool_at_crash <= _pool(tmp_path)
    assert _pool(tmp_path) == _pool(ref_out)
    assert list(result.stages) == list(ref_result.stages)
    assert [h["accuracy"] for h in result.heldout] == [h["accuracy"] for h in ref_result.heldout]
    # Stages finished before the crash were not run again.
    after = {r["stage"]: r["finished_at"] for r in read_jsonl(tmp_path / "stages.jsonl")}
    assert all(after[s] == t for s, t in finished.items())


def test_reflection_every_round_and_a_teacher_refiner(tmp_path):
    cfg = scripted_config(tmp_path, reflect={"when": "every_round"})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=ScriptedGenerator(),
                        trainer=RecordingTrainer(), refiner=TeacherRefiner())
    assert "r1.reflect" in result.stages and "reflect" not in result.stages and "final.train" not in result.stages
    r1 = result.stages["r1.reflect"]
    assert r1["verified"] == r1["refined"] == result.stages["r1.judge"]["wrong"]  # the teacher is always right
    # The teacher rescued every question round 1 got wrong, so round 2 has nothing left to attempt.
    assert r1["questions_rescued"] > 0 and result.stages["r2.generate"]["questions_attempted"] == 0
    reflected = [r for r in read_jsonl(tmp_path / "pool.jsonl") if r["source"] == "reflected"]
    assert reflected and all("(teacher)" in r["response"] for r in reflected)


def test_early_stop_when_heldout_accuracy_falls_and_keep_the_best(tmp_path):
    # Held-out questions (a >= 11) are right with M0 and wrong after round 1.
    def rule(r, a, b, k, reflecting):
        if a >= 11:
            return r == 0
        return (a + r + k) % 3 == 0

    trainer = RecordingTrainer()
    cfg = scripted_config(tmp_path, eval={"k": 0})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=ScriptedGenerator(rule), trainer=trainer)
    assert result.early_stopped and result.stages["r1.eval"].get("early_stop")
    assert "r2.generate" not in result.stages
    assert Path(result.best_checkpoint).name == "m0" and result.best_accuracy == 1.0
    # The final fine-tune starts from the best model, not the worse last one.
    assert Path(result.stages["final.train"]["init"]).name == "m0"


def test_bad_rows_are_reported_with_ids_and_skipped(tmp_path):
    bad = [Problem(id="no-answer", question="What is 1 + 1?", gold=None),
           Problem(id="bad-image", question="What is 1 + 2?", gold="3", images=(str(tmp_path / "missing.png"),))]
    cfg = scripted_config(tmp_path / "run", rounds=1, reflect={"enabled": False})
    leak = seed_for(HELDOUT)[:1]  # a teacher solution of a held-out question must not reach the pool
    result = run_evolve(cfg, TRAIN[:2] + bad, HELDOUT + TRAIN[:1], seed_attempts=SEED + leak,
                        generator=ScriptedGenerator(), trainer=RecordingTrainer())
    skipped = {s["id"]: s["reason"] for s in result.skipped_problems}
    assert set(skipped) == {"no-answer", "bad-image", "q0"}
    assert skipped["no-answer"] == "missing answer" and skipped["bad-image"].startswith("unreadable image")
    assert skipped["q0"] == "also in the training split"
    assert result.stages["distill.judge"]["skipped_problems"] == 3 and result.stages["distill.judge"]["seed_paths"] == 2
    assert not any(r["problem_id"].startswith("h") for r in read_jsonl(tmp_path / "run" / "pool.jsonl"))
    assert result.stages["r1.generate"]["questions_attempted"] == 1  # q1 only (q0 solved by the seed)


def test_pool_cap_and_no_accumulation(tmp_path):
    cfg = scripted_config(tmp_path, pool={"max_per_question": 1, "accumulate": False}, rounds=1,
                          generate={"n": 3}, reflect={"enabled": False})
    trainer = RecordingTrainer()
    run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=ScriptedGenerator(), trainer=trainer)
    pool = read_jsonl(tmp_path / "pool.jsonl")
    per_q = {}
    for r in pool:
        per_q[r["problem_id"]] = per_q.get(r["problem_id"], 0) + 1
    assert max(per_q.values()) == 1


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {here!r})
from pathlib import Path
import test_loop as t

def fault(stage, point):
    if (stage, point) == ({stage!r}, {point!r}):
        os.kill(os.getpid(), signal.SIGKILL)

t._run(Path({out!r}), faults=fault)
"""


@pytest.mark.parametrize("stage,point", [("r1.generate", "chunk"), ("reflect", "chunk")])
def test_sigkill_mid_stage_then_resume(reference, tmp_path, stage, point):
    import subprocess
    import sys

    ref_out, _, _ = reference
    here = str(Path(__file__).parent)
    code = _KILLED_RUN.format(here=here, stage=stage, point=point, out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    parts = sorted((tmp_path / "stages" / stage).glob("part-*.jsonl"))
    assert len(parts) == 1 and not list((tmp_path / "stages" / stage).glob(".part-*"))  # no half-written file
    pool_at_kill = _pool(tmp_path)
    _run(tmp_path, resume=True)
    assert pool_at_kill <= _pool(tmp_path) and _pool(tmp_path) == _pool(ref_out)


def test_swapping_the_judge_by_name(tmp_path):
    # judge=orm with the ORM's rule-based backend (no model): the same decisions as the verifier here,
    # and the judge/verifier agreement is measured rather than assumed.
    cfg = scripted_config(tmp_path, judge="orm", rounds=1, reflect={"enabled": False})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=ScriptedGenerator(),
                        trainer=RecordingTrainer())
    ref = run_evolve(scripted_config(tmp_path / "v", rounds=1, reflect={"enabled": False}), TRAIN, HELDOUT,
                     seed_attempts=SEED, generator=ScriptedGenerator(), trainer=RecordingTrainer())
    assert result.stages["r1.judge"]["judge_verifier_agreement"] == 1.0
    assert result.stages["r1.judge"]["accepted"] == ref.stages["r1.judge"]["accepted"] > 0


class CountingGenerator(ScriptedGenerator):
    """The scripted policy with a tokenizer (one token per word) that records each call's token budget."""

    def __init__(self):
        super().__init__(rule=lambda r, a, b, k, reflecting: reflecting)  # every refinement is right
        self.budgets: list[int] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages, images, *, n, temperature, max_new_tokens):
        self.budgets.append(max_new_tokens)
        return super().generate(messages, images, n=n, temperature=temperature, max_new_tokens=max_new_tokens)


def test_refinements_that_hit_the_token_budget_are_counted_and_never_accepted(tmp_path):
    # A scripted solution is 12 words; with 8 new tokens allowed every refinement stopped on its
    # budget, so none is trained, however right its (cut) answer reads.
    gen = CountingGenerator()
    cfg = scripted_config(tmp_path, rounds=1, reflect={"when": "every_round"}, generate={"max_new_tokens": 8})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=gen, trainer=RecordingTrainer())
    r1 = result.stages["r1.reflect"]
    assert r1["refined"] == result.stages["r1.judge"]["wrong"] > 0
    assert r1["verified"] == 0 and r1["truncated"] == r1["refined"]
    assert not [r for r in read_jsonl(tmp_path / "pool.jsonl") if r["source"] == "reflected"]


def test_reflection_asks_for_its_own_token_budget(tmp_path):
    gen = CountingGenerator()
    cfg = scripted_config(tmp_path, rounds=1, reflect={"when": "every_round", "max_tokens": 40},
                          generate={"max_new_tokens": 8})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=gen, trainer=RecordingTrainer())
    r1 = result.stages["r1.reflect"]
    assert r1["max_tokens"] == 40 and 40 in gen.budgets
    assert r1["truncated"] == 0 and r1["verified"] == r1["refined"] > 0


def test_paths_the_judge_cannot_decide_are_counted_not_reflected_on(tmp_path):
    # The ORM judge is down and its fallback is "none": every path is undecidable. None is pooled,
    # none is stored as wrong (nothing to reflect on), and the stage record says why.
    from mathse_rl.orm import Judge as OrmJudge
    from mathse_rl.orm import register_backend

    @register_backend("evolve_test_down")
    class Down(OrmJudge):
        def replies(self, items):
            raise ConnectionError("judge server down")

    cfg = scripted_config(tmp_path, judge="orm", judge_options={"backend": "evolve_test_down", "fallback": "none"},
                          rounds=1, reflect={"when": "every_round"})
    result = run_evolve(cfg, TRAIN, HELDOUT, seed_attempts=SEED, generator=ScriptedGenerator(),
                        trainer=RecordingTrainer())
    r1 = result.stages["r1.judge"]
    assert r1["accepted"] == 0 and r1["wrong"] == 0
    assert r1["undecidable"] == r1["judge_errors"] == r1["paths"] > 0
    assert result.stages["r1.reflect"]["refined"] == 0
