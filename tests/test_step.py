"""The MathSE step: one judge (tri-state verdicts), critiques, reflection within a token budget, counters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mathse_rl.orm import Reply, register_backend
from mathse_rl.orm import Judge as OrmJudge
from mathse_rl.orm import render_judgment
from mathse_rl.step import (
    Critic, Generation, Judge, ReflectItem, ReflectOptions, StepConfig, StepCounters, TokenBudget,
    areflect_and_rejudge, critique, granted_tokens, judge_reward_options, reflect_and_rejudge, step_config,
)
from mathse_rl.types import Judgment, Problem

Q = Problem(id="q1", question="What is 5 + 7?", gold="12", data_source="toy")
RIGHT = "Step 1: 5 + 7 = 12.\nThe answer to this problem is 12."
WRONG = "Step 1: 5 + 7 = 13.\nThe answer to this problem is 13."


# ----------------------------------------------------------------------------- an ORM backend for tests
class ScriptedORM(OrmJudge):
    """Answers each item with a scripted (status, P(CORRECT)); records every batch it was asked."""

    script: dict[str, tuple[str, float]] = {}
    batches: list[int] = []
    fail = False

    def replies(self, items):
        type(self).batches.append(len(items))
        if type(self).fail:
            raise ConnectionError("judge server down")
        out = []
        for it in items:
            status, p = type(self).script.get(it.response, ("WRONG", 0.1))
            j = Judgment(status=status, error_step=None if status == "CORRECT" else 1,
                         error_analysis="" if status == "CORRECT" else "5 + 7 is not 13.")
            out.append(Reply(text=render_judgment(j), p_correct=p))
        return out


register_backend("step_test_scripted")(ScriptedORM)


@pytest.fixture
def scripted():
    ScriptedORM.script, ScriptedORM.batches, ScriptedORM.fail = {}, [], False
    yield ScriptedORM
    ScriptedORM.script, ScriptedORM.batches, ScriptedORM.fail = {}, [], False


def orm_judge(**extra) -> Judge:
    return Judge(StepConfig(judge="orm", judge_options={"backend": "step_test_scripted", "fallback": "none"},
                            **extra))


# ----------------------------------------------------------------------------- acceptance rule
def test_composite_with_format_does_not_accept_a_wrong_well_formatted_answer():
    # verifier+format sums to 1.0 for a wrong answer in the right form; the verifier decides.
    from mathse_rl.evolve import Judge as EvolveJudge  # what the offline loop builds from `judge: verifier+format`

    judge = EvolveJudge("verifier+format")
    right, wrong = judge.judge([Q, Q], [RIGHT, WRONG])
    assert wrong.score == 1.0 and wrong.correct is False
    assert right.score == 2.0 and right.correct is True


def test_weighted_composite_is_decided_by_its_verifier_part():
    judge = Judge(StepConfig(judge="0.1*verifier+0.9*format"))
    assert [v.correct for v in judge.judge([Q, Q], [RIGHT, WRONG])] == [True, False]


def test_a_shaping_reward_alone_cannot_be_the_judge():
    with pytest.raises(ValueError, match="cannot decide correctness"):
        Judge(StepConfig(judge="format"))


def test_orm_status_decides_not_its_score(scripted):
    scripted.script = {WRONG: ("WRONG", 0.9), RIGHT: ("CORRECT", 0.2)}
    judge = orm_judge()
    wrong, right = judge.judge([Q, Q], [WRONG, RIGHT])
    assert (wrong.correct, wrong.score) == (False, 0.9)
    assert (right.correct, right.score) == (True, 0.2)
    assert wrong.judgment is not None and wrong.judgment.error_step == 1  # kept as the critique


# ----------------------------------------------------------------------------- undecidable
def test_no_gold_is_undecidable_counted_and_not_trained_as_wrong_unless_asked():
    no_gold = Problem(id="q2", question="?", gold=None, data_source="toy")
    counters = StepCounters()
    judge = Judge()
    (v,) = judge.judge([no_gold], [RIGHT], counters=counters)
    assert v.correct is None and v.reason == "no_gold"
    assert not judge.trains_as_wrong(v)
    assert Judge(StepConfig(undecidable_as_wrong=True)).trains_as_wrong(v)
    assert counters["undecidable"] == 1 and counters["accepted"] == 0


def test_verifier_timeout_is_undecidable(monkeypatch):
    import mathse_rl.verify as verify
    from mathse_rl.types import Verdict

    monkeypatch.setattr(verify, "verify_batch", lambda rs, gs, **kw: [Verdict(False, "x", "timeout") for _ in rs])
    (v,) = Judge().judge([Q], [RIGHT])
    assert v.correct is None and v.reason == "timeout"


def test_judge_failure_is_undecidable_and_counted(scripted):
    scripted.fail = True
    counters = StepCounters()
    (v,) = orm_judge().judge([Q], [RIGHT], counters=counters)
    assert v.correct is None and v.judge_error
    assert counters["judge_errors"] == 1 and counters["undecidable"] == 1


# ----------------------------------------------------------------------------- async, batched
def test_ajudge_does_not_block_the_event_loop(monkeypatch):
    # The verifier waits for an event that only a coroutine on the same loop sets: a judge
    # that blocked the loop would wait out its 5 s and report it.
    import mathse_rl.verify as verify
    from mathse_rl.types import Verdict

    released = threading.Event()
    seen = []

    def slow_batch(responses, golds, **kw):
        seen.append(released.wait(timeout=5))
        return [Verdict(True, "12", "exact") for _ in responses]

    monkeypatch.setattr(verify, "verify_batch", slow_batch)

    async def main():
        async def release():
            await asyncio.sleep(0)
            released.set()

        verdicts, _ = await asyncio.gather(Judge().ajudge([Q], [RIGHT]), release())
        return verdicts

    (v,) = asyncio.run(main())
    assert v.correct is True and seen == [True]


def test_concurrent_single_path_calls_share_one_orm_batch(scripted):
    scripted.script = {RIGHT: ("CORRECT", 0.9)}
    judge = orm_judge(batch_window_ms=20.0)
    counters = StepCounters()

    async def main():
        return await asyncio.gather(*(judge.ajudge_one(Q, RIGHT if k % 2 else WRONG, counters=counters)
                                      for k in range(6)))

    verdicts = asyncio.run(main())
    assert [v.correct for v in verdicts] == [False, True] * 3
    assert scripted.batches == [6]
    assert counters["paths"] == 6 and counters["accepted"] == 3


# ----------------------------------------------------------------------------- config
def test_one_vocabulary_with_defaults_and_loud_unknown_keys():
    cfg = step_config({"judge": "orm", "reflect": {"enabled": False, "attempts": 2, "max_tokens": 256}})
    assert (cfg.reflect.enabled, cfg.reflect.attempts, cfg.reflect.max_tokens) == (False, 2, 256)
    assert (cfg.undecidable_as_wrong, cfg.require_final_answer) == (False, True)
    with pytest.raises(Exception, match="enable"):
        step_config({"reflect": {"enable": True}})  # one spelling: `enabled`


def test_require_final_answer_reaches_the_verifier_as_strict(monkeypatch):
    from mathse_rl.rewards.builtin import VerifierReward

    assert judge_reward_options(StepConfig())["strict"] is True
    assert judge_reward_options(StepConfig(judge="verifier+format"))["verifier"] == {"strict": True}
    assert judge_reward_options(StepConfig(require_final_answer=False))["strict"] is False
    got = {}
    original = VerifierReward.__init__

    def init(self, timeout: float = 5.0, strict: bool = False):  # a verifier that takes `strict`
        got["strict"] = strict
        original(self, timeout)

    monkeypatch.setattr(VerifierReward, "__init__", init)
    Judge(StepConfig(judge="verifier+format"))
    assert got == {"strict": True}


def test_an_orm_judge_defaults_to_the_critic_config_and_format_is_not_an_orm():
    cfg = StepConfig(judge="orm", critic={"backend": "local", "model": "/ckpt"})
    assert judge_reward_options(cfg) == {"backend": "local", "model": "/ckpt"}
    assert "backend" not in judge_reward_options(StepConfig(judge="verifier+format"))


# ----------------------------------------------------------------------------- critique
def test_critic_failure_gives_no_critique_and_is_counted():
    class Broken:
        def critique(self, problems, responses):
            raise TimeoutError("critic timed out")

    counters = StepCounters()
    assert critique(Broken(), [Q, Q], [WRONG, WRONG], counters=counters) == [None, None]
    assert counters["critic_errors"] == 2


def test_rule_critic_names_the_wrong_step():
    (c,) = critique(Critic(), [Q], [WRONG])
    assert c is not None and not c.correct and c.error_step == 1


def test_an_orm_judges_own_judgment_is_the_critique(scripted):
    judge = orm_judge()
    verdicts = judge.judge([Q], [WRONG])
    calls = len(scripted.batches)

    class NeverCalled:
        def critique(self, problems, responses):
            raise AssertionError("the judge's own critique should be used")

    (c,) = critique(NeverCalled(), [Q], [WRONG], verdicts=verdicts)
    assert c is verdicts[0].judgment and len(scripted.batches) == calls


# ----------------------------------------------------------------------------- reflect and re-judge
class Engine:
    """A generate function: scripted replies, records each request's budget."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []

    def __call__(self, requests):
        self.requests.extend(requests)
        out = []
        for _ in requests:
            r = self.replies.pop(0)
            out.append(r)
        return out


