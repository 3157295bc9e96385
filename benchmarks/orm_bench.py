"""ORM judging throughput: batched vs one-at-a-time (local), and HTTP concurrency 1 vs 8.

Both sides of each comparison judge the same items in the same run with the same model
(a tiny Qwen2.5-VL built offline; random weights, so every reply runs to ``--max-new-tokens``
unless it stops early, identically on both sides). Prints a table; ``--json`` saves it.
Wall-clock seconds are what a user waits; CPU seconds (this process, all threads) are the
work done, and stay meaningful on a machine shared with other jobs.

    python benchmarks/orm_bench.py                     # 32 items, tiny VLM size S, 1 CPU thread
    python benchmarks/orm_bench.py --size XS --threads 2 --json orm_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--size", default="S", choices=("XS", "S", "L"), help="tiny VLM size")
    ap.add_argument("--batch-size", type=int, default=16, help="local batched side")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8, help="HTTP concurrent side (the other is 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings per row")
    ap.add_argument("--cache", default=None, help="local judge KV cache: None (dynamic) or static")
    ap.add_argument("--model", default=None, help="judge checkpoint (default: build a tiny VLM)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mathse_rl.models.tiny import build_tiny
    from mathse_rl.orm import load_judge
    from mathse_rl.orm.backends.local import load_judge_model
    from mathse_rl.orm.data import build_orm_dataset, eval_items
    from mathse_rl.orm.serve import ChatModel, make_app, serve_in_thread
    from mathse_rl.orm.toy import toy_rollouts

    path = args.model or build_tiny(os.path.join(tempfile.gettempdir(), f"mathse-orm-bench-vlm-{args.size}"),
                                    kind="vlm", size=args.size)
    items, _ = eval_items(build_orm_dataset(toy_rollouts(args.items), balance=False, test_fraction=0.0).train)
    model, processor = load_judge_model(path, device="cpu")
    n = len(items)
    rows = []

    def local(bs: int):
        judge = load_judge({"backend": "local", "max_new_tokens": args.max_new_tokens, "batch_size": bs,
                            "cache_implementation": args.cache},
                           loaded_model=model, loaded_processor=processor)
        judge.replies(items[:2])  # warm-up
        return _timed(lambda: judge.replies(items), args.repeats)

    t1 = local(1)
    tb = local(args.batch_size)
    rows.append(("local, one at a time (batch_size=1)", *t1, 1.0, 1.0))
    rows.append((f"local, batched (batch_size={args.batch_size})", *tb, t1[0] / tb[0], t1[1] / tb[1]))

    server = serve_in_thread(make_app(ChatModel(model, processor), "orm", max_batch=args.concurrency))
    try:
        def http(c: int):
            judge = load_judge({"backend": "openai", "endpoint": server.url + "/v1", "model": "orm",
                                "concurrency": c, "max_new_tokens": args.max_new_tokens, "timeout": 600})
            judge.replies(items[:2])
            sec = _timed(lambda: judge.replies(items), args.repeats)
            errors = {k: v for k, v in judge.counters.snapshot().items() if k.startswith("attempt_error")}
            assert not errors, errors
            return sec

        h1 = http(1)
        hc = http(args.concurrency)
    finally:
        server.stop()
    rows.append(("HTTP, concurrency 1", *h1, 1.0, 1.0))
    rows.append((f"HTTP, concurrency {args.concurrency} (server batches up to {args.concurrency})", *hc,
                 h1[0] / hc[0], h1[1] / hc[1]))

    print(f"ORM judging throughput: {n} items, tiny VLM {args.size}, max_new_tokens={args.max_new_tokens}, "
          f"torch threads={args.threads}, local KV cache={args.cache or 'dynamic'}")
    print()
    print("| setting | wall s | items/s (wall) | speed-up (wall) | CPU s | speed-up (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, wall, cpu, r_wall, r_cpu in rows:
        print(f"| {name} | {wall:.2f} | {n / wall:.1f} | {r_wall:.1f}x | {cpu:.2f} | {r_cpu:.1f}x |")
    if args.json:
        keys = ("setting", "wall_s", "cpu_s", "speedup_wall", "speedup_cpu")
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": [dict(zip(keys, r)) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
