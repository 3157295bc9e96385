"""The local judge: real batched generation with images on the tiny VLM, P(CORRECT) from logits."""

from __future__ import annotations

import pytest
from PIL import Image

from mathse_rl.orm import load_judge
from mathse_rl.types import RewardInput


def _items(n):
    colours = [(220, 30, 30), (30, 30, 220), (30, 160, 30)]
    out = []
    for i in range(n):
        resp = "Step 1: The red bar is 5.\n" + "Step 2: 5 + 7 = 12.\n" * (i % 3) + "The answer to this problem is 12."
        out.append(RewardInput(question=f"What is the sum of the bars? ({i})", response=resp, gold="12" if i % 2 else "11",
                               images=(Image.new("RGB", (56 + 28 * (i % 2), 56), colours[i % 3]),)))
    return out


def test_untrained_vlm_judge_generates_with_images(tiny_vlm_path):
    judge = load_judge({"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 12, "batch_size": 4})
    assert judge.is_vlm and judge.status_token_ids is not None
    items = _items(5)
    replies = judge.replies(items)  # 2 batches: 4 + 1, of different lengths and image sizes
    assert len(replies) == 5 and all(r.error is None for r in replies)
    assert all(0.0 < r.p_correct < 1.0 for r in replies)
    # the status is decoded as exactly one of the two words, the likelier one under greedy decoding
    for r in replies:
        status = "CORRECT" if r.p_correct > 0.5 else "WRONG"
        assert r.text.startswith('{"status": "' + status + '"')
    results = judge.judge_detailed(items)
    assert all(r.source == "judge" for r in results)
    assert [r.judgment.score for r in results] == [r.p_correct for r in replies]


def test_unconstrained_random_judge_fails_to_parse_and_falls_back(tiny_vlm_path):
    judge = load_judge({"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 12, "batch_size": 4,
                        "constrain_status": False})
    results = judge.judge_detailed(_items(5))
    # random weights write no judgment: each failure is counted and the verifier decides instead
    assert all(r.source == "verifier" and r.failure.startswith("parse:") for r in results)
    assert [r.judgment.correct for r in results] == [False, True, False, True, False]
    assert judge.counters["parse_failures"] == 5 and judge.counters["fallback/verifier"] == 5


def test_batched_equals_one_at_a_time(tiny_vlm_path):
    batched = load_judge({"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 6, "batch_size": 6})
    single = load_judge({"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 6, "batch_size": 1})
    static = load_judge({"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 6, "batch_size": 6,
                         "cache_implementation": "static"})
    items = _items(6)
    a, b, c = batched.replies(items), single.replies(items), static.replies(items)
    assert [r.p_correct for r in a] == pytest.approx([r.p_correct for r in b], abs=1e-4)
    assert [r.p_correct for r in c] == pytest.approx([r.p_correct for r in b], abs=1e-4)
    assert [r.text for r in a] == [r.text for r in b] == [r.text for r in c]


def test_text_only_judge_drops_images_and_counts_them(tiny_lm_path):
    judge = load_judge({"backend": "local", "model": tiny_lm_path, "max_new_tokens": 10, "fallback": "none"})
    assert not judge.is_vlm
    out = judge.judge(_items(2))
    assert all(j is not None and j.status in ("CORRECT", "WRONG") for j in out)
    assert judge.counters["images_dropped"] == 2


def test_trained_judge_writes_judgments(trained_judge, toy_items):
    items, labels = toy_items
    judge = load_judge({"backend": "local", "model": trained_judge[0], "max_new_tokens": 48, "batch_size": 8})
    results = judge.judge_detailed(items)
    assert all(r.source == "judge" for r in results)
    for r in results:
        j = r.judgment
        assert (j.score > 0.5) == j.correct and 0.0 < j.score < 1.0
        assert j.error_step is None or 1 <= j.error_step <= 4
