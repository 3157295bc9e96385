"""Judge configs, the backend registry, the failure policy and the rule-verifier judge."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mathse_rl.orm import JudgeConfig, judge_config, list_backends, load_judge
from mathse_rl.orm.backends.verifier import find_arithmetic_slip
from mathse_rl.types import RewardInput

RIGHT = "Step 1: The red bar is 5.\nStep 2: The blue bar is 7.\nStep 3: 5 + 7 = 12.\nThe answer to this problem is 12."
SLIP = "Step 1: The red bar is 5.\nStep 2: The blue bar is 7.\nStep 3: 5 + 7 = 13.\nThe answer to this problem is 13."
MISREAD = "Step 1: The red bar is 6.\nStep 2: The blue bar is 7.\nStep 3: 6 + 7 = 13.\nThe answer to this problem is 13."


def item(response, gold="12", **extra):
    return RewardInput(question="What is the sum of the bars?", response=response, gold=gold, extra=extra)


def test_config_from_dict_omegaconf_dataclass_and_unknown_keys():
    cfg = judge_config(OmegaConf.create({"backend": "openai", "endpoint": "http://x/v1", "model": "m"}), timeout=3)
    assert (cfg.backend, cfg.timeout, cfg.fallback) == ("openai", 3, "verifier")
    assert judge_config(JudgeConfig(batch_size=3)).batch_size == 3
    with pytest.raises(ValueError, match="known keys"):
        judge_config({"bakend": "local"})
    with pytest.raises(ValueError, match="fallback"):
        JudgeConfig(fallback="guess")


def test_registry_names_and_loud_errors_at_the_edge():
    assert {"local", "openai", "verifier"} <= set(list_backends())
    with pytest.raises(KeyError, match="known backends"):
        load_judge({"backend": "gpt-judge"})
    with pytest.raises(ValueError, match="needs `model`"):
        load_judge({"backend": "local"})
    with pytest.raises(ValueError, match="endpoint"):
        load_judge({"backend": "openai", "model": "m"})
    j = load_judge({"backend": "openai", "reward_router_address": "10.0.0.1:9000", "model": "orm"})
    assert j.url == "http://10.0.0.1:9000/v1/chat/completions"


def test_verifier_judge_names_the_step_where_it_can_tell():
    judge = load_judge({"backend": "verifier"})
    right, slip, misread, misread_ref = judge.judge([
        item(RIGHT), item(SLIP), item(MISREAD),
        item(MISREAD, reference_steps=["The red bar is 5.", "The blue bar is 7.", "5 + 7 = 12."]),
    ])
    assert right.correct and right.score == 1.0 and right.error_step is None
    assert (slip.status, slip.error_step) == ("WRONG", 3) and "5 + 7 is 12" in slip.error_analysis
    # a misread with consistent arithmetic cannot be located without a reference ...
    assert (misread.status, misread.error_step) == ("WRONG", None)
    assert "final answer does not match" in misread.error_analysis and "12" not in misread.error_analysis
    # ... but can with one
    assert (misread_ref.error_step, misread_ref.score) == (1, 0.0)


def test_verifier_judge_leaves_undecidable_items_unjudged():
    judge = load_judge({"backend": "verifier"})
    res = judge.judge_detailed([item(RIGHT, gold=None)])
    assert res[0].judgment is None and res[0].failure == "undecidable:no_gold"
    assert judge.counters["undecidable/no_gold"] == 1


def test_arithmetic_slips():
    assert find_arithmetic_slip(["2 * 3 + 4 = 10", "10 / 4 = 2.5"]) is None
    assert find_arithmetic_slip(["2 + 3 * 4 = 20"])[:2] == (1, "2 + 3 * 4 = 20")
    assert find_arithmetic_slip(["5 / 0 = 1"])[0] == 1
    assert find_arithmetic_slip(["x = 3", "the year 2024 = now"]) is None


def test_failure_policy_falls_back_to_the_verifier_and_counts_everything():
    judge = load_judge({"backend": "scripted-test"})
    res = judge.judge_detailed([
        item(RIGHT, reply='{"status": "CORRECT"}', p=0.83),
        item(SLIP, reply='{"status": "WRONG", "error_step": 3, "error_analysis": "slip"}'),
        item(RIGHT, reply="no idea"),            # unparsable -> verifier says CORRECT
        item(SLIP, reply="!timeout"),             # backend failure -> verifier says WRONG
    ])
    assert [r.source for r in res] == ["judge", "judge", "verifier", "verifier"]
    assert res[0].judgment.score == pytest.approx(0.83)  # P(CORRECT) from the backend
    assert res[2].judgment.correct and res[2].failure.startswith("parse:") and res[2].raw == "no idea"
    assert not res[3].judgment.correct and res[3].failure == "timeout"
    m = judge.metrics()
    assert m["orm/items"] == 4 and m["orm/judged"] == 2 and m["orm/parse_failures"] == 1
    assert m["orm/error/timeout"] == 1 and m["orm/fallback/verifier"] == 2 and m["orm/fallback_rate"] == 0.5


def test_fallback_none_returns_none_and_a_crashed_batch_does_not_raise():
    judge = load_judge({"backend": "scripted-test", "fallback": "none"})
    out = judge.judge([item(RIGHT, reply="garbage"), item(RIGHT, reply='{"status": "CORRECT"}')])
    assert out[0] is None and out[1].correct
    crashed = judge.judge([item(RIGHT, reply="RAISE"), item(SLIP, reply='{"status": "WRONG"}')])
    assert crashed == [None, None]
    assert judge.counters["error/exception:RuntimeError"] == 2 and judge.counters["fallback/none"] == 3


def test_a_fallback_judgment_is_marked_so_callers_can_filter_it():
    judge = load_judge({"backend": "scripted-test"})
    out = judge.judge([item(RIGHT, reply='{"status": "CORRECT"}'), item(RIGHT, reply="no idea"),
                       item(SLIP, reply="!http_500")])
    assert [j.source for j in out] == ["judge", "verifier", "verifier"]
    assert [j.fallback for j in out] == [False, True, True]
    own = [j for j in out if not j.fallback]
    assert len(own) == 1 and own[0].correct


SECRET = "sk-live-abcdef123456"


@pytest.mark.parametrize("cfg", [
    {"request_kwargs": {"api_key": SECRET, "top_p": 0.9}},
    {"request_kwargs": {"extra_headers": {"Authorization": f"Bearer {SECRET}"}}},
    {"request_kwargs": {"headers": {"X-Api-Key": SECRET}}},
    {"endpoint": f"https://user:{SECRET}@judge.example/v1"},
    {"endpoint": f"https://judge.example/v1?api_key={SECRET}&x=1"},
])
def test_secrets_are_masked_in_every_repr(cfg):
    c = judge_config({"backend": "openai", "model": "orm", "endpoint": "http://h/v1", **cfg})
    for text in (repr(c), str(c), repr(load_judge(c).config), f"{c!r}"):
        assert SECRET not in text and "***" in text, text
    assert SECRET in str(c.request_kwargs) + str(c.endpoint)  # the values themselves are kept for use
