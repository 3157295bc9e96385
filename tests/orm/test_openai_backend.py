"""The HTTP judge against a real OpenAI-compatible server on 127.0.0.1 serving the tiny trained judge.

Faults are injected by the server's routes (see conftest): every one is counted, none
raises, and no item whose answer is wrong is ever scored 1.0.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from PIL import Image

from mathse_rl.orm import load_judge
from mathse_rl.orm.backends.openai import build_request
from mathse_rl.rewards import get_reward
from mathse_rl.types import RewardInput

WRONG = "Step 1: The red bar is 6.\nStep 2: The blue bar is 7.\nStep 3: 6 + 7 = 13.\nThe answer to this problem is 13."


def _wrong_items(n=3):
    return [RewardInput(question=f"The red bar is 5 and the blue bar is 7. Sum? ({i})", response=WRONG, gold="12",
                        images=(Image.new("RGB", (56, 56), (200, 30, 30)),)) for i in range(n)]


def _judge(server, prefix="", **kw):
    cfg = {"backend": "openai", "endpoint": f"{server.url}{prefix}/v1", "model": "orm", "timeout": 30.0,
           "max_retries": 1, "backoff": 0.01, "max_new_tokens": 40, "concurrency": 4, **kw}
    return load_judge(cfg)


def test_request_carries_images_as_data_urls():
    body = build_request(_wrong_items(1)[0], load_judge({"backend": "openai", "endpoint": "http://h/v1",
                                                         "model": "orm", "request_kwargs": {"top_p": 0.9}}).config)
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1]["type"] == "text" and "Step 1: The red bar is 6." in parts[1]["text"]
    assert body["model"] == "orm" and body["top_p"] == 0.9


def test_served_judge_answers_in_a_batch(judge_server, toy_items):
    items, labels = toy_items
    judge = _judge(judge_server)
    results = judge.judge_detailed(items)
    assert len(results) == len(items) and all(r.raw for r in results)  # every item got the model's text
    # the tiny judge's free-form JSON parses or not; either way each item is accounted for
    assert judge.counters["judged"] + judge.counters["parse_failures"] == len(items)
    assert not any(k.startswith(("error/", "attempt_error/")) for k in judge.counters.snapshot())
    for r in results:
        assert r.source == "judge" and r.failure is None or \
            r.source == "verifier" and r.failure.startswith("parse:")


@pytest.mark.parametrize("prefix, kind", [
    ("/http500", "http_500"),
    ("/hang", "timeout"),
    ("/malformed", "malformed_response"),
    ("/badshape", "malformed_response"),
    ("/auth", "http_401"),  # no key in the environment: not retried
])
def test_faults_are_counted_and_fall_back(judge_server, prefix, kind):
    items = _wrong_items(3)
    for fallback in ("verifier", "none"):
        judge = _judge(judge_server, prefix, fallback=fallback, timeout=0.5)
        t0 = time.monotonic()
        results = judge.judge_detailed(items)
        assert time.monotonic() - t0 < 20
        assert [r.failure for r in results] == [kind] * 3
        assert judge.counters[f"error/{kind}"] == 3
        retried = kind != "http_401"
        assert judge.counters[f"attempt_error/{kind}"] == (6 if retried else 3)
        if fallback == "verifier":
            assert all(r.source == "verifier" and r.judgment.status == "WRONG" and r.judgment.score == 0.0
                       for r in results)
            assert judge.counters["fallback/verifier"] == 3
        else:
            assert [r.judgment for r in results] == [None] * 3 and judge.counters["fallback/none"] == 3


def test_connection_refused_is_counted(free_port):
    judge = load_judge({"backend": "openai", "endpoint": f"http://127.0.0.1:{free_port}/v1", "model": "orm",
                        "max_retries": 2, "backoff": 0.01, "fallback": "none"})
    assert judge.judge(_wrong_items(2)) == [None, None]
    assert judge.counters["error/connection"] == 2 and judge.counters["retries"] == 4


def test_unparsable_completion_is_a_parse_failure(judge_server):
    judge = _judge(judge_server, "/junk")
    results = judge.judge_detailed(_wrong_items(2))
    assert all(r.failure == "parse:no status field found" and r.raw == "Looks fine to me!" for r in results)
    assert all(r.judgment.score == 0.0 for r in results)
    assert judge.counters["parse_failures"] == 2


def test_retries_recover_from_transient_errors(judge_server):
    judge = _judge(judge_server, "/flaky", max_retries=3, concurrency=1)
    results = judge.judge_detailed(_wrong_items(2))
    assert all(r.failure is None or r.failure.startswith("parse:") for r in results)
    assert judge.counters["attempt_error/http_503"] == 2 and judge.counters["retries"] == 2


def test_api_key_is_sent_from_the_environment_and_never_logged(judge_server, api_key_env, caplog):
    env_name, key = api_key_env
    caplog.set_level(logging.DEBUG)
    judge = _judge(judge_server, "/auth", api_key_env=env_name)
    results = judge.judge_detailed(_wrong_items(1))
    assert results[0].failure is None or results[0].failure.startswith("parse:")
    assert judge.counters["attempt_error/http_401"] == 0  # the server saw the right key
    assert key not in caplog.text and key not in repr(judge.config) and key not in str(judge.metrics())


def test_reward_is_async_and_configured_from_reward_kwargs(judge_server):
    reward = get_reward("orm", backend="openai", endpoint=judge_server.url + "/http500/v1", model="orm",
                        timeout=0.5, max_retries=0)
    assert reward.is_async
    outs = asyncio.run(reward.acall(_wrong_items(4)))
    assert [o.score for o in outs] == [0.0] * 4  # verifier fallback: wrong answers stay 0.0
    assert all(o.extras["source"] == "verifier" and o.extras["failure"] == "http_500" for o in outs)
    assert reward.metrics()["orm/error/http_500"] == 4


def test_verl_compute_score_reaches_the_served_judge_through_the_reward_router(judge_server):
    from mathse_rl.integrations.verl.scoring import compute_score_async

    before = judge_server.app.state.requests
    result = asyncio.run(compute_score_async(
        "toy", WRONG, "12", {"question": "The red bar is 5 and the blue bar is 7. Sum?"}, reward="orm",
        reward_options={"backend": "openai", "model": "orm", "timeout": 30, "max_new_tokens": 40},
        reward_router_address=f"127.0.0.1:{judge_server.port}"))
    assert judge_server.app.state.requests == before + 1
    assert result["scored"] and result["source"] in ("judge", "verifier")
    assert result["score"] < 1.0 or result["source"] == "judge"  # a fallback never passes a wrong answer
