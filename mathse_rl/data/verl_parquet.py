"""Math problems (Geometry3K-, MathVista-style or our own records) ⇄ verl's RL parquet.

verl's ``RLHFDataset`` reads one row per problem::

    data_source   str
    prompt        [{"role": "user", "content": "<image>...solve prompt..."}]   # one <image> per image
    images        [{"bytes": PNG bytes, "path": None}, ...]                    # data.image_key=images
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": gold}
    extra_info    {"split", "index", "id", "question", "choices",              # choices: options or None
                   "benchmark", "benchmark_meta"}                              # rows of a benchmark (else None)
    agent_name    (optional) the verl agent loop for this row

``extra_info.question`` (the bare question) and ``extra_info.choices`` are what our reward
manager and the ``mathse_reflect`` agent loop read; the prompt is MathSE's solve prompt.
Rows of every split but ``train`` get ``agent_name=single_turn_agent`` by default: verl runs
validation through the same agent loop as training, and validation should score the
policy's first answers, not reflected ones.

    >>> from mathse_rl.types import Problem
    >>> row = problem_to_row(Problem(id="q1", question="What is 2 + 3?", gold="5", choices=("4", "5")), 0)
    >>> row["reward_model"]["ground_truth"], row["extra_info"]["choices"]
    ('5', ['4', '5'])

Rows read from a benchmark's release (``--benchmark mathvista --data MathVista/data/testmini.json``,
:mod:`mathse_rl.eval`) carry the benchmark's own prompt, and ``extra_info.benchmark`` /
``benchmark_meta`` (its name and the fields its scoring rules need, as JSON): the reward
``benchmark`` (:mod:`mathse_rl.eval.reward`) scores them by those rules, so verl's validation
reports the benchmark's accuracy.

Command line: ``python scripts/prepare_verl_data.py --source geometry3k --out ~/data/geo3k``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mathse_rl.prompts import SOLVE_TEMPLATE, format_options
from mathse_rl.types import Problem

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"  # verl's placeholder, replaced by the row's images in order
ABILITY = "math"
VALIDATION_AGENT_LOOP = "single_turn_agent"  # verl's plain loop, for rows that must not be reflected on

# ---------------------------------------------------------------------------------------------
# record formats: name -> (record, index) -> Problem
# ---------------------------------------------------------------------------------------------
RecordParser = Callable[[Mapping[str, Any], int], Problem]
FORMATS: dict[str, RecordParser] = {}


def register_format(name: str) -> Callable[[RecordParser], RecordParser]:
    def decorator(fn: RecordParser) -> RecordParser:
        FORMATS[name] = fn
        return fn

    return decorator


def get_format(name: str) -> RecordParser:
    if name not in FORMATS:
        raise KeyError(f"unknown record format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]


def _images(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(v for v in value if v is not None)
    return (value,)


def _choices(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a JSON list stored as text
        value = json.loads(value)
    values = tuple(str(v) for v in value)
    return values or None


@register_format("geometry3k")
def from_geometry3k(record: Mapping[str, Any], index: int) -> Problem:
    """``{"images": [...], "problem": "<image>Find x.", "answer": "3"}`` (hiyouga/geometry3k);
    optional ``choices`` for the multiple-choice variant."""
    return Problem(
        id=str(record.get("id", index)),
        question=str(record["problem"]).replace(IMAGE_TOKEN, "").strip(),
        gold=str(record["answer"]),
        images=_images(record.get("images")),
        choices=_choices(record.get("choices")),
        data_source=str(record.get("data_source", "hiyouga/geometry3k")),
    )


@register_format("mathvista")
def from_mathvista(record: Mapping[str, Any], index: int) -> Problem:
    """``{"pid", "question", "decoded_image" or "image", "choices", "answer", "unit", ...}`` (AI4Math/MathVista).

    For multiple choice the gold is the text of the right option, as MathVista stores it;
    the verifier accepts the option's letter or its text.
    """
    image = record.get("decoded_image") or record.get("image")
    unit = record.get("unit")
    meta = {k: record[k] for k in ("question_type", "answer_type", "precision", "unit") if record.get(k) is not None}
    question = str(record["question"]).strip()
    if unit:
        question = f"{question} (Unit: {unit})"
    return Problem(
        id=str(record.get("pid", index)),
        question=question,
        gold=str(record["answer"]),
        images=_images(image),
        choices=_choices(record.get("choices")),
        data_source=str(record.get("data_source", "AI4Math/MathVista")),
        meta=meta,
    )


@register_format("problem")
def from_problem_record(record: Mapping[str, Any], index: int) -> Problem:
    """Our own record: ``{"id", "question", "gold", "images", "choices", "data_source"}``."""
    return Problem(
        id=str(record.get("id", index)),
        question=str(record["question"]),
        gold=None if record.get("gold") is None else str(record["gold"]),
        images=_images(record.get("images")),
        choices=_choices(record.get("choices")),
        data_source=str(record.get("data_source", "")),
    )


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def image_to_cell(image: Any, base_dir: Path | None = None) -> dict[str, Any]:
    """A PIL image, a path, raw bytes or a ``{"bytes", "path"}`` dict → ``{"bytes": PNG, "path": None}``."""
    from PIL import Image

    if isinstance(image, Mapping):
        if image.get("bytes"):
            return {"bytes": bytes(image["bytes"]), "path": None}
        image = image.get("path")
    if isinstance(image, (bytes, bytearray)):
        return {"bytes": bytes(image), "path": None}
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        image = Image.open(path)
    if not isinstance(image, Image.Image):
        raise ValueError(f"cannot read an image from {type(image).__name__}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def cell_to_image(cell: Any) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(cell["bytes"])).convert("RGB")


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------
def solve_prompt(problem: Problem, template: str = SOLVE_TEMPLATE) -> str:
    """The user turn's text: one ``<image>`` per image, then MathSE's solve prompt."""
    text = template.format(question=problem.question, options=format_options(problem.choices))
    return IMAGE_TOKEN * len(problem.images) + text


# Problem.meta keys a benchmark row keeps in extra_info.benchmark_meta (what its scoring rules read);
# the rest (the release's whole row, the prompts) is not needed once the prompt is written.
_META_DROPPED = ("row", "query", "query_wo", "query_cot")


def benchmark_prompt(problem: Problem, style: str = "official") -> str | None:
    """The user turn of a benchmark problem (one ``<image>`` per image, then the benchmark's prompt);
    None for a problem that is not from a benchmark."""
    name = (problem.meta or {}).get("benchmark")
    if not name:
        return None
    from mathse_rl.eval import get_benchmark

    return IMAGE_TOKEN * len(problem.images) + get_benchmark(name).prompt(problem, style)


def problem_to_row(problem: Problem, index: int, split: str = "train", template: str = SOLVE_TEMPLATE,
                   base_dir: Path | None = None, agent_name: str | None = None,
                   prompt_style: str = "official") -> dict[str, Any]:
    """One verl parquet row for ``problem`` (with an ``agent_name`` column when one is given).

    A benchmark problem gets the benchmark's prompt (``prompt_style``) and its scoring fields."""
    bench_text = benchmark_prompt(problem, prompt_style)
    meta = {k: v for k, v in (problem.meta or {}).items() if k not in _META_DROPPED} if bench_text else None
    row = {
        "data_source": problem.data_source or "mathse",
        "prompt": [{"role": "user", "content": bench_text if bench_text else solve_prompt(problem, template)}],
        "images": [image_to_cell(im, base_dir) for im in problem.images],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": "" if problem.gold is None else problem.gold},
        "extra_info": {
            "split": split,
            "index": index,
            "id": problem.id,
            "question": problem.question,
            "choices": list(problem.choices) if problem.choices else None,
            "benchmark": meta["benchmark"] if meta else None,
            "benchmark_meta": json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta else None,
        },
    }
    if agent_name:
        row["agent_name"] = agent_name
    return row


def row_to_problem(row: Mapping[str, Any]) -> Problem:
    """A row of a verl parquet written by :func:`write_verl_parquet` back to a :class:`Problem`."""
    extra = dict(row.get("extra_info") or {})
    images = tuple(cell_to_image(c) for c in (row.get("images") if row.get("images") is not None else []))
    gold = (row.get("reward_model") or {}).get("ground_truth")
    question = extra.get("question")
    if not question:  # a parquet from elsewhere: fall back to the prompt text
        question = str(row["prompt"][-1]["content"]).replace(IMAGE_TOKEN, "").strip()
    choices = extra.get("choices")
    meta = json.loads(extra["benchmark_meta"]) if extra.get("benchmark_meta") else {}
    return Problem(
        id=str(extra.get("id", extra.get("index", ""))),
        question=str(question),
        gold=None if gold in (None, "") else str(gold),
        images=images,
        choices=_choices(list(choices)) if choices is not None else None,
        data_source=str(row.get("data_source", "")),
        meta=meta,
    )


def write_verl_parquet(problems: Iterable[Problem], path: str | Path, split: str = "train",
                       template: str = SOLVE_TEMPLATE, base_dir: Path | None = None,
                       agent_name: str | None = None, prompt_style: str = "official") -> int:
    """Write ``problems`` as a verl parquet; returns the number of rows written.

    ``agent_name`` fills verl's per-row agent-loop column (left out when None, so the
    trainer's ``rollout.agent.default_agent_loop`` applies).

    A problem that cannot be converted (unreadable image, missing field) is logged and
    skipped; the count of skipped problems is logged at the end.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, skipped = [], 0
    for index, problem in enumerate(problems):
        try:
            rows.append(problem_to_row(problem, index, split, template, base_dir, agent_name, prompt_style))
        except (OSError, ValueError, KeyError) as exc:
            skipped += 1
            logger.warning("skipping problem %s: %s", problem.id, exc)
    if skipped:
        logger.warning("%d of %d problems skipped", skipped, skipped + len(rows))
    if not rows:
        raise ValueError(f"no problem could be converted for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=row_schema(with_agent_name=bool(agent_name))), path)
    return len(rows)


def read_verl_parquet(path: str | Path) -> list[Problem]:
    import pyarrow.parquet as pq

    return [row_to_problem(r) for r in pq.read_table(path).to_pylist()]


def row_schema(with_agent_name: bool = False):
    """The parquet schema of a verl row (pyarrow comes with ``datasets``)."""
    import pyarrow as pa

    agent = [("agent_name", pa.string())] if with_agent_name else []
    return pa.schema(agent + [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([
            ("split", pa.string()), ("index", pa.int64()), ("id", pa.string()),
            ("question", pa.string()), ("choices", pa.list_(pa.string())),
            ("benchmark", pa.string()), ("benchmark_meta", pa.string()),
        ])),
    ])


# ---------------------------------------------------------------------------------------------
# sources: name -> (split, limit) -> problems
# ---------------------------------------------------------------------------------------------
Source = Callable[[argparse.Namespace], dict[str, list[Problem]]]
SOURCES: dict[str, Source] = {}


def register_source(name: str) -> Callable[[Source], Source]:
    def decorator(fn: Source) -> Source:
        SOURCES[name] = fn
        return fn

    return decorator


def _limit(records: Sequence[Any], limit: int | None) -> Sequence[Any]:
    return records if not limit or limit < 0 else records[:limit]


def _hub(name: str, splits: Mapping[str, str], fmt: str, args: argparse.Namespace) -> dict[str, list[Problem]]:
    from datasets import load_dataset

    parse = get_format(fmt)
    out: dict[str, list[Problem]] = {}
    for ours, theirs in splits.items():
        ds = load_dataset(name, split=theirs)
        n = len(ds) if not args.limit or args.limit < 0 else min(args.limit, len(ds))
        out[ours] = [parse(ds[i], i) for i in range(n)]
    return out


@register_source("geometry3k")
def geometry3k_source(args: argparse.Namespace) -> dict[str, list[Problem]]:
    """hiyouga/geometry3k from the Hugging Face Hub: train and test splits."""
    return _hub("hiyouga/geometry3k", {"train": "train", "test": "test"}, "geometry3k", args)


@register_source("mathvista")
def mathvista_source(args: argparse.Namespace) -> dict[str, list[Problem]]:
    """AI4Math/MathVista testmini (1,000 problems) as the test split."""
    return _hub("AI4Math/MathVista", {"test": "testmini"}, "mathvista", args)


@register_source("synthetic")
def synthetic_source(args: argparse.Namespace) -> dict[str, list[Problem]]:
    """The offline bar-chart world of mathse_rl.data.synthetic (no download; its held-out split as test)."""
    from mathse_rl.data.synthetic import make_split

    n = 64 if not args.limit or args.limit < 0 else args.limit
    return {"train": make_split("train", n, seed=args.seed), "test": make_split("heldout", max(1, n // 4), seed=args.seed)}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records from a .jsonl, .json (a list) or .parquet file."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        return list(json.loads(path.read_text()))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported input {path} (use .jsonl, .json or .parquet)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write math problems as verl RL parquet (train.parquet, test.parquet).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", choices=sorted(SOURCES), help="a known dataset")
    src.add_argument("--input", type=Path, nargs="+", help="local record files (.jsonl/.json/.parquet)")
    src.add_argument("--benchmark", help="a benchmark's release file as a validation set: mathvista, mathverse, "
                                         "mathvision, gsm8k, math500 (with --data; see mathse_rl.eval)")
    p.add_argument("--data", type=Path, help="the benchmark's released file (with --benchmark)")
    p.add_argument("--format", default="geometry3k", choices=sorted(FORMATS), help="record format of --input files")
    p.add_argument("--split", default=None,
                   help="split name of --input files (default train), or the benchmark's split (default its own)")
    p.add_argument("--prompt", default="official", help="benchmark prompt style: official | ours | ...")
    p.add_argument("--image-root", type=Path, default=None, help="benchmark images folder (default: beside --data)")
    p.add_argument("--skip-bad-rows", action="store_true", help="benchmark: write the usable rows, list the others")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--limit", type=int, default=-1, help="at most this many problems per split (-1: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic source")
    p.add_argument("--val-agent-loop", default=VALIDATION_AGENT_LOOP,
                   help="agent_name of rows in splits other than train ('' = none: the trainer's default loop)")
    return p


def benchmark_split(args: argparse.Namespace) -> tuple[str, list[Problem]]:
    """(split, problems) of a benchmark's release file; unusable rows stop it unless --skip-bad-rows."""
    from mathse_rl.eval import load_benchmark

    if args.data is None:
        raise SystemExit("--benchmark needs --data (the release's file)")
    bench, problems, bad = load_benchmark(args.benchmark, args.data, args.split, image_root=args.image_root,
                                          need_images=bench_multimodal(args.benchmark),
                                          limit=None if not args.limit or args.limit < 0 else args.limit)
    split = args.split or bench.default_split
    if not bench.has_answers(split):
        raise SystemExit(f"{bench.name} {split}: the answers are not public, so it cannot be a validation set")
    if bad:
        listing = "\n".join(f"  {b.id}: {b.reason}" for b in bad[:20])
        if not args.skip_bad_rows:
            raise SystemExit(f"{len(bad)} rows of {args.data} cannot be used (--skip-bad-rows writes the rest):\n{listing}")
        print(f"skipped {len(bad)} bad rows:\n{listing}")
    return split, problems


def bench_multimodal(name: str) -> bool:
    from mathse_rl.eval import get_benchmark

    return get_benchmark(name).multimodal


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.benchmark:
        split, problems = benchmark_split(args)
        path = args.out / f"{split}.parquet"
        n = write_verl_parquet(problems, path, split=split, agent_name=args.val_agent_loop or None,
                               prompt_style=args.prompt)
        print(f"{split}: {n} rows -> {path} (score with reward=benchmark)")
        return 0
    if args.split is None:
        args.split = "train"
    if args.source:
        splits = SOURCES[args.source](args)
    else:
        parse = get_format(args.format)
        problems: list[Problem] = []
        for path in args.input:
            records = _limit(read_records(path), args.limit)
            problems += [parse(r, i) for i, r in enumerate(records)]
        splits = {args.split: problems}
    base_dir = args.input[0].parent if args.input else None
    for split, problems in splits.items():
        path = args.out / f"{split}.parquet"
        agent = None if split == "train" else (args.val_agent_loop or None)
        n = write_verl_parquet(problems, path, split=split, base_dir=base_dir, agent_name=agent)
        print(f"{split}: {n} rows -> {path}")
    return 0


__all__ = [
    "FORMATS", "SOURCES", "register_format", "register_source", "get_format", "problem_to_row", "row_to_problem",
    "write_verl_parquet", "read_verl_parquet", "row_schema", "solve_prompt", "main",
]
