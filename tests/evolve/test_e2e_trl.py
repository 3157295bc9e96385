"""The loop end to end on trl's machinery: the tiny VLM generates, trl's SFTTrainer fine-tunes.

The base model is first taught (a few SFT steps) to answer every solve prompt with 7, so the
rounds find correct paths for questions whose answer is 7 and wrong ones for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from scripted_parts import TeacherRefiner

from mathse_rl.evolve import load_config, run_evolve
from mathse_rl.evolve.pool import read_jsonl
from mathse_rl.prompts import build_solve_messages
from mathse_rl.types import Attempt, Problem

pytestmark = pytest.mark.slow
ANSWER = "The answer to this problem is 7."


def _p(pid: str, a: int, b: int, colour) -> Problem:
    return Problem(id=pid, question=f"What is {a} + {b}?", gold=str(a + b), images=(Image.new("RGB", (28, 28), colour),))


TRAIN = [_p("q0", 3, 4, (200, 0, 0)), _p("q1", 2, 5, (0, 200, 0)), _p("q2", 1, 6, (0, 0, 200)),
         _p("q3", 3, 5, (200, 200, 0))]
HELDOUT = [_p("h0", 4, 3, (0, 200, 200)), _p("h1", 4, 5, (200, 0, 200))]


@pytest.fixture(scope="module")
def sevens_vlm(tiny_vlm_path, tmp_path_factory):
    """The tiny VLM after 25 SFT steps of 'answer 7' on solve prompts."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.integrations.trl.backends import load_policy, save_policy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, processor = load_policy(tiny_vlm_path)
    rows = [{"images": list(p.images), "prompt": build_solve_messages(p),
             "completion": [{"role": "assistant", "content": ANSWER}]} for p in TRAIN]
    out = tmp_path_factory.mktemp("sevens")
    args = SFTConfig(output_dir=str(out / "work"), use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=4, max_steps=25, learning_rate=1e-2, lr_scheduler_type="constant",
                     save_strategy="no", max_length=None, seed=0, disable_tqdm=True, logging_steps=25)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    trainer.train()
    torch.set_num_threads(threads)
    return save_policy(trainer.model, processor, out / "model")


def _config(model: str, out: Path, **fields):
    base = {"model": model, "output_dir": str(out), "rounds": 2,
            "generate": {"n": 2, "temperature": 0.5, "max_new_tokens": 12, "batch_size": 8},
            "train": {"use_cpu": True, "max_steps": 2, "per_device_train_batch_size": 4,
                      "gradient_accumulation_steps": 1, "learning_rate": 1e-4},
            "eval": {"k": 2}, "tracking": {"report_to": ["console"], "progress": False}}
    for k, v in fields.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return load_config(**base)


def test_distill_rounds_reflection_final_fine_tune_on_trl(sevens_vlm, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seed = [Attempt("q0", f"Step 1: 3 + 4 = 7. {ANSWER}", "distilled")]
    result = run_evolve(_config(sevens_vlm, tmp_path), TRAIN, HELDOUT, seed_attempts=seed,
                        refiner=TeacherRefiner())
    torch.set_num_threads(threads)
    s = result.stages
    assert set(s) >= {"distill.train", "r1.train", "r2.train", "reflect", "final.train", "final.eval"}
    # M0 answers 7: q1 and q2 (answer 7) are solved in round 1, q3 (answer 8) never is.
    assert s["r1.generate"]["questions_attempted"] == 3
    assert s["r1.judge"]["questions_solved"] == 2
    assert s["r2.generate"]["questions_attempted"] == 1 and s["r2.judge"]["accepted"] == 0
    # The teacher's reflections on q3's wrong paths are verified and join the pool.
    assert s["reflect"]["wrong_paths"] == s["r1.judge"]["wrong"] + s["r2.judge"]["wrong"] > 0
    assert s["reflect"]["verified"] > 0 and s["reflect"]["questions_rescued"] == 1
    pool = read_jsonl(tmp_path / "pool.jsonl")
    assert result.pool_counts["distilled"] == 1 and result.pool_counts["sampled"] >= 2
    assert result.pool_counts["reflected"] == s["reflect"]["added"] >= 1
    assert {r["problem_id"] for r in pool if r["source"] == "reflected"} == {"q3"}
    # Each fine-tune is a real trl SFT run saved as a loadable checkpoint; the final one trains on the whole pool.
    for name in ("m0", "r1", "r2", "final"):
        info = json.loads((tmp_path / "checkpoints" / name / "mathse_train.json").read_text())
        assert info["steps"] == 2 and info["last_loss"] is not None
        assert (tmp_path / "checkpoints" / name / "config.json").exists()
    assert s["final.train"]["rows"] == len(pool) and s["final.train"]["rows_by_source"] == result.pool_counts
    # Held-out greedy accuracy: h0 (7) right, h1 (9) wrong.
    assert [h["accuracy"] for h in result.heldout][:1] == [0.5]
    assert all("pass@2" in h for h in result.heldout)
    # Console metrics were logged for every stage, with pool sizes by source.
    logged = [m["stage"] for m in result.metrics]
    assert logged == list(s) and all("pool/reflected" in m for m in result.metrics)


def test_policy_refiner_writes_reflections_with_the_hf_generator(sevens_vlm):
    from mathse_rl.evolve.components import PolicyRefiner, get_generator
    from mathse_rl.types import Judgment

    cfg = _config(sevens_vlm, Path("unused"))
    gen = get_generator("hf", cfg, sevens_vlm)
    outs = PolicyRefiner(gen).refine(TRAIN[3:], ["The answer to this problem is 7."],
                                     [Judgment("WRONG", 1, error_analysis="3 + 5 is not 7.")],
                                     n=2, temperature=0.7, max_new_tokens=8, template="paper")
    assert len(outs) == 1 and len(outs[0]) == 2 and all(isinstance(o, str) for o in outs[0])


def test_cli_runs_a_recipe_and_resumes(tiny_vlm_path, tmp_path, capsys):
    from mathse_rl.cli import main

    rows = []
    for p in TRAIN:
        img = tmp_path / f"{p.id}.png"
        p.images[0].save(img)
        rows.append({"id": p.id, "question": p.question, "answer": p.gold, "images": [img.name]})
    rows.append({"id": "broken", "question": "What is 1 + 1?", "answer": "2", "images": ["nope.png"]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    args = ["evolve", "--config", str(root / "recipes" / "trl" / "tiny_cpu.yaml"),
            f"model={tiny_vlm_path}", f"data.train={tmp_path / 'train.jsonl'}", f"output_dir={out}",
            "rounds=1", "generate.n=1", "generate.max_new_tokens=4", "reflect.enabled=false", "eval.enabled=false",
            "distill_train=false", "tracking.progress=false"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "broken (unreadable image" in captured.err
    summary = json.loads(captured.out[captured.out.index("{\n"):])
    assert summary["output_dir"] == str(out)
    stages = [r["stage"] for r in read_jsonl(out / "stages.jsonl")]
    assert stages[:3] == ["distill.judge", "distill.eval", "r1.generate"] and "r1.train" in stages
    # Resume has nothing left to do; a plain re-run refuses to overwrite the started run.
    assert main(args + ["--resume"]) == 0
    assert [r["stage"] for r in read_jsonl(out / "stages.jsonl")] == stages
    with pytest.raises(FileExistsError, match="resume"):
        main(args)
