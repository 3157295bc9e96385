"""Generate (resumable) and score a benchmark; write the results.

    >>> from mathse_rl.eval.run import EvalSettings, run_eval
    >>> run_eval(EvalSettings(benchmark="mathvista", data="MathVista/data/testmini.json",
    ...                       responses="output_bard.json", out="runs/bard"))        # doctest: +SKIP

The output folder holds ``responses.jsonl`` (generation, appended one batch at a time: a killed
run continues with the first batch it had not finished, and ends with the same file as a run that
was never stopped), ``predictions.jsonl`` (every problem: response, extraction, prediction,
verdict, categories), ``results.json`` (overall, per-category tables, the rows not scored and
why), ``results.md`` (what is printed) and the benchmark's own files (MathVista: its output and
scores files, or the test submission file).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mathse_rl.chat import user_message
from mathse_rl.eval import report
from mathse_rl.eval.base import CATEGORIES, BadRow, Benchmark, get_benchmark
from mathse_rl.eval.data import load_benchmark
from mathse_rl.eval.responses import read_responses
from mathse_rl.types import Problem

logger = logging.getLogger(__name__)

RESPONSES = "responses.jsonl"
GENERATION = "generation.json"  # what the responses were generated with (a resume must match it)


class EvalInputError(ValueError):
    """Bad input found before any work: the message says what and where (one line, then the rows)."""


@dataclass
class EvalSettings:
    benchmark: str  # registry name: mathvista | mathverse | mathvision | gsm8k | math500
    data: str  # the release's file (or a parquet / dataset directory)
    split: str | None = None  # release split (None: the benchmark's default, e.g. testmini)
    model: str | None = None  # checkpoint to generate with (or responses)
    responses: str | None = None  # existing outputs to score instead of generating
    out: str = "mathse_runs/eval"  # output folder
    backend: str = "auto"  # auto (vllm when installed and a GPU is visible, else hf) | vllm | hf
    prompt: str = "official"  # the benchmark's prompt style: official | ours | benchmark-specific (cot, direct)
    max_new_tokens: int = 1024  # completion budget per problem
    batch_size: int = 16  # prompts per generate call (the unit of resumption)
    temperature: float = 0.0  # 0: greedy (the benchmarks' protocol)
    tensor_parallel_size: int = 1  # vLLM: GPUs per engine
    data_parallel_size: int = 1  # vLLM: engines, prompts split among them
    engine_options: dict[str, Any] = field(default_factory=dict)  # vllm.LLM options (max_model_len, ...)
    image_root: str | None = None  # folder the release's relative image paths are under (default: the data file's)
    limit: int | None = None  # first N problems only
    skip_bad_rows: bool = False  # go on without unusable rows (listed) instead of stopping
    nearest_option: bool = True  # MathVista: a response naming no option gets the most similar one (release rule)
    report_to: list[str] = field(default_factory=lambda: ["console"])  # console | wandb | none
    run_name: str | None = None  # wandb run name (default: benchmark-split-<model or responses name>)
    table_rows: int = -1  # rows of the wandb table (-1: all)
    progress: bool = True  # progress bars
    threads: int = 0  # torch CPU threads for hf generation (0: what the machine can give now)


def run_eval(s: EvalSettings, *, generator: Any = None, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate (unless ``s.responses``), score and write everything; returns the results dict.

    ``generator``: an object with the loop's ``generate(messages, images, n, temperature,
    max_new_tokens)`` (tests, callers with their own engine); default built from ``s``."""
    if bool(s.model) == bool(s.responses) and generator is None:
        raise EvalInputError("give exactly one of --model (generate, then score) and --responses (score outputs)")
    try:
        bench = get_benchmark(s.benchmark)
    except KeyError as exc:
        raise EvalInputError(exc.args[0]) from None
    prompt_style = s.prompt
    if prompt_style not in bench.prompt_styles:
        raise EvalInputError(f"{bench.name} prompt must be one of {list(bench.prompt_styles)}, got {prompt_style!r}")
    generating = not s.responses
    try:
        bench, problems, bad = load_benchmark(bench, s.data, s.split, image_root=s.image_root,
                                              need_images=generating and bench.multimodal, limit=s.limit)
    except (FileNotFoundError, ValueError) as exc:
        raise EvalInputError(str(exc)) from None
    split = s.split or bench.default_split
    if hasattr(bench, "nearest_option"):
        bench.nearest_option = s.nearest_option
    if bad and not s.skip_bad_rows:
        shown = "\n".join(f"  {b.id}: {b.reason}" for b in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise EvalInputError(f"{len(bad)} of {len(bad) + len(problems)} rows of {s.data} cannot be used "
                             f"(fix them, or pass --skip-bad-rows to score the rest; they stay listed):\n{shown}{more}")
    if not problems:
        raise EvalInputError(f"no usable rows in {s.data}")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    extra: list[BadRow] = []
    if s.responses:
        try:
            responses, resp_bad = read_responses(s.responses, bench)
        except (FileNotFoundError, ValueError) as exc:
            raise EvalInputError(str(exc)) from None
        known = {p.id for p in problems}
        extra = resp_bad + [BadRow(i, "no such problem in the data") for i in responses if i not in known]
    else:
        responses = generate(bench, problems, s, out, generator=generator)
    results = score_and_write(bench, split, problems, responses, s, out, bad=bad, extra=extra)
    printer(report.markdown(results))
    _track(results, problems, s, out)
    return results


# ----------------------------------------------------------------------------- generation
def messages_for(bench: Benchmark, problem: Problem, style: str) -> list[dict[str, Any]]:
    """The chat of one problem: its images, then the benchmark's prompt (the model's own chat
    template is applied by the generator)."""
    return [user_message(bench.prompt(problem, style), len(problem.images))]


def generate(bench: Benchmark, problems: Sequence[Problem], s: EvalSettings, out: Path, *,
             generator: Any = None) -> dict[str, str]:
    """Responses for every problem, from ``out/responses.jsonl`` where already written.

    Batches are fixed slices of the problem order, so a resumed run regenerates exactly the
    batches it had not finished, with the same batch composition (greedy outputs of a batched
    engine can depend on what else is in the batch)."""
    from tqdm.auto import tqdm

    settings = {"benchmark": bench.name, "split": s.split or bench.default_split, "data": str(Path(s.data).resolve()),
                "model": s.model, "prompt": s.prompt, "max_new_tokens": s.max_new_tokens,
                "temperature": s.temperature, "batch_size": s.batch_size, "limit": s.limit}
    state = out / GENERATION
    if state.exists():
        before = json.loads(state.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            raise EvalInputError(f"{out} holds responses generated with other settings {changed}; "
                                 "use another --out (or delete it) to start over")
    else:
        _atomic_write(state, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    path = out / RESPONSES
    done = _read_done(path)
    batches = [list(problems[i:i + s.batch_size]) for i in range(0, len(problems), s.batch_size)]
    todo = [b for b in batches if any(p.id not in done for p in b)]
    owned = bool(todo) and generator is None  # a generator we build we also release; a caller's is theirs
    if owned:
        generator = make_generator(s)
    bar = tqdm(total=len(problems), initial=len(problems) - sum(len(b) for b in todo), desc=f"generate {bench.name}",
               disable=not s.progress, unit="problem")
    with open(path, "a", encoding="utf-8") as f:
        for batch in todo:
            msgs = [messages_for(bench, p, s.prompt) for p in batch]
            outs = generator.generate(msgs, [p.images for p in batch], n=1, temperature=s.temperature,
                                      max_new_tokens=s.max_new_tokens)
            lines = "".join(json.dumps({"id": p.id, "response": o[0]}, ensure_ascii=False) + "\n"
                            for p, o in zip(batch, outs) if p.id not in done)
            f.write(lines)  # one write per batch; a kill mid-write leaves at most a partial last line
            f.flush()
            os.fsync(f.fileno())
            done.update({p.id: o[0] for p, o in zip(batch, outs) if p.id not in done})
            bar.update(len(batch))
    bar.close()
    if owned and callable(getattr(generator, "release", None)):
        generator.release()  # the engines' accelerator memory back before scoring
    return done


def _read_done(path: Path) -> dict[str, str]:
    """Responses already written; a partial last line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done: dict[str, str] = {}
    for line in data[:end].decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            done[str(row["id"])] = row["response"]
    return done


def make_generator(s: EvalSettings) -> Any:
    """The offline loop's generator (transformers or vLLM, tensor/data parallel) for ``s.model``."""
    from mathse_rl.evolve.components import get_generator
    from mathse_rl.evolve.config import check_model_ref, load_config, resolve_threads

    backend = s.backend
    if backend == "auto":
        backend = "vllm" if _vllm_usable() else "hf"
    try:
        check_model_ref("--model", str(s.model))
    except ValueError as exc:
        raise EvalInputError(str(exc)) from None
    cfg = load_config(generate={
        "backend": backend, "batch_size": s.batch_size, "top_p": 1.0, "tensor_parallel_size": s.tensor_parallel_size,
        "data_parallel_size": s.data_parallel_size, "options": dict(s.engine_options)}, train={"bf16": True})
    if backend in ("hf", "transformers"):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(resolve_threads(s.threads))
    return get_generator(backend, cfg, str(s.model))


def _vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- scoring and files
def score_rows(bench: Benchmark, problems: Sequence[Problem], responses: dict[str, str], *,
               progress: bool = False) -> list[dict[str, Any]]:
    """One record per problem (data order): the response, what the verifier read, the benchmark's
    prediction and verdict, and the categories. A problem without a response is wrong, and says so."""
    from tqdm.auto import tqdm

    rows = []
    for p in tqdm(problems, desc=f"score {bench.name}", disable=not progress, unit="problem"):
        resp = responses.get(p.id)
        sc = bench.score(p, resp if resp is not None else "")
        correct = sc.correct if resp is not None or sc.correct is None else False
        rows.append({"id": p.id, "correct": correct, "prediction": sc.prediction, "extraction": sc.extraction,
                     "reason": sc.reason if resp is not None else "no_response", "gold": p.gold,
                     "categories": dict(p.meta.get(CATEGORIES) or {}), "response": resp})
    return rows


def score_and_write(bench: Benchmark, split: str, problems: Sequence[Problem], responses: dict[str, str],
                    s: EvalSettings, out: Path, *, bad: Sequence[BadRow] = (), extra: Sequence[BadRow] = ()
                    ) -> dict[str, Any]:
    rows = score_rows(bench, problems, responses, progress=s.progress)
    hidden = not bench.has_answers(split)
    results: dict[str, Any] = {
        "benchmark": bench.name, "title": bench.title, "split": split, "data": str(s.data),
        "model": s.model, "responses": s.responses, "prompt": s.prompt if s.model else None,
        "scorer": "rule-based: mathse_rl.verify extracts and compares, the benchmark's rules on top; no LLM call",
        "overall": {"correct": None, "total": len(rows), "accuracy": None} if hidden else report.overall(rows),
        "categories": {} if hidden else report.tables(rows, bench.axes),
        "reasons": report.reasons(rows),
        "bad_rows": [b.as_dict() for b in bad],
        "missing_responses": [r["id"] for r in rows if r["response"] is None],
        "extra_responses": [b.as_dict() for b in extra],
        "source": bench.source, "license": bench.license,
    }
    writer = getattr(bench, "write_release_files", None)
    if callable(writer):
        results.update(writer(out, split, problems, rows, results, _tag(s)))
    _write_jsonl(out / "predictions.jsonl", rows)
    _atomic_write(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    _atomic_write(out / "results.md", report.markdown(results))
    return results


def _tag(s: EvalSettings) -> str:
    src = s.model or s.responses or "model"
    return Path(str(src).rstrip("/")).stem.replace("output_", "") or "model"


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _track(results: dict[str, Any], problems: Sequence[Problem], s: EvalSettings, out: Path) -> None:
    """Scalars (overall and per category) and a table of images, responses and verdicts (wandb)."""
    sinks = [x for x in s.report_to if x not in ("console", "none")]
    if not sinks:
        return
    from mathse_rl.tracking import Tracker

    name = results["benchmark"]
    run_name = s.run_name or f"{name}-{results['split']}-{_tag(s)}"
    tracker = Tracker(sinks, run_name=run_name, config=dataclasses.asdict(s), dir=str(out), printer=lambda _: None)
    try:
        scalars: dict[str, Any] = {}
        if results["overall"]["accuracy"] is not None:
            scalars[f"eval/{name}/accuracy"] = results["overall"]["accuracy"]
        for axis, by in results["categories"].items():
            for value, c in by.items():
                scalars[f"eval/{name}/{axis}/{value}"] = c["accuracy"]
        tracker.log(scalars, step=0)
        preds = {json.loads(line)["id"]: json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()}
        shown = problems if s.table_rows < 0 else problems[:s.table_rows]
        columns = ["id", "image", "question", "response", "extraction", "prediction", "gold", "correct", "reason",
                   "categories"]
        rows = []
        for p in shown:
            r = preds[p.id]
            rows.append([p.id, p.images[0] if p.images else None, p.question, r["response"], r["extraction"],
                         r["prediction"], r["gold"], r["correct"], r["reason"],
                         json.dumps(r["categories"], ensure_ascii=False)])
        tracker.table(f"eval/{name}/{results['split']}", columns, rows, step=0)
        tracker.summary({f"eval/{name}/accuracy": results["overall"]["accuracy"]})
    finally:
        tracker.finish()


__all__ = ["EvalSettings", "EvalInputError", "run_eval", "generate", "score_rows", "score_and_write",
           "messages_for", "make_generator"]
