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


# --- limits of the client (issue: secrets, what is sent, parsing inside the deadline, one client) ---

def _strings(obj, seen=None):
    """Every string reachable from ``obj``'s attributes, containers and slots."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, bytes):
        yield obj.decode("latin-1")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k, seen)
            yield from _strings(v, seen)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            yield from _strings(v, seen)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
        if type(obj).__module__.startswith(("mathse_rl", "tests", "test_")) or "mathse" in type(obj).__module__:
            for name in getattr(obj, "__dict__", {}):
                yield from _strings(getattr(obj, name), seen)
            for name in getattr(type(obj), "__slots__", ()):
                yield from _strings(getattr(obj, name, None), seen)


def test_a_secret_in_the_url_is_sent_but_never_kept_in_clear():
    import pickle

    secret = "sk-live-in-url-7788"
    with FaultServer(record=True) as srv:
        judge = _judge(srv.endpoint("ok") + f"?api_key={secret}&region=eu", timeout=5.0, max_retries=0,
                       request_kwargs={"top_p": 0.9, "api_key": secret})
        res = judge.judge_detailed(_items(1))
        assert res[0].source == "judge"
        path, body = srv.requests[0]
        assert f"api_key={secret}" in path and "region=eu" in path  # the server got the real URL
        assert body["api_key"] == secret and body["top_p"] == 0.9  # and the real request fields
    assert secret not in judge.url and "api_key=***" in judge.url
    assert not [s for s in _strings(judge) if secret in s]  # no attribute holds it in clear
    assert secret.encode() not in pickle.dumps(judge.config)


def test_only_data_urls_and_allow_listed_files_are_sent(tmp_path):
    from PIL import Image

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    Image.new("RGB", (8, 8), (0, 200, 0)).save(allowed / "ok.png")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(outside / "private.png")
    (allowed / "link.png").symlink_to(outside / "private.png")
    images = ["https://example.com/bar.png", "http://127.0.0.1:1/x.png", "file:///etc/passwd",
              str(outside / "private.png"), str(allowed / "link.png"), {"path": str(outside / "private.png")},
              str(allowed / "ok.png")]
    items = [RewardInput("Sum of 5 and 7?", WRONG, "12", images=(img,)) for img in images]
    with FaultServer(record=True) as srv:
        judge = _judge(srv.endpoint("ok"), timeout=5.0, max_retries=0, fallback="none",
                       image_dirs=[str(allowed)])
        res = judge.judge_detailed(items)
        assert [r.failure for r in res[:-1]] == ["bad_input:ImageNotAllowed"] * 6
        assert res[-1].source == "judge"
        assert len(srv.requests) == 1  # nothing was sent for the refused images
        url = srv.requests[0][1]["messages"][0]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")


@pytest.mark.parametrize("url", ["https://example.com/bar.png", "http://127.0.0.1:1/x.png", "file:///etc/passwd",
                                 "ftp://example.com/x.png", "data:text/plain;base64,aGk="])
def test_to_data_url_never_passes_a_link_through(url):
    from mathse_rl.orm.images import to_data_url

    with pytest.raises(ValueError):
        to_data_url(url)


def test_reading_the_reply_counts_against_the_deadline(monkeypatch):
    import mathse_rl.orm.backends.openai as backend

    real = getattr(backend, "parse_judgment_report", None)

    def slow(*args, **kwargs):
        time.sleep(4.0)  # a reply that is slow to read, as a 4 MiB hostile one was (9.6 s)
        return real(*args, **kwargs)

    if real is not None:  # (a client that imports no parser of its own meets the hostile reply alone)
        monkeypatch.setattr(backend, "parse_judgment_report", slow)
    # and a reply that is hostile by itself: ~4 MB of small verdict objects
    with FaultServer(reply="{status: WRONG}" * 260_000) as srv:
        judge = _judge(srv.endpoint("ok"), timeout=1.5, max_retries=0, fallback="none", max_reply_bytes=4 << 20)
        t0 = time.monotonic()
        res = judge.judge_detailed(_items(1))
        elapsed = time.monotonic() - t0
    assert elapsed < judge.deadline + 1.0, elapsed
    assert res[0].failure == "parse_timeout" and res[0].judgment is None


def _refiner(endpoint, **opts):
    from omegaconf import OmegaConf

    from mathse_rl.evolve.openai_refiner import OpenAIRefiner

    cfg = OmegaConf.create({"reflect": {"openai": {"model": "teacher", "base_url": endpoint, "backoff": 0.01,
                                                   **opts}}, "data": {}})
    return OpenAIRefiner(cfg)


def _refine(refiner, n=1):
    from mathse_rl.types import Judgment, Problem

    return refiner.refine([Problem("p1", "What is 5 + 7?", "12")], ["5 + 7 = 13."],
                          [Judgment("WRONG", 1, error_analysis="5 + 7 is 12.")], n=n, temperature=0.7,
                          max_new_tokens=64, template="paper")


def test_the_teacher_refiner_uses_the_judges_client(server):
    # Retry-After honoured: the 429 is waited out and the teacher's reply arrives.
    refiner = _refiner(server.endpoint("r429"), timeout=5.0, max_retries=2)
    (gens,) = _refine(refiner)
    assert gens[0].text == server.reply and refiner.failures == 0
    times = [t for _, _, t in server.log]
    assert len(times) == 2 and times[1] - times[0] >= 0.95
    # A dripping teacher is cut at the deadline, a huge reply is not read, an http image is never sent.
    t0 = time.monotonic()
    (gens,) = _refine(_refiner(server.endpoint("drip"), timeout=1.0, max_retries=0))
    assert gens[0].finish_reason == "error" and time.monotonic() - t0 < 3.0
    refiner = _refiner(server.endpoint("huge"), timeout=10.0, max_retries=0, max_reply_bytes=1 << 20)
    (gens,) = _refine(refiner)
    assert gens[0].finish_reason == "error" and refiner.failures == 1
    secret = "sk-teacher-5566"
    refiner = _refiner(server.endpoint("ok") + f"?key={secret}")
    assert secret not in refiner.url and not [s for s in _strings(refiner) if secret in s]


def test_one_http_client_per_judge_however_many_batches(server, http_clients_built):
    built = http_clients_built
    judge = _judge(server.endpoint("ok"), timeout=5.0)
    for _ in range(3):  # synchronous batches share the judge's loop thread and its client
        assert [r.source for r in judge.judge_detailed(_items(2))] == ["judge"] * 2
    assert len(built) == 1
    judge.close()
    assert judge.judge_detailed(_items(1))[0].source == "judge" and len(built) == 2  # a closed client is rebuilt
    judge.close()


def test_the_teacher_refiner_sends_the_images_the_loop_saved_under_its_run(server, tmp_path):
    # The evolve loop saves in-memory images under <output_dir>/images and hands the refiner those paths
    # (data.train/eval/image_root may all be unset, as in the embedded demo): they must be sent.
    from omegaconf import OmegaConf
    from PIL import Image

    from mathse_rl.evolve.openai_refiner import OpenAIRefiner
    from mathse_rl.types import Judgment, Problem

    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "p1_0.png"
    Image.new("RGB", (8, 8), "red").save(path)
    cfg = OmegaConf.create({"reflect": {"openai": {"model": "teacher", "base_url": server.endpoint("ok"),
                                                   "backoff": 0.01}},
                            "data": {"train": None, "eval": None, "image_root": None}, "output_dir": str(tmp_path)})
    refiner = OpenAIRefiner(cfg)
    (gens,) = refiner.refine([Problem("p1", "How many bars?", "3", images=(str(path),))], ["2 bars."],
                             [Judgment("WRONG", 1, error_analysis="There are 3.")], n=1, temperature=0.7,
                             max_new_tokens=64, template="paper")
    assert gens[0].text == server.reply and refiner.failures == 0
