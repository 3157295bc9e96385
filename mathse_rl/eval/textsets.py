"""Text-only sets: GSM8K (grade-school word problems) and MATH-500 (the 500-problem subset of MATH).

- GSM8K: github.com/openai/grade-school-math ``grade_school_math/data/test.jsonl`` (1,319 rows
  ``{"question", "answer"}``, the answer a worked solution ending ``#### <number>``), or the Hugging
  Face dataset ``openai/gsm8k`` (config ``main``). MIT licence. No categories.
- MATH-500: the Hugging Face dataset ``HuggingFaceH4/MATH-500`` ``test.jsonl`` (rows ``{"problem",
  "solution", "answer", "subject", "level", "unique_id"}``; the subset of PRM800K's test split).
  MIT licence (from MATH). Categories: subject, level.

Neither set has an official prompt or scorer: "official" here means the usual chain-of-thought
instruction with a boxed final answer, and scoring is the verifier against the answer (GSM8K:
the number after ``####``, thousands commas removed).
"""

from __future__ import annotations

from typing import Any, Mapping

from mathse_rl.eval.base import CATEGORIES, Benchmark, RowError, Scored, register_benchmark, require
from mathse_rl.prompts import SOLVE_TEXT_TEMPLATE
from mathse_rl.types import Problem
from mathse_rl.verify import verify

BOXED = "\nPlease reason step by step, and put your final answer within \\boxed{}."


class _TextSet(Benchmark):
    multimodal = False

    def prompt(self, problem: Problem, style: str = "official") -> str:
        if style == "official":
            return problem.question + BOXED
        if style == "ours":
            return SOLVE_TEXT_TEMPLATE.format(question=problem.question, options="")
        raise ValueError(f"{self.name} prompt style must be one of {self.prompt_styles}, got {style!r}")

    def score(self, problem: Problem, response: str) -> Scored:
        v = verify(response or "", problem.gold or "")
        return Scored(bool(v.correct), v.pred, v.pred, v.reason)

    def outputs(self, data: Any) -> dict[str, str] | None:
        return None


@register_benchmark("gsm8k")
class GSM8K(_TextSet):
    title = "GSM8K"
    splits = ("test", "train")
    source = "github.com/openai/grade-school-math grade_school_math/data/test.jsonl, or huggingface.co/datasets/openai/gsm8k"
    license = "MIT"

    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        require(row, "question", "answer")
        worked = str(row["answer"])
        if "####" not in worked:
            raise RowError("malformed row: the answer has no '#### <number>' line")
        gold = worked.rsplit("####", 1)[1].strip().replace(",", "")
        if not gold:
            raise RowError("malformed row: nothing after '####'")
        return Problem(id=self.row_id(row, index), question=str(row["question"]), gold=gold,
                       data_source="openai/gsm8k", meta={CATEGORIES: {}})


@register_benchmark("math500")
class MATH500(_TextSet):
    title = "MATH-500"
    axes = ("subject", "level")
    source = "huggingface.co/datasets/HuggingFaceH4/MATH-500 test.jsonl"
    license = "MIT"

    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        require(row, "problem", "answer")
        if not str(row["answer"]).strip():
            raise RowError("malformed row: no answer")
        level = row.get("level")
        return Problem(id=self.row_id(row, index), question=str(row["problem"]), gold=str(row["answer"]),
                       data_source="HuggingFaceH4/MATH-500",
                       meta={CATEGORIES: {"subject": str(row.get("subject", "")),
                                          "level": f"Level {level}" if level is not None else ""}})
