"""The rule-based judge: the verifier decides the status, simple checks find the step.

It is the default fallback of the model judges and a judge in its own right. For a wrong
path it names the first step where it can tell something went wrong:

1. the first step whose numbers differ from a reference solution's same step, when the
   item carries one (``extra["reference_steps"]`` or ``extra["reference_solution"]``);
2. else the first step with a false arithmetic statement such as ``5 + 7 = 13``, or one that
   computes with a number stated nowhere before it (not in the question, not in an earlier
   step: a mis-copied value such as ``13 + 2 = 15`` right after ``7 + 5 = 12``), whichever
   comes first;
3. else no step (``error_step=None``) and an analysis saying the final answer does not match.

    >>> find_arithmetic_slip(["5 + 7 = 12.", "12 - 3 = 8."])
    (2, '12 - 3 = 8', 9.0)
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple, Optional, Sequence

from mathse_rl.orm.judge import Judge, JudgeResult, register_backend
from mathse_rl.orm.steps import segment_steps
from mathse_rl.types import UNDECIDABLE_REASONS, Judgment, RewardInput, Verdict

_NUM = r"\d+(?:\.\d+)?"
# "a op b (op c ...) = r" with + - * / × ÷ between plain numbers.
_EQUATION = re.compile(rf"({_NUM}(?:\s*[-+*/×÷]\s*{_NUM})+)\s*=\s*(-?{_NUM})")
_TOKEN = re.compile(rf"{_NUM}|[-+*/×÷]")
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
# Verdict reasons for which the verifier cannot say right or wrong (one definition, in types.py).
UNDECIDABLE = UNDECIDABLE_REASONS


def _arith(expr: str) -> float | None:
    """Value of a flat + - * / expression of numbers, by precedence; None on division by zero."""
    tokens = _TOKEN.findall(expr)
    terms: list[float] = []
    signs: list[str] = []
    value = float(tokens[0])
    i = 1
    while i < len(tokens) - 1:
        op, num = tokens[i], float(tokens[i + 1])
        if op in "*×":
            value *= num
        elif op in "/÷":
            if num == 0:
                return None
            value /= num
        else:
            terms.append(value)
            signs.append(op)
            value = num
        i += 2
    terms.append(value)
    total = terms[0]
    for op, t in zip(signs, terms[1:]):
        total = total + t if op == "+" else total - t
    return total


def find_arithmetic_slip(steps: Sequence[str]) -> tuple[int, str, float | None] | None:
    """(1-based step, the false equation, its true value) for the first false ``a op b = r``."""
    for k, step in enumerate(steps, 1):
        for m in _EQUATION.finditer(step):
            true = _arith(m.group(1))
            claimed = float(m.group(2))
            if true is None or abs(true - claimed) > 1e-6 * max(1.0, abs(true)):
                return k, m.group(0), true
    return None


def find_miscopy(steps: Sequence[str], question: str = "", choices: Sequence[str] | None = None
                 ) -> tuple[int, str, str] | None:
    """(1-based step, its equation, the operand) for the first equation that computes with a
    number stated nowhere before it: not in the question or its options, not in an earlier step,
    not earlier in the same step.

    >>> find_miscopy(["7 + 5 = 12.", "13 + 2 = 15."], "Ann has 7 pens and gets 5 more, then 2 more.")
    (2, '13 + 2 = 15', '13')
    """
    known = {float(x) for x in _NUMBERS.findall(question + " " + " ".join(choices or ()))}
    for k, step in enumerate(steps, 1):
        pos = 0
        for m in _EQUATION.finditer(step):
            known |= {float(x) for x in _NUMBERS.findall(step[pos:m.start()])}
            for operand in re.findall(_NUM, m.group(1)):
                if float(operand) not in known:
                    return k, m.group(0), operand
            known |= {float(x) for x in _NUMBERS.findall(m.group(0))}
            pos = m.end()
        known |= {float(x) for x in _NUMBERS.findall(step)}
    return None


def first_divergent_step(steps: Sequence[str], reference: Sequence[str]) -> int | None:
    """First step index whose numbers differ from the reference solution's same step."""
    for k, (a, b) in enumerate(zip(steps, reference), 1):
        if sorted(_NUMBERS.findall(a)) != sorted(_NUMBERS.findall(b)):
            return k
    return None


