"""MathVista (Lu et al., ICLR 2024): testmini (1,000 problems with answers) and test (5,141, answers
not public: we write the submission file instead of a score).

Files: ``data/testmini.json`` of github.com/lupantech/MathVista (rows keyed by ``pid``, image paths
``images/<pid>.jpg`` from ``images.zip`` of the Hugging Face dataset) or the Hugging Face dataset
``AI4Math/MathVista`` (parquet, the image inside ``decoded_image``, the prompt in ``query``).
Licence: CC BY-SA 4.0 for the new contributions (the images and questions keep their sources'
copyright); for use as a test set only, never for training.

Scoring follows ``evaluation/calculate_score.py`` of the release, with our verifier in place of the
GPT-4 answer extraction:

- multiple choice: the prediction is the text of the option the response chose (the verifier
  asked about each option; a response that chose none, or several, chose nothing; the release
  instead maps any extraction to the nearest option by edit distance); correct when it is the
  answer's option text.
- integer: correct when the verifier finds the answer, or the extracted number truncated to an
  integer (the release's ``int(float(x))``) is the answer.
- float: correct when the verifier finds the answer, or the extracted number rounded to the
  row's ``precision`` decimals is the answer (the release's ``round(float(x), precision)``).
- list: correct when the verifier finds the answer (a list compared element by element).

Categories: the release's ``target_keys`` (question type, answer type, language, source,
category, task, context, grade, skills; a problem counts in each of its skills).
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping

from mathse_rl.eval.base import CATEGORIES, Benchmark, RowError, Scored, first, register_benchmark, require
from mathse_rl.eval.scoring import chosen_option, nearest_option, plain_number
from mathse_rl.prompts import solve_template
from mathse_rl.types import Problem
from mathse_rl.types import Verdict
from mathse_rl.verify import extract_answer, verify

AXES = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade", "skills")

# The task instruction of the release's ``query`` (its README's table "Task instruction"), by
# question type / answer type / precision; used only for rows that do not carry their ``query``.
HINTS = {
    "multi_choice": "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.",
    "integer": "Please answer the question requiring an integer answer and provide the final value, "
               "e.g., 1, 2, 3, at the end.",
    "float1": "Please answer the question requiring a floating-point number with one decimal place and provide "
              "the final value, e.g., 1.2, 1.3, 1.4, at the end.",
    "float2": "Please answer the question requiring a floating-point number with two decimal places and provide "
              "the final value, e.g., 1.23, 1.34, 1.45, at the end.",
    "list": "Please answer the question requiring a Python list as an answer and provide the final list, "
            "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.",
}


def _choices(value: Any) -> list[str] | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "none")):
        return None
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise RowError(f"malformed row: choices {value[:60]!r} is not a list") from exc
    if not isinstance(value, (list, tuple)):
        raise RowError("malformed row: choices is not a list")
    return [str(c) for c in value] or None


def _precision(value: Any) -> int | None:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return int(float(value))


@register_benchmark("mathvista")
class MathVista(Benchmark):
    title = "MathVista"
    splits = ("testmini", "test")
    default_split = "testmini"
    hidden_answer_splits = ("test",)
    axes = AXES
    source = "github.com/lupantech/MathVista data/testmini.json (+ images.zip), or huggingface.co/datasets/AI4Math/MathVista"
    license = "CC BY-SA 4.0 (new contributions; images and questions keep their sources' copyright); test use only"
    nearest_option = True  # the release's rule: a response that names no option gets the most similar one

    def problem(self, row: Mapping[str, Any], index: int, split: str) -> Problem:
        require(row, "question", "question_type", "answer_type")
        pid = self.row_id(row, index)
        qtype, atype = str(row["question_type"]), str(row["answer_type"])
        if qtype not in ("multi_choice", "free_form"):
            raise RowError(f"malformed row: question_type {qtype!r} is neither multi_choice nor free_form")
        choices = _choices(row.get("choices"))
        answer = row.get("answer")
        answer = None if answer is None or str(answer).strip() == "" else str(answer)
        if self.has_answers(split):
            if answer is None:
                raise RowError("malformed row: no answer")
            if qtype == "multi_choice" and (not choices or answer not in choices):
                raise RowError(f"malformed row: the answer {answer!r} is not one of the choices {choices}")
        meta_in = row.get("metadata") or {}
        if isinstance(meta_in, str):
            meta_in = ast.literal_eval(meta_in)
        cats: dict[str, Any] = {"question_type": qtype, "answer_type": atype}
        for key in AXES[2:]:
            value = meta_in.get(key, row.get(key))
            if key == "skills":
                cats[key] = [str(s) for s in (value or [])]
            elif value is not None:
                cats[key] = str(value)
        image = first(row, ("decoded_image", "image"))
        unit = row.get("unit")
        keep = {k: v for k, v in row.items() if k not in ("decoded_image",) and _jsonable(v)}
        return Problem(
            id=pid, question=str(row["question"]), gold=answer,
            images=(image,) if image is not None else (),
            choices=tuple(choices) if choices else None, data_source="AI4Math/MathVista",
            meta={"question_type": qtype, "answer_type": atype, "precision": _precision(row.get("precision")),
                  "unit": None if unit in (None, "", "None") else str(unit), "query": row.get("query"),
                  CATEGORIES: cats, "row": keep})

    def outputs(self, data: Any) -> dict[str, str] | None:
        """The release's output files (``results/*/output_*.json``): rows keyed by pid with ``response``;
        program-of-thought outputs hold the program in ``response`` and what it printed in
        ``execution``, which is their answer (we never run a program)."""
        if not isinstance(data, dict) or not data:
            return None
        rows = list(data.values())
        if not all(isinstance(r, dict) and "response" in r for r in rows):
            return None
        out = {}
        for key, r in data.items():
            text = r.get("execution") if "execution" in r else r.get("response")
            out[str(r.get("pid", key))] = "" if text is None else str(text)
        return out

    def prompt(self, problem: Problem, style: str = "official") -> str:
        m = problem.meta
        if style == "official":
            if m.get("query"):
                return str(m["query"])
            return official_query(problem)
        if style == "ours":
            return ours(problem)
        raise ValueError(f"mathvista prompt style must be one of {self.prompt_styles}, got {style!r}")

    def score(self, problem: Problem, response: str) -> Scored:
        m = problem.meta
        response = response or ""
        if m["question_type"] == "multi_choice":
            choices = problem.choices or ()
            idx, v = chosen_option(response, choices)
            reason = v.reason
            if idx is None and self.nearest_option:
                # The release maps every extraction to an option (the most similar by edit distance);
                # with no answer found, the response itself stands for the extraction.
                idx, reason = nearest_option(v.pred if v.pred else response.strip(), choices), "nearest_option"
            prediction = choices[idx] if idx is not None else None
            correct = None if problem.gold is None else prediction == problem.gold
            return Scored(correct, prediction, v.pred, reason)
        if problem.gold is None:  # hidden answers: the extraction only
            v = Verdict(False, extract_answer(response), "hidden_answer")
        else:
            v = verify(response, problem.gold)
        atype, number = m["answer_type"], plain_number(v.pred)
        if atype == "integer" and number is not None:
            prediction = str(int(number))
        elif atype == "float" and number is not None and m.get("precision") is not None:
            prediction = str(round(number, int(m["precision"])))
        else:
            prediction = v.pred
        if problem.gold is None:
            return Scored(None, prediction, v.pred, "hidden_answer")
        if v.correct:
            return Scored(True, problem.gold, v.pred, v.reason)
        if atype in ("integer", "float") and prediction == problem.gold:
            return Scored(True, prediction, v.pred, "precision")
        if atype == "list" and v.pred is not None and _as_list(v.pred) == _as_list(problem.gold):
            return Scored(True, _as_list(v.pred), v.pred, "list")
        return Scored(False, prediction, v.pred, v.reason)


    def write_release_files(self, out: Any, split: str, problems: Any, rows: Any, results: Any, tag: str) -> dict:
        """The release's own files: ``output_<tag>.json`` (rows keyed by pid with ``response``,
        ``extraction``, ``prediction`` and, where answers are public, ``true_false``) and
        ``scores_<tag>.json`` (its ``calculate_score.py`` layout); for test, the submission file."""
        import json
        from pathlib import Path

        from mathse_rl.eval.report import tables

        by_id = {r["id"]: r for r in rows}
        data: dict[str, Any] = {}
        for p in problems:
            r = by_id[p.id]
            row = dict(p.meta.get("row") or {})
            row.update(response=r["response"] or "", extraction=r["extraction"] or "", prediction=r["prediction"])
            if self.has_answers(split):
                row["true_false"] = bool(r["correct"])
            data[str(row.get("pid", p.id))] = row
        out = Path(out)
        if not self.has_answers(split):
            path = out / f"output_{split}_{tag}.json"
            path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            return {"release_files": [path.name], "submission": str(path)}
        scores: dict[str, Any] = {"average": {"accuracy": results["overall"]["accuracy"] / 100,
                                              "correct": results["overall"]["correct"],
                                              "total": results["overall"]["total"]}}
        for axis, by in tables(rows, AXES).items():
            ranked = sorted(by.items(), key=lambda kv: -kv[1]["accuracy"])
            scores[axis] = {v: {"accuracy": c["accuracy"] / 100, "correct": c["correct"], "total": c["total"]}
                            for v, c in ranked}
        out_path, score_path = out / f"output_{tag}.json", out / f"scores_{tag}.json"
        out_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        score_path.write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
        return {"release_files": [out_path.name, score_path.name]}


def official_query(problem: Problem) -> str:
    """The release's zero-shot query for a row that lacks it: the task instruction, the question
    (with its unit) and the lettered choices, one per line."""
    m = problem.meta
    if m["question_type"] == "multi_choice":
        hint = HINTS["multi_choice"]
    elif m["answer_type"] == "float":
        hint = HINTS["float2" if m.get("precision") == 2 else "float1"]
    else:
        hint = HINTS.get(m["answer_type"], HINTS["integer"])
    lines = [f"Hint: {hint}", f"Question: {problem.question}" + (f" (Unit: {m['unit']})" if m.get("unit") else "")]
    if problem.choices:
        lines.append("Choices:")
        lines += [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(problem.choices)]
    return "\n".join(lines)


def ours(problem: Problem) -> str:
    """MathSE's solve prompt (what the policy is trained with) for a benchmark problem."""
    from mathse_rl.chat import format_options

    unit = problem.meta.get("unit")
    question = problem.question + (f" (Unit: {unit})" if unit else "")
    return solve_template(problem).format(question=question, options=format_options(problem.choices))


def _as_list(text: str) -> str | None:
    """A list answer in the release's written form (``str`` of a Python list): ``2014,2016`` and
    ``[2014, 2016]`` both read ``[2014, 2016]``; None when an item is not a plain number."""
    items = [t.strip() for t in str(text).strip().strip("[]()").split(",")]
    numbers = [plain_number(t) if re.fullmatch(r"[-+]?\d+(?:\.\d+)?", t) else None for t in items]
    if len(items) < 2 or any(n is None for n in numbers):
        return None
    return "[" + ", ".join(str(int(n)) if n == int(n) and "." not in t else t for n, t in zip(numbers, items)) + "]"


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))
