"""The programmatic teacher of the synthetic world, its error injector and an exact step checker.

Solutions are ``Step k: ...`` lines ending with MathSE's answer sentence. Three kinds of
step exist: reading a bar, one arithmetic operation, and (multiple choice) naming the option:

    Step 1: The red bar is 7.
    Step 2: The blue bar is 5.
    Step 3: 7 + 5 = 12.
    The answer to this problem is 12.

- :func:`teacher_solution` writes the canonical solution (the distilled seed data).
- :func:`inject_error` writes a wrong path whose first wrong step is known: a misread bar,
  an arithmetic slip or a wrong operation, propagated consistently to the answer.
- :func:`check_steps` labels every step of *any* response exactly against the canonical
  solution, which gives the ORM exact training labels and lets a run report the share of
  accepted paths whose steps are all correct.
- :func:`exact_judgment` turns that check into a :class:`~mathse_rl.types.Judgment` (the
  ORM's target output); :func:`teacher_reflect` is a refiner that trusts the critique.

    >>> from mathse_rl.data.synthetic import make_problem
    >>> p = make_problem(0, "train", seed=0, level=1)
    >>> check_steps(p, teacher_solution(p)).all_correct
    True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from mathse_rl.prompts import ANSWER_PHRASE, build_solve_messages
from mathse_rl.types import Attempt, Judgment, Problem

ERROR_KINDS: tuple[str, ...] = ("misread", "arithmetic", "operation")
_OP_NAMES = {"+": "adds", "-": "subtracts"}

# A step is a small tuple: ("read", colour, value) | ("calc", a, op, b, result) | ("choose", value, letter)
Step = tuple


def render_step(step: Step) -> str:
    kind = step[0]
    if kind == "read":
        return f"The {step[1]} bar is {step[2]}."
    if kind == "calc":
        _, a, op, b, r = step
        return f"{a} {op} {b} = {r}."
    if kind == "choose":
        return f"{step[1]} is option {step[2]}."
    raise ValueError(f"unknown step kind {kind!r}")


_READ = re.compile(r"^the (\w+) bar is (-?\d+)\.?$")
_CALC = re.compile(r"^(-?\d+) ([+\-]) (-?\d+) = (-?\d+)\.?$")
_CHOOSE = re.compile(r"^(-?\d+) is option ([a-d])\.?$")
_STEP_LINE = re.compile(r"^\s*step\s*(\d+)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_ANSWER = re.compile(re.escape(ANSWER_PHRASE) + r"\s*\(?([A-Za-z0-9\-]+)\)?", re.IGNORECASE)


def parse_step(text: str) -> Step | None:
    """The structured step a line states, or None when it is none of the known forms."""
    t = " ".join(text.strip().lower().split())
    if m := _READ.match(t):
        return ("read", m.group(1), int(m.group(2)))
    if m := _CALC.match(t):
        return ("calc", int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))
    if m := _CHOOSE.match(t):
        return ("choose", int(m.group(1)), m.group(2).upper())
    return None


def canonical_steps(problem: Problem) -> list[Step]:
    """The teacher's solution as structured steps (read each bar, combine, name the option)."""
    m = problem.meta
    steps: list[Step] = [("read", c, h) for c, h in zip(m["bars"], m["heights"])]
    acc = m["heights"][0]
    for op, h, r in zip(m["ops"], m["heights"][1:], m["partials"]):
        steps.append(("calc", acc, op, h, r))
        acc = r
    if m.get("letter"):
        steps.append(("choose", m["value"], m["letter"]))
    return steps


def final_answer(problem: Problem, steps: Sequence[Step]) -> str:
    last = steps[-1]
    if last[0] == "choose":
        return last[2]
    return str(last[4] if last[0] == "calc" else last[2])


def format_solution(steps: Sequence[Step], answer: str) -> str:
    lines = [f"Step {i}: {render_step(s)}" for i, s in enumerate(steps, 1)]
    lines.append(f"{ANSWER_PHRASE} {answer}.")
    return "\n".join(lines)


def teacher_solution(problem: Problem) -> str:
    """The canonical step-by-step solution, ending with the answer sentence."""
    steps = canonical_steps(problem)
    return format_solution(steps, final_answer(problem, steps))


def teacher_attempt(problem: Problem) -> Attempt:
    """The teacher's solution as a distilled :class:`Attempt` (seed data)."""
    return Attempt(problem_id=problem.id, response=teacher_solution(problem), source="distilled",
                   correct=True, meta={"all_steps_correct": True})


