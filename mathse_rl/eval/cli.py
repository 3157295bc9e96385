"""``mathse-rl eval``: a checkpoint (or existing outputs) on a benchmark, scored without an LLM.

    mathse-rl eval --benchmark mathvista --data MathVista/data/testmini.json --model ckpt --out runs/mv
    mathse-rl eval --benchmark mathvista --data MathVista/data/testmini.json \\
        --responses MathVista/results/bard/output_bard.json --out runs/bard
    mathse-rl eval --benchmark mathvision --data MATH-V/data/test.jsonl --model ckpt --backend vllm \\
        --tensor-parallel-size 2 --data-parallel-size 4 --out runs/mathv
    mathse-rl eval --list

A killed run started again with the same ``--out`` continues where it stopped. Bad input (an
unknown benchmark, a missing file or image, malformed rows) is reported before any work, with
exit status 2.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mathse_rl.eval.run import EvalSettings

    d = EvalSettings(benchmark="", data="")
    parser.add_argument("--benchmark", "-b", help="mathvista | mathverse | mathvision | gsm8k | math500")
    parser.add_argument("--data", "-d", help="the benchmark's released file (json, jsonl, parquet, or a dataset folder)")
    parser.add_argument("--split", default=None, help="release split (default: the benchmark's, e.g. testmini)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", "-m", help="checkpoint to generate with (a directory or a hub id in the cache)")
    src.add_argument("--responses", "-r",
                     help="score these outputs instead: the benchmark's own output file, or JSONL of {id, response}")
    parser.add_argument("--out", "-o", default=d.out, help=f"output folder (default {d.out})")
    parser.add_argument("--backend", default=d.backend, choices=("auto", "vllm", "hf"),
                        help="generation engine (auto: vllm when installed and a GPU is visible)")
    parser.add_argument("--prompt", default=d.prompt,
                        help="official (the benchmark's prompt) | ours (MathSE's solve prompt) | cot (MathVerse) | "
                             "direct (MATH-Vision)")
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per generate call")
    parser.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM: GPUs per engine")
    parser.add_argument("--data-parallel-size", type=int, default=1, help="vLLM: engines (prompts split among them)")
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                        help="vllm.LLM option, e.g. max_model_len=8192 (repeatable)")
    parser.add_argument("--image-root", default=None, help="folder the release's image paths are relative to "
                                                           "(default: the data file's folder)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    parser.add_argument("--skip-bad-rows", action="store_true", help="score the usable rows; the others are listed")
    parser.add_argument("--no-nearest-option", action="store_true",
                        help="MathVista: a response that names no option is wrong (the release maps it to the "
                             "most similar option)")
    parser.add_argument("--report-to", nargs="+", default=["console"], help="console, wandb")
    parser.add_argument("--run-name", default=None, help="wandb run name")
    parser.add_argument("--table-rows", type=int, default=-1, help="rows of the wandb table (-1: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list the benchmarks, their splits and sources")


def _value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def run(args: argparse.Namespace) -> int:
    from mathse_rl.eval import get_benchmark, list_benchmarks
    from mathse_rl.eval.run import EvalInputError, EvalSettings, run_eval

    if args.list:
        for name in list_benchmarks():
            b = get_benchmark(name)
            print(f"{name:11s} splits {', '.join(b.splits)} (default {b.default_split}); prompts "
                  f"{', '.join(b.prompt_styles)}\n            files: {b.source}\n            licence: {b.license}")
        return 0
    if not args.benchmark or not args.data or not (args.model or args.responses):
        print("mathse-rl eval: give --benchmark, --data and one of --model / --responses (see --help)", file=sys.stderr)
        return 2
    bad_opts = [o for o in args.engine_option if "=" not in o]
    if bad_opts:
        print(f"mathse-rl eval: --engine-option must be KEY=VALUE, got {bad_opts}", file=sys.stderr)
        return 2
    settings = EvalSettings(
        benchmark=args.benchmark, data=args.data, split=args.split, model=args.model, responses=args.responses,
        out=args.out, backend=args.backend, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, temperature=args.temperature, tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        engine_options={k: _value(v) for k, v in (o.split("=", 1) for o in args.engine_option)},
        image_root=args.image_root, limit=args.limit, skip_bad_rows=args.skip_bad_rows,
        nearest_option=not args.no_nearest_option, report_to=list(args.report_to), run_name=args.run_name,
        table_rows=args.table_rows, progress=not args.no_progress)
    try:
        run_eval(settings)
    except EvalInputError as exc:
        print(f"mathse-rl eval: {exc}", file=sys.stderr)
        return 2
    print(f"results: {args.out}/results.json, {args.out}/results.md, {args.out}/predictions.jsonl")
    return 0
