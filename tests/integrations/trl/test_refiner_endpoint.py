"""MathSETrainer reflecting through a teacher endpoint (``reflect_refiner=openai``, the offline loop's
refiner and config keys), and the options of a multiple-choice row reaching the judge, the reward and
the reflection prompt online."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from mathse_rl.types import Problem
from trl_parts import REFLECT_ANSWER, make_trainer, rows as _rows

MC = Problem("mc", "Add the heights of the red and blue bars.", "B", images=(Image.new("RGB", (56, 56)),),
             choices=("5", "7", "9", "11"))
FREE = Problem("free", "Add the heights of the red and blue bars.", "12", images=(Image.new("RGB", (56, 56)),))


def test_the_online_dataset_carries_choices_to_judge_reward_and_reflection():
    from mathse_rl.integrations.trl import MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.trainer import online_dataset
    from mathse_rl.prompts import build_reflect_messages

    ds = online_dataset([MC, FREE])
    assert ds[0]["choices"] == ["5", "7", "9", "11"] and ds[1]["choices"] is None
    # the reward: a numeric answer to a multiple-choice question is judged against its option
    reward = make_reward_func("verifier")
    rows = [ds[0], ds[0]]
    scores = reward(prompts=[r["prompt"] for r in rows], completions=["The answer to this problem is 7.",
                                                                      "The answer to this problem is 9."],
                    **{k: [r[k] for r in rows] for k in ("solution", "choices", "question", "id")})
    assert scores == [1.0, 0.0]
    # the step's problem (judge, critique, reflection prompt) sees the options
    fake = SimpleNamespace(args=SimpleNamespace(gold_column=None, question_column="question"))
    problem = MathSETrainer._problem(fake, ds[0], ds[0]["prompt"])
    assert problem.choices == ("5", "7", "9", "11") and problem.gold == "B"
    content = build_reflect_messages(problem, "The answer to this problem is 9.", None)[0]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    assert "Options: A. 5  B. 7  C. 9  D. 11" in text


def test_an_endpoint_refiner_needs_its_url(tmp_path):
    from mathse_rl.integrations.trl import MathSEConfig

    with pytest.raises(ValueError, match="base_url"):
        MathSEConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, reflect_refiner="openai")
    with pytest.raises(ValueError, match="reflect_attempts"):
        MathSEConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, reflect_refiner="openai",
                     reflect_openai={"base_url": "http://127.0.0.1:9/v1"}, reflect_attempts=2)


@pytest.mark.slow
def test_refinements_come_from_the_teacher_endpoint_and_train_like_samples(taught_vlm, tmp_path):
    """The endpoint answers 7 to every reflection: gold-7 rows are verified, gold-5 rows rejected, and the
    verified refinement is the endpoint's text in the policy's tokens, ending with its end token."""
    from mathse_rl.orm.fault_server import FaultServer

    with FaultServer(reply=REFLECT_ANSWER) as srv:
        trainer = make_trainer(taught_vlm, tmp_path / "t", "rft", reflect_refiner="openai",
                               reflect_openai={"base_url": srv.endpoint("ok"), "model": "teacher"})
        batch = [dict(r) for r in _rows() for _ in range(trainer.num_generations)]
        trainer.model.train()
        out = trainer._generate_and_score_completions(batch)
        served = srv.served("ok")
    keys = [r["id"] for r in batch]
    assert served == 4  # the four failed rows (two "seven", two "five") went to the endpoint
    assert out["mathse_refined"].tolist() == [k == "seven" for k in keys]
    assert out["mathse_weight"].tolist() == [0.0 if k == "five" else 1.0 for k in keys]
    i = keys.index("seven")
    ids = out["completion_ids"][i][out["completion_mask"][i].bool()].tolist()
    assert trainer.processing_class.decode(ids, skip_special_tokens=True).strip() == REFLECT_ANSWER
    assert ids[-1] in trainer.eos_token_ids
    m = trainer._metrics["train"]
    assert m["mathse/refine_verified"][-1] == 2.0 and m["mathse/reflected"][-1] == 4.0