def items(n=1):
    return [ReflectItem(Q, WRONG, None, key=k) for k in range(n)]


def test_every_reflection_request_carries_max_tokens_and_a_verified_one_is_accepted():
    engine = Engine(Generation(RIGHT, "stop", 20))
    counters = StepCounters()
    (out,) = reflect_and_rejudge(Judge(), items(), engine, TokenBudget(max_tokens=128), counters=counters)
    assert out.accepted and out.status == "verified" and out.item.key == 0
    assert [r.max_tokens for r in engine.requests] == [128]
    assert "certainly wrong" in engine.requests[0].messages[-1]["content"]
    assert counters["reflected"] == 1 and counters["refine_verified"] == 1 and counters["accepted"] == 1


def test_a_truncated_refinement_is_never_accepted_even_with_a_right_answer():
    # finish reason "length": the engine cut it at max_tokens; or (finish reason unknown) max_tokens written
    engine = Engine(Generation(RIGHT, "length", 64), Generation(RIGHT, None, 64))
    counters = StepCounters()
    outs = reflect_and_rejudge(Judge(), items(2), engine, TokenBudget(max_tokens=64), counters=counters)
    assert [o.status for o in outs] == ["truncated", "truncated"]
    assert not any(o.accepted for o in outs)
    assert counters["truncated"] == 2 and counters["accepted"] == 0