def _fmt(x: float | None) -> str:
    if x is None:
        return "undefined"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def critique(item: RewardInput, steps: Sequence[str], reason: str) -> Judgment:
    """The WRONG judgment for a path the verifier rejected, with the best step it can name."""
    reference = item.extra.get("reference_steps") if item.extra else None
    if reference is None and item.extra and item.extra.get("reference_solution"):
        reference = segment_steps(str(item.extra["reference_solution"]))
    step = first_divergent_step(steps, reference) if reference else None
    if step is not None:
        return Judgment(
            status="WRONG", error_step=step, error_step_text=f"Step {step}: {steps[step - 1]}",
            error_analysis=f"The quantities used in step {step} do not agree with a correct solution at this point.",
            improvement_suggestion=f"Re-check the values read or computed in step {step} against the problem and the image.",
            score=0.0, raw="")
    slip = find_arithmetic_slip(steps)
    copy = find_miscopy(steps, item.question or "", item.choices)
    if copy is not None and (slip is None or copy[0] < slip[0]):
        k, equation, operand = copy
        return Judgment(
            status="WRONG", error_step=k, error_step_text=f"Step {k}: {steps[k - 1]}",
            error_analysis=(f"Step {k} computes {equation} with {operand}, a number that neither the problem nor "
                            "an earlier step states (a mis-copied value); the later steps inherit it."),
            improvement_suggestion=f"Carry the values of the earlier steps into step {k} exactly as they were found.",
            score=0.0, raw="")
    if slip is not None:
        k, equation, true = slip
        lhs = equation.split("=")[0].strip()
        return Judgment(
            status="WRONG", error_step=k, error_step_text=f"Step {k}: {steps[k - 1]}",
            error_analysis=f"Step {k} states {equation}, but {lhs} is {_fmt(true)}; the later steps inherit this slip.",
            improvement_suggestion=f"Redo the arithmetic of step {k} and carry the corrected value forward.",
            score=0.0, raw="")
    if reason in ("no_answer", "no_final_answer"):
        analysis = "The solution never states a final answer in the form 'The answer to this problem is ...'."
        suggestion = "Finish with the sentence 'The answer to this problem is X.'"
    elif reason in UNDECIDABLE or reason == "judge_error":  # critiqued only with undecidable_as_wrong
        analysis = "The final answer could not be checked against the reference answer; it is treated as wrong."
        suggestion = "State one final answer plainly, in its simplest form: 'The answer to this problem is X.'"
    else:
        analysis = "The final answer does not match the reference answer; the faulty step could not be located."
        suggestion = "Re-read the question and the image, and re-check each step's values."
    return Judgment(status="WRONG", error_step=None, error_analysis=analysis,
                    improvement_suggestion=suggestion, score=0.0, raw="")


@register_backend("verifier")
class VerifierJudge(Judge):
    """Judge by the rule verifier (``mathse_rl.verify.verify``); undecidable items get None.

    Two things an item may carry from the MathSE step (``mathse_rl.step.reward_input``):
    ``extra["verdict"]`` (``correct``, ``reason``: the step judge's verdict on this path), which is
    then critiqued as it is and never judged again, so the critique cannot contradict the judge
    (a strict judge's ``no_final_answer`` is critiqued as such, never called CORRECT); and
    ``extra["verify"]`` (``strict``, ``cues``: how the judge reads answers), used when the item
    is judged here (as a model judge's fallback).
    """

    def judge_detailed(self, items: Sequence[RewardInput]) -> list[JudgeResult]:
        items = list(items)
        self.counters.add("items", len(items))
        out: list[JudgeResult] = []
        for item in items:
            verdict = self._verdict(item)
            if isinstance(verdict, BaseException):  # the verifier is guarded, but a judge never raises into a loop
                self.counters.add(f"error/exception:{type(verdict).__name__}")
                out.append(JudgeResult(None, "none", f"exception:{type(verdict).__name__}"))
                continue
            if verdict.correct is None:
                self.counters.add(f"undecidable/{verdict.reason}")
                out.append(JudgeResult(None, "none", f"undecidable:{verdict.reason}"))
                continue
            self.counters.add("judged")
            if verdict.correct:
                j = Judgment(status="CORRECT", score=1.0, raw="",
                             improvement_suggestion="State each value read from the image before using it.")
            else:
                j = critique(item, segment_steps(item.response), verdict.reason)
            out.append(JudgeResult(j, "judge"))
        return out

    def _verdict(self, item: RewardInput) -> "_Decision | BaseException":
        """The step's verdict carried by the item, else the verifier's own (with the judge's reading)."""
        given = (item.extra or {}).get("verdict")
        if isinstance(given, Mapping) and "correct" in given:
            correct = given["correct"]
            reason = str(given.get("reason") or ("correct" if correct else "wrong"))
            # The step asks for a critique only of paths it trains as wrong: an undecidable one (with
            # undecidable_as_wrong) is critiqued as wrong, saying it could not be checked.
            return _Decision(bool(correct), reason)
        from mathse_rl.verify import verify

        options = dict((item.extra or {}).get("verify") or {})
        kwargs = {"strict": bool(options.get("strict", False))}
        if options.get("cues"):
            kwargs["cues"] = list(options["cues"])
        try:
            v: Verdict = verify(item.response, item.gold, choices=item.choices, timeout=self.config.verifier_timeout,
                                **kwargs)
        except Exception as exc:
            return exc
        return _Decision(None if v.reason in UNDECIDABLE else bool(v.correct), v.reason)

    async def ajudge_detailed(self, items: Sequence[RewardInput]) -> list[JudgeResult]:
        import asyncio

        return await asyncio.to_thread(self.judge_detailed, items)


class _Decision(NamedTuple):
    correct: Optional[bool]  # None: undecidable
    reason: str