def sft_example(problem: Problem, response: str) -> dict[str, Any]:
    """A conversational prompt/completion example (trl's vision format) for one solution."""
    return {"prompt": build_solve_messages(problem),
            "completion": [{"role": "assistant", "content": response}],
            "images": list(problem.images)}


# --------------------------------------------------------------------------- error injection


@dataclass(frozen=True)
class WrongPath:
    """A wrong solution with its known first wrong step (1-based) and a critique."""

    response: str
    first_wrong_step: int
    kind: str
    analysis: str


def _complete(problem: Problem, prefix: Sequence[Step]) -> list[Step]:
    """Keep ``prefix`` verbatim and finish the solution plan correctly *from it*.

    Later steps use the values the prefix states (a misread bar, a slipped sum), so a
    mistake propagates consistently to the answer, as a model's own mistakes do.
    """
    m = problem.meta
    want = canonical_steps(problem)
    bars = m["bars"]
    reads = dict(zip(bars, m["heights"]))
    steps: list[Step] = []
    acc: int | None = None
    for i, w in enumerate(want):
        s = prefix[i] if i < len(prefix) else None
        if s is None:
            if w[0] == "read":
                s = ("read", w[1], reads[w[1]])
            elif w[0] == "calc":
                b = reads[bars[i - len(bars) + 1]]
                a = acc if acc is not None else reads[bars[0]]
                s = ("calc", a, w[2], b, _apply(a, w[2], b))
            else:
                choices = list(problem.choices or ())
                letter = ("ABCD"[choices.index(str(acc))] if str(acc) in choices
                          else _other_letter(m["letter"], acc or 0))
                s = ("choose", acc, letter)
        if s[0] == "read":
            reads[s[1]] = s[2]
            if i == 0:
                acc = s[2]
        elif s[0] == "calc":
            acc = s[4]
        steps.append(s)
    return steps


def _other_letter(gold_letter: str, value: int) -> str:
    letters = [ch for ch in "ABCD" if ch != gold_letter]
    return letters[value % len(letters)]


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def inject_error(problem: Problem, kind: str, rng: random.Random) -> WrongPath | None:
    """A wrong path of ``kind`` (one of :data:`ERROR_KINDS`) whose first wrong step is known.

    Steps after the error follow from it consistently (a misread value is used in the sums
    that follow), as a model's own mistakes do. Returns None if the kind cannot apply.
    """
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; known: {ERROR_KINDS}")
    m = problem.meta
    steps = canonical_steps(problem)
    n_bars = len(m["bars"])
    if kind == "misread":
        j = rng.randrange(n_bars)
        colour, true_h = m["bars"][j], m["heights"][j]
        wrong = rng.choice([h for h in range(max(1, true_h - 3), true_h + 4) if h != true_h])
        bad: Step = ("read", colour, wrong)
        analysis = f"Step {j + 1} misreads the height of the {colour} bar; the later steps use the wrong value."
    else:
        j = rng.choice([i for i, s in enumerate(steps) if s[0] == "calc"])
        _, a, op, b, r = steps[j]
        if kind == "arithmetic":
            slip = rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if r + d >= 0])
            bad = ("calc", a, op, b, r + slip)
            analysis = f"Step {j + 1} miscalculates {a} {op} {b}; the later steps carry the slip."
        else:
            new_op = "-" if op == "+" else "+"
            bad = ("calc", a, new_op, b, _apply(a, new_op, b))
            analysis = (f"Step {j + 1} {_OP_NAMES[new_op]} where the question asks to "
                        f"{'add' if op == '+' else 'subtract'}.")
    steps = _complete(problem, steps[:j] + [bad])
    answer = final_answer(problem, steps)
    if answer == problem.gold:  # e.g. a wrong option letter that happens to be right: skip
        return None
    return WrongPath(format_solution(steps, answer), j + 1, kind, analysis)


# --------------------------------------------------------------------------- step checker


@dataclass(frozen=True)
class StepCheck:
    """Exact labels of one response's steps against the canonical solution.

    ``labels[i]`` says whether step ``i + 1`` states the canonical step ``i + 1``;
    ``first_wrong_step`` is the 1-based index of the first wrong (or missing) step;
    ``answer_correct`` compares the final answer sentence with the gold answer.
    """

    labels: tuple[bool, ...]
    first_wrong_step: int | None
    answer_correct: bool
    n_expected: int
    analysis: str = ""

    @property
    def all_correct(self) -> bool:
        """Every step right, none missing or extra, and the right final answer."""
        return self.first_wrong_step is None and self.answer_correct