def test_a_reflection_prompt_that_does_not_fit_the_context_is_skipped_and_counted():
    engine = Engine()
    counters = StepCounters()
    budget = TokenBudget(max_tokens=2048, context_limit=4096, count_tokens=lambda messages, images: 3000)
    (out,) = reflect_and_rejudge(Judge(), items(), engine, budget, counters=counters)
    assert out.status == "too_long" and engine.requests == []
    assert counters["reflect_too_long"] == 1


def test_generation_errors_are_caught_and_counted():
    def broken(requests):
        raise RuntimeError("engine died")

    counters = StepCounters()
    outs = reflect_and_rejudge(Judge(), items(2), broken, TokenBudget(max_tokens=32), counters=counters)
    assert [o.status for o in outs] == ["error", "error"] and counters["generate_errors"] == 2
    # one request failing among others: only that one is an error
    engine = Engine(RuntimeError("one request failed"), Generation(RIGHT, "stop", 9))
    outs = reflect_and_rejudge(Judge(), items(2), engine, TokenBudget(max_tokens=32))
    assert [o.status for o in outs] == ["error", "verified"]


def test_attempts_stop_at_the_first_verified_refinement_with_a_fresh_critique():
    engine = Engine(Generation(WRONG.replace("13", "14"), "stop", 9), Generation(RIGHT, "stop", 9))
    counters = StepCounters()
    (out,) = reflect_and_rejudge(Judge(), items(), engine, TokenBudget(max_tokens=32), critic=Critic(),
                                 options=ReflectOptions(attempts=3), counters=counters)
    assert out.status == "verified" and out.attempts == 2 and len(engine.requests) == 2
    assert "5 + 7 = 14" in engine.requests[1].messages[-1]["content"]  # reflects on the rejected refinement
    assert counters["refine_rejected"] == 1 and counters["critiques"] == 1


