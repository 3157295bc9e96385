"""What a policy writes to a judge, and how each completion must be judged (shared by the one-verdict tests).

The corpus holds what a policy writes to talk its way into a reward (a number that is never
stated as the answer, a trailing number), plain right and wrong answers, multiple choice with its
options, no gold, an unreadable gold and a verifier timeout ("[slow]": see :func:`patch_timeouts`).
"""

from __future__ import annotations

from mathse_rl.types import Verdict

CHOICES = ("3", "4", "5")
# (completion, gold, choices, the strict judge's verdict)
CORPUS = [
    ("Step 1: 2 + 3 = 5.\nThe answer to this problem is 5.", "5", None, True),
    ("Counting the bars one by one, so there are 5 bars.", "5", None, False),  # never states its answer
    ("Looking at the grid there are 4 red cells and 2.", "2", None, False),  # rewarded on its last number
    ("The answer to this problem is 6.", "5", None, False),
    (r"So the total is $\boxed{12}$.", "12", None, True),
    ("The answer to this problem is B.", "B", CHOICES, True),
    ("The answer to this problem is 4.", "B", CHOICES, True),  # the option's text
    ("The answer to this problem is 5.", "B", CHOICES, False),
    ("The answer to this problem is 5.", None, None, None),  # no gold
    ("The answer to this problem is 5.", "", None, None),  # empty gold
    ("The answer to this problem is 5.", r"\frac{", None, None),  # unreadable gold
    ("The answer to this problem is 7. [slow]", "7", None, None),  # the comparison times out
]
SLOW = "[slow]"


def patch_timeouts(monkeypatch) -> None:
    """The verifier times out on completions marked [slow] (through its public entry points)."""
    import mathse_rl.verify as verify

    real_one, real_batch = verify.verify, verify.verify_batch

    def one(response, gold, **kw):
        return Verdict(False, "7", "timeout") if SLOW in (response or "") else real_one(response, gold, **kw)

    def batch(responses, golds, **kw):
        out = real_batch(responses, golds, **kw)
        return [Verdict(False, "7", "timeout") if SLOW in (r or "") else v for r, v in zip(responses, out)]

    monkeypatch.setattr(verify, "verify", one)
    monkeypatch.setattr(verify, "verify_batch", batch)
