"""The ``mathse`` reward manager with an ORM judge: HTTP clients built and event-loop stalls.

A verl reward-loop worker scores its samples as coroutines on one event loop; anything blocking
there (building an HTTP client, parsing, the rule-verifier fallback) stalls every other sample of
the worker. This scores ``--batches`` chunks of ``--batch`` samples through the manager against a
local OpenAI-compatible stand-in (:mod:`mathse_rl.orm.fault_server`) twice: with the judge
answering (``ok``) and with it failing (``http500``, so the verifier fallback decides every
sample), and prints, per phase, the HTTP clients built, the longest time the event loop went
without running a 5 ms ticker (its stall), and the wall time.

    HF_HUB_OFFLINE=1 python benchmarks/reward_loop_stall.py --tokenizer /path/to/tiny-model
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a local model dir whose tokenizer decodes responses")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import httpx
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto

    from mathse_rl.integrations.verl.reward_manager import MathSERewardManager
    from mathse_rl.orm.fault_server import FaultServer

    built: list[float] = []
    real_client = httpx.AsyncClient

    class Timed(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            t0 = time.perf_counter()
            super().__init__(*a, **kw)
            built.append(time.perf_counter() - t0)

    httpx.AsyncClient = Timed  # type: ignore[misc]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    def sample(k: int) -> DataProto:
        # Every sample is new (the verifier caches): half numbers, half expressions that its fast path
        # hands to the symbolic worker (what a fallback costs on real answers).
        if k % 2:
            response, gold = f"Step 1: expand.\nThe answer to this problem is (x-{k})(x+{k}).", f"x^2-{k * k}"
        else:
            response, gold = f"Step 1: {k} + {k} = {2 * k}.\nThe answer to this problem is {2 * k}.", str(2 * k)
        r = torch.tensor([tokenizer(response, add_special_tokens=False)["input_ids"]])
        p = torch.tensor([[1, 2, 3]])
        nt = {"data_source": np.array(["bench"], dtype=object),
              "reward_model": np.array([{"ground_truth": gold}], dtype=object),
              "extra_info": np.array([{"index": k}], dtype=object)}
        return DataProto.from_dict(tensors={"prompts": p, "responses": r, "input_ids": torch.cat([p, r], 1),
                                            "attention_mask": torch.ones(1, 3 + r.shape[1], dtype=torch.long)},
                                   non_tensors=nt)

    fresh = iter(range(10 ** 9))
    print(f"{'phase':<10} {'clients built':>13} {'client build ms':>16} {'stall ms, 1st chunk':>20} "
          f"{'stall ms, later':>16} {'wall s':>7}")
    with FaultServer() as server:
        for mode in ("ok", "http500"):
            rows = []
            for _ in range(args.repeats):
                built.clear()
                cfg = OmegaConf.create({"reward": {"reward_manager": {"name": "mathse"}, "reward_kwargs": {
                    "reward": "orm", "reward_options": {"backend": "openai", "endpoint": server.endpoint(mode),
                                                        "model": "m", "max_retries": 0, "concurrency": 16}}}})
                manager = MathSERewardManager(cfg, tokenizer, None)
                chunks = [[sample(next(fresh)) for _ in range(args.batch)] for _ in range(args.batches)]

                async def run():
                    gaps: list[list[float]] = [[0.0] for _ in range(args.batches)]
                    chunk, stop = [0], asyncio.Event()

                    async def ticker():
                        last = time.perf_counter()
                        while not stop.is_set():
                            await asyncio.sleep(0.005)
                            now = time.perf_counter()
                            gaps[chunk[0]].append(now - last - 0.005)
                            last = now

                    tick = asyncio.create_task(ticker())
                    t0 = time.perf_counter()
                    for b in range(args.batches):
                        chunk[0] = b
                        await asyncio.gather(*(manager.run_single(s) for s in chunks[b]))
                    wall = time.perf_counter() - t0
                    stop.set()
                    await tick
                    return max(gaps[0]), max(max(g) for g in gaps[1:]) if args.batches > 1 else 0.0, wall

                first, later, wall = asyncio.run(run())
                rows.append((len(built), statistics.median(built) * 1000 if built else 0.0, first * 1000,
                             later * 1000, wall))
                judge = getattr(getattr(manager, "reward", None), "judge", None)
                if judge is not None and hasattr(judge, "close"):
                    judge.close()
            med = [statistics.median(col) for col in zip(*rows)]
            print(f"{mode:<10} {med[0]:>13.0f} {med[1]:>16.1f} {med[2]:>20.0f} {med[3]:>16.0f} {med[4]:>7.2f}")
    httpx.AsyncClient = real_client  # type: ignore[misc]


if __name__ == "__main__":
    main()
