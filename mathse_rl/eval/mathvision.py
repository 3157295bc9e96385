"""MATH-Vision (Wang et al., NeurIPS 2024 Datasets and Benchmarks): 3,040 competition problems with
images (test) and a 304-problem subset (testmini); 16 subjects, 5 levels.

Files: github.com/mathllm/MATH-V ``data/test.jsonl`` / ``data/testmini.jsonl`` (image paths
``images/<id>.jpg``, from ``images.zip`` of the Hugging Face dataset ``MathLLMs/MathVision``) or that
dataset's parquet (the image inside ``decoded_image``). The repository's LICENSE file is MIT.

Prompt: the release's chain-of-thought prompt (``models/GPT4V.py``: solve step by step, the answer
in one box, one letter for multiple choice; the options listed as ``(A) ...`` unless they are just
the letters A-E, which means they are in the image), ``--prompt direct`` for its direct prompt
(``models/Qwen-VL.py``), or ours. Scoring follows ``evaluation/evaluate.py``, which is itself
rule-based (no LLM): correct when the extracted answer equals the answer letter or the option's
value, numbers compared after rounding to two decimals. Here the verifier extracts and compares
(letters through the options both ways, LaTeX values), and the two-decimal rule is applied on top.

Categories: subject and level (the release's ``math_level_subject_acc``).
"""

from __future__ import annotations

from typing import Any, Mapping

from mathse_rl.eval.base import CATEGORIES, Benchmark, RowError, Scored, first, register_benchmark, require
from mathse_rl.eval.scoring import plain_number
from mathse_rl.prompts import solve_template
from mathse_rl.types import Problem
from mathse_rl.verify import verify

AXES = ("subject", "level")
# The release's two instructions (models/GPT4V.py and models/Qwen-VL.py), as protocol facts.
COT = ('Please solve the problem step by step and put your answer in one "\\boxed{}". '
       'If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".\n')
DIRECT = "\nAnswer the question using a single word or phrase."


def _options_text(options: tuple[str, ...] | None) -> str:
    if not options or "".join(options) == "ABCDE"[:len(options)]:
        return ""  # the options are drawn in the image
    return "".join(f"({chr(ord('A') + i)}) {o}\n" for i, o in enumerate(options))


@register_benchmark("mathvision")
class MathVision(Benchmark):
    title = "MATH-Vision"
    splits = ("test", "testmini")
    default_split = "test"
    axes = AXES
    prompt_styles = ("official", "direct", "ours")
    source = ("github.com/mathllm/MATH-V data/test.jsonl, data/testmini.jsonl (+ images.zip), "
              "or huggingface.co/datasets/MathLLMs/MathVision")
    license = "MIT (the repository's LICENSE)"

    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        require(row, "question", "answer")
        options = row.get("options")
        if options is not None and not isinstance(options, (list, tuple)):
            raise RowError("malformed row: options is not a list")
        options = tuple(str(o) for o in options) if options else None
        answer = str(row["answer"]).strip()
        if not answer:
            raise RowError("malformed row: no answer")
        if options and (len(answer) != 1 or not "A" <= answer <= chr(ord("A") + len(options) - 1)):
            raise RowError(f"malformed row: the answer {answer!r} is not an option letter")
        image = first(row, ("decoded_image", "image"))
        level = row.get("level")
        cats = {"subject": str(row.get("subject", "")), "level": f"level{level}" if level is not None else ""}
        return Problem(id=self.row_id(row, index), question=str(row["question"]), gold=answer,
                       images=(image,) if image is not None else (), choices=options,
                       data_source="MathLLMs/MathVision", meta={CATEGORIES: cats})

    def outputs(self, data: Any) -> dict[str, str] | None:
        """The release's output files (``outputs/**/<model>.jsonl``): rows with ``id`` and ``response``."""
        if isinstance(data, list) and data and all(isinstance(r, dict) and "id" in r and "response" in r for r in data):
            return {str(r["id"]): str(r["response"] or "") for r in data}
        return None

    def prompt(self, problem: Problem, style: str = "official") -> str:
        opts = _options_text(problem.choices)
        if style == "official":
            return COT + f"{problem.question}\n{opts}"
        if style == "direct":
            return f"{problem.question}\n{opts}" + DIRECT
        if style == "ours":
            from mathse_rl.chat import format_options

            shown = format_options(problem.choices) if opts else ""
            return solve_template(problem).format(question=problem.question, options=shown)
        raise ValueError(f"mathvision prompt style must be one of {self.prompt_styles}, got {style!r}")

    def score(self, problem: Problem, response: str) -> Scored:
        v = verify(response or "", problem.gold or "", choices=list(problem.choices) if problem.choices else None)
        if v.correct:
            return Scored(True, v.pred, v.pred, v.reason)
        if not problem.choices:  # the release compares numbers rounded to two decimals
            a, b = plain_number(v.pred), plain_number(problem.gold)
            if a is not None and b is not None and round(a, 2) == round(b, 2):
                return Scored(True, v.pred, v.pred, "precision")
        return Scored(False, v.pred, v.pred, v.reason)
