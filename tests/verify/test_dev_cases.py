"""Every public dev case (../shared/verifier/dev_cases.jsonl) is judged as labelled."""

from __future__ import annotations

from mathse_rl.verify import verify

def test_dev_case(dev_case, warm_pool):
    v = verify(dev_case["response"], dev_case["gold"], choices=dev_case.get("choices"), timeout=5.0)
    assert v.correct == bool(dev_case["expected"]), (dev_case["response"][:200], dev_case["gold"], v)
    assert v.score == float(dev_case["expected"])
    assert v.reason in {"exact", "numeric", "symbolic", "choice", "text", "no_answer", "mismatch", "hedged",
                        "timeout", "too_long", "parse_error", "no_gold"}, v

