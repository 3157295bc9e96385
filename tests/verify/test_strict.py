"""Strict extraction (acceptance in training): only a response that states its final answer is accepted."""

from __future__ import annotations

import asyncio
import random

import pytest

from mathse_rl.types import RewardInput
from mathse_rl.verify import averify, extract_answer, verify, verify_batch

C4 = ["10", "12", "14", "16"]

# Responses that never state a final answer; the lenient mode reads a number out of each.
UNSTATED = [
    ("so the answer to this problem is are 9", "9"),        # truncated / broken answer sentence
    ("The answer is is 9", "9"),
    ("Then the final answer is are 12.", "12"),
    ("We add 4 and 5 to get 9", "9"),                        # a bare trailing number
    ("3 + 4 = 7", "7"),
    ("after 4 weeks", "4"),
    ("The answer to this problem is", "7"),                  # cut before the answer
    ("Hmm. 5", "5"),
    ("Comparing the options...\nB.", "B"),                  # a bare letter with no answer sentence
    ("It must be (B) given the angle", "B"),
    ("Final Answer: Jane started growing the sphere 3 hours ago.", "3"),  # a number picked out of prose
]


@pytest.mark.parametrize("response, gold", UNSTATED)
def test_unstated_answer_is_not_accepted_under_strict(response, gold):
    choices = C4 if gold == "B" else None
    v = verify(response, gold, choices=choices, strict=True)
    assert not v.correct and v.reason in {"no_final_answer", "mismatch"}, v
    assert extract_answer(response, choices=choices, strict=True) in (None, response.rsplit(": ", 1)[-1].rstrip("."))


def test_lenient_mode_still_reads_the_last_number():
    # Evaluation keeps the lenient reading: what strict mode refuses is accepted here.
    assert verify("so the answer to this problem is are 9", "9").correct
    assert verify("We add 4 and 5 to get 9", "9").correct
    assert verify("We add 4 and 5 to get 9", "9", strict=True).reason == "no_final_answer"


def test_random_bytes_are_never_accepted_under_strict():
    rng = random.Random(0)
    accepted = 0
    for k in range(300):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        text = raw.decode("latin-1")
        digits = [c for c in text if c.isdigit()]
        gold = digits[-1] if digits else str(k % 10)
        accepted += verify(text, gold, strict=True).correct
    assert accepted == 0


@pytest.mark.parametrize("response, gold, choices", [
    ("so x = 3 and \\boxed{12}", "12", None),
    ("The answer to this problem is 12.", "12", None),
    ("Therefore, the final answer is $\\frac{3}{4}$.", "0.75", None),
    ("Final answer: 12", "12", None),
    ("The answer is 12", "12", None),
    ("Answer: 12", "12", None),
    ("The answer to this problem is (C).", "C", C4),
    ("The answer to this problem is C. 14", "C", C4),
    ("The correct option is B", "B", C4),
    ("The answer to this problem is 14.", "C", C4),
    ("<answer>12</answer>", "12", None),
    ("答案是 12", "12", None),
    ("6 * 2 = 12\n#### 12", "12", None),
    ("Final Answer: The volume of the box is 120. I hope it is correct.", "120", None),
])
def test_stated_answers_are_accepted_under_strict(response, gold, choices):
    v = verify(response, gold, choices=choices, strict=True)
    assert v.correct, v


def test_cues_are_configurable():
    r = "Result => 12"
    assert verify(r, "12", strict=True).reason == "no_final_answer"
    assert verify(r, "12", strict=True, cues=["Result =>"]).correct
    # only the given cues count: the default "the answer is" no longer does
    assert not verify("the answer is 12", "12", strict=True, cues=["Result =>"]).correct
    assert verify("\\boxed{12}", "12", strict=True, cues=[]).correct  # a box always states its answer


def test_strict_in_batch_and_async():
    rs = ["We get 9", "The answer to this problem is 9.", "\\boxed{9}", "is are 9"]
    got = [v.correct for v in verify_batch(rs, ["9"] * 4, strict=True)]
    assert got == [False, True, True, False]
    got_workers = [v.reason for v in verify_batch(rs, ["9"] * 4, strict=True, workers=2)]
    assert got_workers[0] == "no_final_answer" and got_workers[3] == "no_final_answer"
    assert asyncio.run(averify("We get 9", "9", strict=True)).reason == "no_final_answer"


def test_verifier_reward_strict_option():
    from mathse_rl.rewards import get_reward

    samples = [RewardInput(question="q", response="so we get 9", gold="9"),
               RewardInput(question="q", response="The answer to this problem is 9.", gold="9")]
    assert [o.score for o in get_reward("verifier", strict=False)(samples)] == [1.0, 1.0]
    strict = get_reward("verifier")  # a training reward: strict unless told otherwise
    outs = strict(samples)
    assert [o.score for o in outs] == [0.0, 1.0]
    assert outs[0].extras["reason"] == "no_final_answer"
