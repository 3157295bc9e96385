"""The HTTP judge client against a fault-injecting server on 127.0.0.1 (no model needed).

Each fault is one a long run meets: a server that drips bytes, throttles with Retry-After,
answers with a huge or garbage body, or fails; the client bounds every item by its deadline.
"""

from __future__ import annotations

import logging
import time

import pytest

from mathse_rl.orm import load_judge
from mathse_rl.orm.fault_server import FaultServer
from mathse_rl.types import RewardInput

WRONG = "Step 1: The red bar is 6.\nStep 2: 6 + 7 = 13.\nThe answer to this problem is 13."


def _items(n=1):
    return [RewardInput(question=f"Sum of 5 and 7? ({i})", response=WRONG, gold="12") for i in range(n)]


def _judge(endpoint, **kw):
    return load_judge({"backend": "openai", "endpoint": endpoint, "model": "m", "backoff": 0.01, **kw})


@pytest.fixture
def server():
    srv = FaultServer(drip_s=0.3, retry_after=1.0, fail_first=1, huge_bytes=3 << 20)
    yield srv
    srv.close()


def test_a_dripping_server_cannot_stretch_the_deadline(server):
    # One byte every 0.3 s never trips a per-read timeout of 1 s; the item's deadline must.
    judge = _judge(server.endpoint("drip"), timeout=1.0, max_retries=0, fallback="none")
    t0 = time.monotonic()
    res = judge.judge_detailed(_items(2))
    elapsed = time.monotonic() - t0
    assert [r.failure for r in res] == ["timeout", "timeout"]
    assert elapsed < 3.0, elapsed  # the deadline is 1 s; the old client waited for the whole drip (~60 s)


def test_retry_after_is_honoured_within_the_deadline(server):
    judge = _judge(server.endpoint("r429"), timeout=5.0, max_retries=3, concurrency=1)
    res = judge.judge_detailed(_items(1))
    assert res[0].source == "judge" and res[0].failure is None
    times = [t for mode, _, t in server.log]
    assert len(times) == 2 and times[1] - times[0] >= 0.95  # waited the server's 1 s, not the 0.01 s backoff


def test_retry_after_past_the_deadline_gives_up_at_once(server):
    server.retry_after = 30.0
    judge = _judge(server.endpoint("r503"), timeout=2.0, max_retries=3, fallback="none")
    t0 = time.monotonic()
    res = judge.judge_detailed(_items(1))
    assert res[0].failure == "http_503" and time.monotonic() - t0 < 2.0
    assert server.served() == 1  # no request in the 30 s the server asked for


def test_reply_size_is_capped(server):
    judge = _judge(server.endpoint("huge"), timeout=10.0, max_retries=0, max_reply_bytes=1 << 20, fallback="none")
    res = judge.judge_detailed(_items(1))
    assert res[0].failure == "reply_too_large"
    assert judge.counters["error/reply_too_large"] == 1


def test_garbage_and_500_fall_back_and_are_marked(server):
    for mode, kind in (("garbage", "malformed_response"), ("http500", "http_500")):
        judge = _judge(server.endpoint(mode), timeout=5.0, max_retries=1)
        (res,) = judge.judge_detailed(_items(1))
        assert res.failure == kind and res.source == "verifier"
        assert res.judgment.fallback and res.judgment.source == "verifier"


def test_secrets_in_the_url_and_request_kwargs_never_reach_a_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "sk-live-zz9988"
    judge = _judge(server.endpoint("http500") + f"?api_key={secret}", timeout=2.0, max_retries=0,
                   request_kwargs={"extra_headers": {"Authorization": f"Bearer {secret}"}})
    judge.judge_detailed(_items(1))
    assert caplog.records, "the failure is logged"
    assert secret not in caplog.text and secret not in repr(judge.config) and secret not in repr(judge)
