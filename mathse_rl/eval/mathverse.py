"""MathVerse (Zhang et al., ECCV 2024): testmini, 788 problems each in five versions (Text Dominant,
Text Lite, Vision Intensive, Vision Dominant, Vision Only: ``data/testmini.json``, 3,940 rows, the
overall score) plus Text Only (``data/testmini_text_only.json``, 788 rows, reported apart).

Files: github.com/ZrrSkywalker/MathVerse ``data/testmini.json`` / ``testmini_text_only.json`` with
``images.zip`` of the Hugging Face dataset ``AI4Math/MathVerse`` (or that dataset's parquet). The
repository is MIT-licensed; the data's terms are those of its dataset card.

Prompt: the release's ``query_wo`` (its primary "w/o" metric: answer directly) by default,
``query_cot`` with ``--prompt cot``, or ours. Scoring: the release asks GPT-4 to extract the answer
and then to judge it against the standard answer ("0.5m and 50cm" consistent); here the verifier
does both (units, equations such as ``C = 40.84 cm``, intervals). For multiple choice the answer is
a letter; the options are read from the question text ("Choices:\\nA:40°\\nB:60°") when the version
still states them, so a response may name the option by its value; in Vision Only the options are
only in the image and the letter alone counts. The CoT-E step score is not computed.

Categories: problem version, subject, subfield (the release's ``score_answer_s2.py``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from mathse_rl.eval.base import CATEGORIES, Benchmark, RowError, Scored, first, register_benchmark, require
from mathse_rl.prompts import solve_template
from mathse_rl.types import Problem
from mathse_rl.verify import verify

AXES = ("problem_version", "subject", "subfield")
_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])\)?\s*[:：.)]\s*(.*?)\s*$")


def choices_in(question: str) -> list[str] | None:
    """The options a question lists after ``Choices:``, one per line, lettered A, B, ... in order.

        >>> choices_in("Find x.\\nChoices:\\nA:40°\\nB:60°")
        ['40°', '60°']
    """
    head, sep, tail = str(question).rpartition("Choices:")
    if not sep:
        return None
    out: list[str] = []
    for line in tail.strip().splitlines():
        m = _CHOICE_LINE.match(line)
        if not m or m.group(1) != chr(ord("A") + len(out)):
            break
        out.append(m.group(2))
    return out or None


@register_benchmark("mathverse")
class MathVerse(Benchmark):
    title = "MathVerse"
    splits = ("testmini", "testmini_text_only")
    default_split = "testmini"
    axes = AXES
    prompt_styles = ("official", "cot", "ours")
    source = ("github.com/ZrrSkywalker/MathVerse data/testmini.json, data/testmini_text_only.json (+ images.zip), "
              "or huggingface.co/datasets/AI4Math/MathVerse")
    license = "repository MIT; data under the terms of the AI4Math/MathVerse dataset card"

    def row_id(self, row: Mapping[str, Any], index: int) -> str:
        return str(first(row, ("sample_index", "id")) if first(row, ("sample_index", "id")) is not None else index)

    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        require(row, "question", "answer", "question_type", "problem_version")
        answer = str(row["answer"]).strip()
        if not answer:
            raise RowError("malformed row: no answer")
        qtype = str(row["question_type"])
        question = str(row["question"])
        choices = choices_in(str(row.get("question_for_eval") or question)) if qtype == "multi-choice" else None
        meta_in = row.get("metadata") or {}
        cats = {"problem_version": str(row["problem_version"]),
                "subject": str(meta_in.get("subject", "")), "subfield": str(meta_in.get("subfield", ""))}
        image = row.get("image")
        has_image = bool(image) and cats["problem_version"] != "Text Only"
        return Problem(
            id=self.row_id(row, index), question=question, gold=answer,
            images=(image,) if has_image else (), choices=tuple(choices) if choices else None,
            data_source="AI4Math/MathVerse",
            meta={"question_type": qtype, "query_wo": row.get("query_wo"), "query_cot": row.get("query_cot"),
                  "problem_index": row.get("problem_index"), CATEGORIES: cats})

    def outputs(self, data: Any) -> dict[str, str] | None:
        """The release's output format (``output_templates/output_testmini.json``): a list of rows with
        ``sample_index`` and the response in ``model_answer``."""
        if isinstance(data, list) and data and all(isinstance(r, dict) and "sample_index" in r and "model_answer" in r
                                                   for r in data):
            return {str(r["sample_index"]): str(r["model_answer"] or "") for r in data}
        return None

    def prompt(self, problem: Problem, style: str = "official") -> str:
        m = problem.meta
        if style in ("official", "cot"):
            query = m.get("query_wo" if style == "official" else "query_cot")
            if not query:
                raise ValueError(f"mathverse row {problem.id} has no {'query_wo' if style == 'official' else 'query_cot'}")
            return str(query)
        if style == "ours":
            return solve_template(problem).format(question=problem.question, options="")
        raise ValueError(f"mathverse prompt style must be one of {self.prompt_styles}, got {style!r}")

    def score(self, problem: Problem, response: str) -> Scored:
        v = verify(response or "", problem.gold or "", choices=list(problem.choices) if problem.choices else None)
        return Scored(bool(v.correct), v.pred, v.pred, v.reason)