def extract_answer(response: str) -> str | None:
    """The token after the last answer sentence (letters upper-cased), or None."""
    found = _ANSWER.findall(response or "")
    if not found:
        return None
    ans = found[-1].strip().rstrip(".")
    return ans.upper() if ans.isalpha() else ans


def _describe(j: int, got: Step | None, want: Step) -> str:
    k = j + 1
    if got is None:
        return f"Step {k} does not state a step of the solution."
    if want[0] == "read" and got[0] == "read" and got[1] == want[1]:
        return f"Step {k} misreads the height of the {want[1]} bar."
    if want[0] == "calc" and got[0] == "calc":
        if got[2] != want[2]:
            return (f"Step {k} {_OP_NAMES[got[2]]} where the question asks to "
                    f"{'add' if want[2] == '+' else 'subtract'}.")
        if got[4] != _apply(got[1], got[2], got[3]):
            return f"Step {k} miscalculates {got[1]} {got[2]} {got[3]}."
        return f"Step {k} uses a value that does not match the chart or the previous step."
    if want[0] == "choose" and got[0] == "choose":
        return f"Step {k} names the wrong option."
    return f"Step {k} does not follow the solution plan."


def check_steps(problem: Problem, response: str) -> StepCheck:
    """Label each ``Step k:`` line of ``response`` against the canonical solution."""
    want = canonical_steps(problem)
    got: list[Step | None] = []
    for line in (response or "").splitlines():
        if m := _STEP_LINE.match(line):
            got.append(parse_step(m.group(2)))
    labels = tuple(g == w for g, w in zip(got, want)) + (False,) * max(0, len(got) - len(want))
    first: int | None = None
    analysis = ""
    for j, ok in enumerate(labels):
        if not ok:
            first = j + 1
            analysis = (_describe(j, got[j], want[j]) if j < len(want)
                        else f"Step {j + 1} is an extra step after the solution is complete.")
            break
    if first is None and len(got) < len(want):
        first = len(got) + 1
        analysis = f"The solution stops before step {first}."
    answer_ok = extract_answer(response) == problem.gold
    if first is None and not answer_ok:
        analysis = "The final answer does not match the last step."
        first = len(got)  # the last step is where the answer sentence lives
    return StepCheck(labels, first, answer_ok, len(want), analysis)


def exact_judgment(problem: Problem, response: str) -> Judgment:
    """The ORM's ideal output for ``response``: verdict, first wrong step and analysis.

    The verdict is CORRECT only when every step is right, not merely the answer.
    """
    chk = check_steps(problem, response)
    if chk.all_correct:
        return Judgment(status="CORRECT", score=1.0,
                        improvement_suggestion="Keep reading each bar against the grid before combining.")
    step = chk.first_wrong_step
    return Judgment(status="WRONG", error_step=step, error_step_text=f"Step {step}" if step else "",
                    error_analysis=chk.analysis, score=0.0,
                    improvement_suggestion="Re-read the bars from the image and redo the steps from the error on.")


def teacher_reflect(problem: Problem, wrong_response: str, judgment: Judgment | None) -> str:
    """A refiner that trusts the critique: it keeps the steps before the named error step
    as written and redoes the rest correctly from them.

    A critique that names the true first error yields a correct solution; one that names a
    later step keeps the real mistake, so the reflection stays wrong (and a good judge
    rejects it). With no error step the teacher solves from scratch.
    """
    want = canonical_steps(problem)
    e = judgment.error_step if judgment is not None else None
    if not e or e < 1:
        return teacher_solution(problem)
    got: list[Step] = []
    for line in wrong_response.splitlines():
        if m := _STEP_LINE.match(line):
            s = parse_step(m.group(2))
            if s is None:
                break
            got.append(s)
    prefix = got[: min(e - 1, len(want))]
    if any(p[0] != w[0] or (p[0] != "calc" and p[1] != w[1]) for p, w in zip(prefix, want)):
        return teacher_solution(problem)  # a different plan: solve again from scratch
    steps = _complete(problem, prefix)
    return format_solution(steps, final_answer(problem, steps))
