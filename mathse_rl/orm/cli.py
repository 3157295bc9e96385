"""``mathse-rl orm``: build data for, train, evaluate and serve the outcome reward model.

    mathse-rl orm build-data --input rollouts.jsonl --out orm-data          # or --toy 200
    mathse-rl orm train --model path/to/vlm --data orm-data/train.jsonl --output orm-judge --max-steps 50 --use-cpu
    mathse-rl orm eval --backend local --model orm-judge --data orm-data/test.jsonl --json report.json
    mathse-rl orm serve --model orm-judge --name orm --port 8000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _judge_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}backend", default=None, help="judge backend: local, openai or verifier")
    p.add_argument(f"--{prefix}model", default=None, help="local: checkpoint path; openai: served model name")
    p.add_argument(f"--{prefix}endpoint", default=None, help="openai: base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument(f"--{prefix}api-key-env", default=None, help="openai: env var holding the API key")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="orm_command", metavar="ORM_COMMAND", required=True)

    b = sub.add_parser("build-data", help="label rollouts and write a balanced ORM SFT set with a test split")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="rollouts jsonl: question, response, gold[, choices, images, correct, error_step, ...]")
    src.add_argument("--toy", type=int, help="use this many built-in toy rollouts instead")
    b.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl, images/, stats.json)")
    b.add_argument("--test-fraction", type=float, default=0.1)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-balance", action="store_true", help="keep the class ratio instead of balancing")
    b.add_argument("--label-format", choices=("full", "binary", "step"), default="full",
                   help="full: status + error step + analysis (paper); binary: status only (its ablation); "
                        "step: status + error step")
    b.add_argument("--template", choices=("full", "compact"), default="full",
                   help="judge prompt: full (MathSE's) or compact (for tiny judges; judge with the same template)")
    _judge_args(b, "teacher-")

    t = sub.add_parser("train", help="fine-tune a judge with trl's SFTTrainer")
    t.add_argument("--config", help="YAML with OrmTrainConfig fields (flags override it)")
    t.add_argument("--model", help="checkpoint to fine-tune")
    t.add_argument("--data", dest="train_data", help="train.jsonl from build-data")
    t.add_argument("--output", dest="output_dir", help="where to save the judge")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--batch-size", dest="per_device_train_batch_size", type=int)
    t.add_argument("--use-cpu", action="store_true", default=None)

    e = sub.add_parser("eval", help="measure a judge on a labelled split (Table 5 layout)")
    e.add_argument("--config", help="YAML with JudgeConfig fields (flags override it)")
    e.add_argument("--data", required=True, help="a split written by build-data (test.jsonl)")
    _judge_args(e)
    e.add_argument("--fallback", choices=("verifier", "none"), default=None)
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--max-new-tokens", type=int, default=None)
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    e.add_argument("--json", help="also write the report as JSON here")

    s = sub.add_parser("serve", help="serve a local judge over an OpenAI-compatible HTTP API")
    s.add_argument("--model", required=True, help="checkpoint path")
    s.add_argument("--name", default="orm", help="model name clients ask for")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch", type=int, default=8)
    s.add_argument("--max-tokens-cap", type=int, default=1024, help="the most tokens one request may generate")
    s.add_argument("--image-dir", default=None,
                   help="a directory whose files image_url may name (default: data: URLs only)")
    s.add_argument("--max-queue", type=int, default=64,
                   help="requests admitted at once; more get 503 with Retry-After")
    s.add_argument("--max-body-bytes", type=int, default=32 << 20, help="largest request body (413 above)")
    s.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image, in pixels")
    s.add_argument("--max-inflight-pixels", type=int, default=4 * 4096 * 4096,
                   help="decoded image pixels all admitted requests may hold; more get 503 with Retry-After")


def _yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def _set(values: dict[str, Any], **flags: Any) -> dict[str, Any]:
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def _read_rollouts(path: str) -> list[dict[str, Any]]:
    base = Path(path).parent
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                row["images"] = [str(base / p) if not str(p).startswith(("/", "data:")) else p
                                 for p in row.get("images") or ()]
                rows.append(row)
    return rows


def _build_data(args: argparse.Namespace) -> int:
    from mathse_rl.orm.data import build_orm_dataset, save_orm_dataset
    from mathse_rl.orm.judge import load_judge

    if args.toy:
        from mathse_rl.orm.toy import toy_rollouts

        rows = toy_rollouts(args.toy, seed=args.seed)
    else:
        rows = _read_rollouts(args.input)
    teacher = None
    if args.teacher_backend:
        teacher = load_judge(_set({"backend": args.teacher_backend, "fallback": "none"}, model=args.teacher_model,
                                  endpoint=args.teacher_endpoint, api_key_env=args.teacher_api_key_env))
    ds = build_orm_dataset(rows, teacher=teacher, balance=not args.no_balance, test_fraction=args.test_fraction,
                           seed=args.seed, label_format=args.label_format, template=args.template)
    paths = save_orm_dataset(ds, args.out)
    print(json.dumps({"paths": paths, "stats": ds.stats}, indent=2, sort_keys=True))
    return 0


def _train(args: argparse.Namespace) -> int:
    from mathse_rl.orm.train import train_orm

    values = _set(_yaml(args.config), model=args.model, train_data=args.train_data, output_dir=args.output_dir,
                  max_steps=args.max_steps, learning_rate=args.learning_rate,
                  per_device_train_batch_size=args.per_device_train_batch_size, use_cpu=args.use_cpu)
    print(train_orm(values))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from mathse_rl.orm.data import eval_items, load_orm_split
    from mathse_rl.orm.evaluate import evaluate_judge, format_table
    from mathse_rl.orm.judge import load_judge

    values = _set(_yaml(args.config), backend=args.backend, model=args.model, endpoint=args.endpoint,
                  api_key_env=args.api_key_env, fallback=args.fallback, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens)
    rows = load_orm_split(args.data)[: args.limit]
    judge = load_judge(values)
    items, labels = eval_items(rows)
    report = evaluate_judge(judge, items, labels)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mathse_rl.orm.backends.local import load_judge_model
    from mathse_rl.orm.serve import ChatModel, ServeConfig, make_app, run_server, tune_allocator

    tune_allocator()  # before the model and its threads allocate: this process is the server's own
    cfg = ServeConfig(max_batch=args.max_batch, max_tokens_cap=args.max_tokens_cap, image_dir=args.image_dir,
                      max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                      max_image_pixels=args.max_image_pixels, max_inflight_pixels=args.max_inflight_pixels)
    run_server(make_app(ChatModel(*load_judge_model(args.model)), args.name, config=cfg), args.host, args.port)
    return 0


_COMMANDS = {"build-data": _build_data, "train": _train, "eval": _eval, "serve": _serve}


def run(args: argparse.Namespace) -> int:
    return _COMMANDS[args.orm_command](args)
