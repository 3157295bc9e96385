"""One verdict per path: the reward a trainer trains on, the step's acceptance and the critic's
starting point come from the same judgment of the same text with the same options.

The corpus (``verdict_corpus.py``) holds what a policy writes to talk its way into a reward, plain
right and wrong answers, multiple choice with its options, no gold, an unreadable gold and a
verifier timeout. For every completion
reward(c) == 1.0 exactly when the judge accepts c, and reward(c) is None exactly when the judge
cannot decide (0.0 with ``undecidable_as_wrong``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mathse_rl.step import Critic, Judge, StepConfig, StepCounters, critique
from mathse_rl.types import Problem, Verdict

sys.path.insert(0, str(Path(__file__).parent))
from verdict_corpus import CORPUS, patch_timeouts  # noqa: E402


@pytest.fixture
def timeouts(monkeypatch):
    patch_timeouts(monkeypatch)


def problems():
    return [Problem(id=str(i), question="How many?", gold=g, choices=c) for i, (_, g, c, _) in enumerate(CORPUS)]


def trl_columns():
    return {"prompts": ["How many?"] * len(CORPUS), "completions": [c for c, *_ in CORPUS],
            "solution": [g for _, g, _, _ in CORPUS], "choices": [c for _, _, c, _ in CORPUS]}


def test_the_corpus_is_judged_as_written(timeouts):
    verdicts = Judge().judge(problems(), [c for c, *_ in CORPUS])
    assert [v.correct for v in verdicts] == [want for *_, want in CORPUS]


@pytest.mark.parametrize("undecidable_as_wrong", [False, True])
def test_trl_reward_is_one_exactly_when_the_step_judge_accepts(timeouts, undecidable_as_wrong):
    # What a recipe writes: reward_funcs=[verifier] beside the step's default judge.
    from mathse_rl.integrations.trl import make_reward_func
    from mathse_rl.integrations.trl.rewards import bind_judge_rewards

    judge = Judge(StepConfig(undecidable_as_wrong=undecidable_as_wrong))
    verdicts = judge.judge(problems(), [c for c, *_ in CORPUS])
    (reward,) = bind_judge_rewards([make_reward_func("verifier")], judge)
    rewards = reward(**trl_columns())
    for (completion, *_), r, v in zip(CORPUS, rewards, verdicts):
        assert (r == 1.0) == (v.correct is True), completion
        assert r == (0.0 if undecidable_as_wrong else None) if v.correct is None else r in (0.0, 1.0), completion


def test_the_plain_verifier_reward_decides_as_the_default_judge(timeouts):
    # Outside a trainer too: the registry's verifier (a training reward) reads answers as the step's judge.
    from mathse_rl.integrations.trl import make_reward_func

    verdicts = Judge().judge(problems(), [c for c, *_ in CORPUS])
    rewards = make_reward_func("verifier")(**trl_columns())
    assert [r == 1.0 for r in rewards] == [v.correct is True for v in verdicts]
    assert [r is None for r in rewards] == [v.correct is None for v in verdicts]


def test_a_reward_that_would_decide_differently_is_refused_naming_both_settings():
    from mathse_rl.integrations.trl import make_reward_func
    from mathse_rl.integrations.trl.rewards import bind_judge_rewards, format_reward

    judge = Judge(StepConfig())
    with pytest.raises(ValueError, match=r"reward_funcs\[0\] 'verifier' sets strict=False.*require_final_answer"):
        bind_judge_rewards([make_reward_func("verifier", strict=False), format_reward], judge)
    with pytest.raises(ValueError, match=r"reward_funcs 'orm'.*MathSEConfig.judge='verifier'"):
        bind_judge_rewards(make_reward_func("orm", backend="verifier"), judge)
    with pytest.raises(ValueError, match="timeout=3"):
        bind_judge_rewards([make_reward_func("verifier", timeout=3)], judge)
    # Options that agree, and shaping rewards beside the judge's, are fine.
    funcs = bind_judge_rewards([make_reward_func("verifier", strict=True, timeout=5.0), format_reward], judge)
    assert [f.__name__ for f in funcs] == ["verifier", "format"]
    lenient = Judge(StepConfig(require_final_answer=False))
    assert bind_judge_rewards([make_reward_func("verifier", strict=False)], lenient)[0].judge is lenient


def test_inside_the_trainer_the_reward_reuses_the_steps_verdicts_without_judging_again():
    from mathse_rl.integrations.trl import make_reward_func
    from mathse_rl.integrations.trl.rewards import bind_judge_rewards

    judge = Judge(StepConfig())
    (reward,) = bind_judge_rewards([make_reward_func("verifier")], judge)
    texts = [c for c, *_ in CORPUS]
    verdicts = judge.judge(problems(), texts)
    reward.remember(texts, verdicts)
    judge.judge = None  # judging again would fail: the remembered verdicts are the ones trained on
    assert reward(**trl_columns()) == [judge.reward_of(v) for v in verdicts]


# ----------------------------------------------------------------------------- the critic starts from the verdict
def test_the_verifier_critic_never_calls_correct_a_path_the_strict_judge_rejected():
    p = Problem(id="bars", question="How many bars are taller than 4?", gold="5")
    unstated = "Bars: 5, 6, 7, 8, 9.\nSo there are 5 bars."
    (verdict,) = Judge().judge([p], [unstated])
    assert verdict.correct is False and verdict.reason == "no_final_answer"
    counters = StepCounters()
    (c,) = critique(Critic({"backend": "verifier"}), [p], [unstated], verdicts=[verdict], counters=counters)
    assert c is not None and c.status == "WRONG" and c.score == 0.0
    assert "never states a final answer" in c.error_analysis
    assert counters["critiques"] == 1 and counters["critic_disagreed"] == 0


def test_a_critique_that_contradicts_the_judge_is_replaced_by_the_verdicts_and_counted():
    from mathse_rl.types import Judgment

    class Flattering:  # an ORM critic that finds the unstated answer fine
        def critique(self, problems, responses):
            return [Judgment(status="CORRECT", score=0.97) for _ in problems]

    p = Problem(id="bars", question="How many bars?", gold="5")
    (verdict,) = Judge().judge([p], ["So there are 5 bars."])
    counters = StepCounters()
    (c,) = critique(Flattering(), [p], ["So there are 5 bars."], verdicts=[verdict], counters=counters)
    assert c.status == "WRONG" and "never states a final answer" in c.error_analysis
    assert counters["critic_disagreed"] == 1


def test_an_orm_judges_verifier_fallback_reads_answers_as_strictly_as_the_judge():
    # A model judge that fails falls back on the rule verifier: with the judge's strictness.
    from mathse_rl.orm import Reply, register_backend
    from mathse_rl.orm import Judge as OrmJudge

    class Down(OrmJudge):
        def replies(self, items):
            return [Reply(error="connection") for _ in items]

    register_backend("one_verdict_down")(Down)
    p = Problem(id="q", question="How many bars?", gold="5")
    judge = Judge(StepConfig(judge="orm", judge_options={"backend": "one_verdict_down", "fallback": "verifier"}))
    unstated, stated = judge.judge([p, p], ["So there are 5 bars.", "The answer to this problem is 5."])
    assert (unstated.correct, stated.correct) == (False, True)
    lenient = Judge(StepConfig(judge="orm", require_final_answer=False,
                               judge_options={"backend": "one_verdict_down", "fallback": "verifier"}))
    assert lenient.judge([p], ["So there are 5 bars."])[0].correct is True


# ----------------------------------------------------------------------------- undecidable_as_wrong on the offline path
def test_undecidable_as_wrong_makes_a_decidable_gold_path_a_wrong_one_to_reflect_on(timeouts):
    slow = Problem(id="s", question="?", gold="7")
    no_gold = Problem(id="n", question="?", gold=None)
    for flag in (False, True):
        judge = Judge(StepConfig(undecidable_as_wrong=flag))
        timed_out, unscorable = judge.judge([slow, no_gold], [CORPUS[-1][0], "The answer to this problem is 5."])
        assert (timed_out.correct, unscorable.correct) == (None, None)
        assert judge.reflects_on(timed_out) is flag  # a refinement of it can still be verified
        assert judge.reflects_on(unscorable) is False  # never: nothing could verify a refinement
        assert judge.reward_of(timed_out) == (0.0 if flag else None)
    # The critic says why such a path is treated as wrong instead of declining to critique it.
    judge = Judge(StepConfig(undecidable_as_wrong=True))
    (v,) = judge.judge([slow], [CORPUS[-1][0]])
    (c,) = critique(Critic(), [slow], [CORPUS[-1][0]], verdicts=[v])
    assert c is not None and c.status == "WRONG" and "could not be checked" in c.error_analysis


@pytest.mark.parametrize("undecidable_as_wrong", [False, True])
def test_the_offline_loop_reflects_on_undecidable_paths_only_when_asked(tmp_path, undecidable_as_wrong):
    # The ORM judge is down with no fallback: every path is undecidable (judge_error), gold usable.
    sys.path.insert(0, str(Path(__file__).parents[1] / "evolve"))  # the offline loop's scripted parts
    from scripted_parts import RecordingTrainer, ScriptedGenerator, make_problems, scripted_config, seed_for

    from mathse_rl.evolve import run_evolve
    from mathse_rl.orm import Judge as OrmJudge
    from mathse_rl.orm import Reply, register_backend

    @register_backend("one_verdict_offline_down")
    class Down(OrmJudge):
        def replies(self, items):
            return [Reply(error="connection") for _ in items]

    train, heldout = make_problems(4), make_problems(2, prefix="h", start=10)
    cfg = scripted_config(tmp_path, judge="orm", judge_options={"backend": "one_verdict_offline_down",
                                                                "fallback": "none"},
                          rounds=1, reflect={"when": "every_round"}, undecidable_as_wrong=undecidable_as_wrong)
    result = run_evolve(cfg, train, heldout, seed_attempts=seed_for(train[:2]), generator=ScriptedGenerator(),
                        trainer=RecordingTrainer())
    judged = result.stages["r1.judge"]
    assert judged["accepted"] == 0 and judged["undecidable"] == judged["paths"] > 0
    assert judged["wrong"] == (judged["paths"] if undecidable_as_wrong else 0)
    assert (result.stages["r1.reflect"]["refined"] > 0) is undecidable_as_wrong


# ----------------------------------------------------------------------------- trl: the trainer's own reward path
@pytest.mark.parametrize("undecidable_as_wrong", [False, True])
def test_the_trainers_grpo_reward_is_the_steps_acceptance(tiny_vlm_path, tmp_path, monkeypatch, timeouts,
                                                          undecidable_as_wrong):
    """MathSETrainer(reward_funcs=[verifier, format], ...) as a recipe builds it; trl's own reward
    computation on the completions the step has just judged. A comparison that times out on its
    first try only ([flaky]) shows the reward is that judgment, not a second one."""
    import trl
    from datasets import Dataset

    import mathse_rl.verify as verify
    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy
    from mathse_rl.integrations.trl.rewards import format_reward

    corpus = CORPUS + [("The answer to this problem is 9. [flaky]", "9", None, None)]
    slow_once = verify.verify_batch
    tried: set[str] = set()

    def flaky(responses, golds, **kw):
        out = slow_once(responses, golds, **kw)
        for k, r in enumerate(responses):
            if "[flaky]" in r and r not in tried:
                tried.add(r)
                out[k] = Verdict(False, "9", "timeout")
        return out

    monkeypatch.setattr(verify, "verify_batch", flaky)
    rows = [{"prompt": [{"role": "user", "content": f"How many? ({i})"}], "solution": g,
             "choices": list(c) if c else None} for i, (_, g, c, _) in enumerate(corpus)]
    model, processor = load_policy(tiny_vlm_path)
    args = MathSEConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_steps=1,
                        per_device_train_batch_size=len(corpus), num_generations=len(corpus),
                        max_completion_length=8, reflect=False, disable_tqdm=True,
                        **({"undecidable_as_wrong": True} if undecidable_as_wrong else {}))
    trainer = MathSETrainer(model=model, reward_funcs=[make_reward_func("verifier"), format_reward], args=args,
                            train_dataset=Dataset.from_list(rows), processing_class=processor)
    tokenizer = processor.tokenizer

    def sampled(self, prompts):  # trl's generation, standing in: the corpus is what the policy wrote
        ids = [tokenizer.encode(c, add_special_tokens=False) + [tokenizer.eos_token_id] for c, *_ in corpus]
        return ([[1, 2]] * len(prompts), ids, None, [[{"role": "assistant", "content": c}] for c, *_ in corpus],
                None, {}, None, None)

    monkeypatch.setattr(trl.GRPOTrainer, "_generate", sampled)
    seen = []
    judge = trainer.judge.judge
    monkeypatch.setattr(trainer.judge, "judge", lambda *a, **kw: seen.append(judge(*a, **kw)) or seen[-1])
    trainer.model.train()
    inputs, prompts = [dict(r) for r in rows], [r["prompt"] for r in rows]
    trainer._mathse_inputs = inputs
    out = trainer._generate(prompts)
    accepted = list(trainer._mathse_rows["accepted"])
    rewards = trainer._calculate_rewards(inputs, prompts, out[3], out[1])[:, 0].tolist()

    (verdicts,) = seen  # the step judged once; the reward judged nothing again
    assert [v.correct for v in verdicts] == [want for *_, want in corpus]
    for (completion, *_), r, ok, v in zip(corpus, rewards, accepted, verdicts):
        assert (r == 1.0) == ok, completion
        if v.correct is None:
            assert (r == 0.0) if undecidable_as_wrong else r != r, completion  # NaN: trl leaves it out
    with pytest.raises(ValueError, match=r"reward_funcs\[0\] 'verifier' sets strict=False"):
        MathSETrainer(model=model, reward_funcs=[make_reward_func("verifier", strict=False)], args=args,
                      train_dataset=Dataset.from_list(rows), processing_class=processor)
