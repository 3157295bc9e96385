"""The ORM as a named reward: ``orm``, ``orm_gated`` and composites such as ``verifier+orm``."""

from __future__ import annotations

import asyncio

from mathse_rl.rewards import get_reward, list_rewards
from mathse_rl.types import RewardInput

# "scripted-test" (tests/orm/conftest.py) answers each sample with its extra["reply"].
RIGHT = "Step 1: The red bar is 5.\nStep 2: The blue bar is 7.\nStep 3: 5 + 7 = 12.\nThe answer to this problem is 12."
SLIP = "Step 1: The red bar is 5.\nStep 2: The blue bar is 7.\nStep 3: 5 + 7 = 13.\nThe answer to this problem is 13."


def sample(response, reply, gold="12"):
    return RewardInput(question="What is the sum of the bars?", response=response, gold=gold, extra={"reply": reply})


def test_orm_is_registered_and_scores_with_extras():
    assert {"orm", "orm_gated"} <= set(list_rewards())
    reward = get_reward("orm", backend="scripted-test")
    outs = reward([sample(RIGHT, '{"status": "CORRECT"}'), sample(SLIP, '{"status": "WRONG", "error_step": 3}'),
                   sample(RIGHT, "???")])
    assert [o.score for o in outs] == [1.0, 0.0, 1.0]
    assert outs[1].extras == {"status": "WRONG", "error_step": 3, "source": "judge", "failure": None}
    assert outs[2].extras["source"] == "verifier" and outs[2].extras["failure"].startswith("parse:")
    assert list(outs[0].extras) == list(reward.extras_keys)


def test_nothing_unjudged_scores_one():
    reward = get_reward("orm", backend="scripted-test", fallback="none")
    outs = reward([sample(RIGHT, "!http_500"), sample(RIGHT, "not json")])
    assert [o.score for o in outs] == [None, None]
    assert reward.metrics()["orm/fallback/none"] == 2


def test_gated_asks_the_judge_only_where_the_verifier_passes(scripted_calls):
    reward = get_reward("orm_gated", backend="scripted-test")
    before = scripted_calls()
    outs = reward([
        sample(SLIP, '{"status": "CORRECT"}'),                    # verifier rejects: judge not asked
        sample(RIGHT, '{"status": "WRONG", "error_step": 2}'),    # right answer, wrong reasoning: caught
        sample(RIGHT, '{"status": "CORRECT"}'),
        sample(RIGHT, '{"status": "CORRECT"}', gold=None),        # verifier cannot decide: judge decides
    ])
    assert scripted_calls() - before == 3
    assert [o.score for o in outs] == [0.0, 0.0, 1.0, 1.0]
    assert [o.extras["gate"] for o in outs] == ["rejected", "judged", "judged", "judged"]
    assert outs[3].extras["verifier"] == "no_gold"
    again = asyncio.run(reward.acall([sample(RIGHT, '{"status": "WRONG"}'), sample(SLIP, "x")]))
    assert [o.score for o in again] == [0.0, 0.0]


def test_verifier_plus_orm_is_the_gated_reward_and_weighted_sums_still_compose():
    gated = get_reward("verifier+orm", backend="scripted-test")
    assert type(gated).__name__ == "GatedORMReward" and gated.name == "verifier+orm"
    assert [o.score for o in gated([sample(RIGHT, '{"status": "WRONG", "error_step": 1}')])] == [0.0]
    summed = get_reward("0.5*verifier+0.5*orm", orm={"backend": "scripted-test"})
    assert summed.is_async
    outs = summed([sample(RIGHT, '{"status": "WRONG", "error_step": 1}')])
    assert outs[0].score == 0.5 and outs[0].extras["orm/status"] == "WRONG"


def test_shared_judge_per_configuration():
    a = get_reward("orm", backend="scripted-test", batch_size=3)
    b = get_reward("orm", backend="scripted-test", batch_size=3)
    c = get_reward("orm", backend="scripted-test", batch_size=4)
    assert a.judge is b.judge and a.judge is not c.judge