def test_async_reflection_with_an_async_token_counter():
    async def generate(requests):
        return [Generation(RIGHT, "stop", 5) for _ in requests]

    async def count(messages, images):
        return 10

    budget = TokenBudget(max_tokens=32, context_limit=64, count_tokens=count)
    (out,) = asyncio.run(areflect_and_rejudge(Judge(), items(), generate, budget))
    assert out.accepted


def test_engine_grant_rules():
    # verl's vLLM server: max(1, min(max_tokens, context - prompt)); SGLang: one token less, down to 0
    assert granted_tokens(3000, 2048, 4096, "vllm") == 1096
    assert granted_tokens(4095, 2048, 4096, "vllm") == 1
    assert granted_tokens(4096, 2048, 4096, "vllm") == 0
    assert granted_tokens(4095, 2048, 4096, "sglang") == 0
    assert granted_tokens(100, 2048, 4096, "sglang") == 2048
    assert TokenBudget(2048, 4096).fits(2048) and not TokenBudget(2048, 4096).fits(2049)


# ----------------------------------------------------------------------------- counters
def test_counters_merge_and_log_per_source():
    a, b = StepCounters(), StepCounters()
    a.add("paths", 4, source="geo")
    a.add("reflected", 2, source="geo")
    a.add("refine_verified", 1, source="geo")
    a.add("accepted", 3, source="geo")
    b.add("paths", 4, source="chart")
    b.add("accepted", 1, source="chart")
    merged = StepCounters.from_counts(a.to_counts()).merge(b)
    m = merged.as_metrics()
    assert m["mathse/paths"] == 8 and m["mathse/accepted_frac"] == 0.5
    assert m["mathse/geo/refine_rate"] == 0.5 and m["mathse/geo/refine_verified_rate"] == 0.5
    assert m["mathse/chart/accepted_frac"] == 0.25
    with pytest.raises(KeyError):
        a.add("no_such_counter")


def test_require_final_answer_rejects_an_unstated_answer_and_can_be_turned_off():
    unstated = "Step 1: 5 + 7 = 12"
    (strict,) = Judge().judge([Q], [unstated])
    (lenient,) = Judge(StepConfig(require_final_answer=False)).judge([Q], [unstated])
    assert strict.correct is False and strict.reason == "no_final_answer"
    assert lenient.correct is True


def test_counters_time_each_part_of_the_step():
    counters = StepCounters()
    judge = Judge()
    judge.judge([Q], [WRONG], counters=counters)
    crit = critique(Critic(), [Q], [WRONG], counters=counters)
    reflect_and_rejudge(judge, [ReflectItem(Q, WRONG, crit[0])], Engine(Generation(RIGHT, "stop", 9)),
                        TokenBudget(max_tokens=32), counters=counters)
    m = StepCounters.from_counts(counters.to_counts()).as_metrics()
    assert all(m[f"mathse/seconds/{part}"] > 0 for part in ("judge", "critique", "generate"))
    assert "mathse/seconds/paths" not in m and m["mathse/paths"] == 1.0


def test_an_override_replaces_a_field_whole():
    cfg = step_config({"judge": "orm", "judge_options": {"backend": "local"}}, judge="verifier", judge_options={})
    assert (cfg.judge, cfg.judge_options) == ("verifier", {})
    assert step_config(None, reflect={"attempts": 3}).reflect.template == "paper"


def test_no_gold_is_undecidable_for_an_orm_judge_too_without_asking_it(scripted):
    scripted.script = {RIGHT: ("CORRECT", 0.9)}
    unreadable = Problem(id="q3", question="?", gold="\\boxed{}")
    verdicts = orm_judge().judge([Q, unreadable], [RIGHT, RIGHT])
    assert [(v.correct, v.reason) for v in verdicts] == [(True, "correct"), (None, "no_gold")]
    assert scripted.batches == [1]


def test_seconds_of_merged_counters_are_the_longest_part_not_the_sum():
    # Eight processes (or a worker's concurrent samples) spend their seconds at the same time: the
    # step took as long as the slowest one, not eight times as long. Counts still add up.
    merged = StepCounters()
    for seconds in (1.0, 3.0, 2.0):
        part = StepCounters()
        part.add_seconds("judge", seconds)
        part.add_seconds("judge", 0.5)  # within one process the parts of a step add up
        part.add("paths", 2)
        merged.merge(part.to_counts())
    m = merged.as_metrics()
    assert m["mathse/seconds/judge"] == 3.5 and m["mathse/paths"] == 6.0
