"""A stand-in for ``vllm.LLM`` with its offline contract and its process model.

Contract: ``get_tokenizer().apply_chat_template``, ``generate(requests, SamplingParams)`` returning one
output per request with ``n`` texts. Process model: as vLLM V1 (``VLLM_ENABLE_V1_MULTIPROCESSING=1``, the
default), the engine's core runs in a child process that ``LLM(...)`` starts (vLLM's ``EngineCore`` is a
``multiprocessing`` process of its own); ``generate`` hands the requests to it and waits for the outputs.
A process that may not have children (a daemon) therefore fails here as it would with vLLM. Each text
names the GPUs and the pids of the engine's process and its core, so tests can check where prompts went.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from types import SimpleNamespace

from mathse_rl.pipes import requests


class FakeParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16):
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens


class _Tokenizer:
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        content = messages[-1]["content"]
        return content if isinstance(content, str) else " ".join(c.get("text", "<image>") for c in content)


def _engine_core(conn, tp: int) -> None:
    """The child process: requests in, texts out, until ``None`` or the parent goes away."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    for msg in requests(conn):
        prompts, n, parent = msg
        conn.send([[f"gpus={devices} tp={tp} pid={parent} core={os.getpid()} images={k_img} k={k} {p}"
                    for k in range(n)] for p, k_img in prompts])


class FakeLLM:
    def __init__(self, model: str, tensor_parallel_size: int = 1, **options):
        self.model, self.tp, self.options = model, tensor_parallel_size, options
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # vLLM V1 starts its EngineCore this way (a daemon child of the process that builds the LLM).
        self.core = ctx.Process(target=_engine_core, args=(child, tensor_parallel_size), daemon=True)
        self.core.start()

    def get_tokenizer(self):
        return _Tokenizer()

    def generate(self, requests, params, use_tqdm=False):
        self._conn.send(([(r["prompt"], len(r.get("multi_modal_data", {}))) for r in requests], params.n,
                         os.getpid()))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=t) for t in texts]) for texts in self._conn.recv()]

    def shutdown(self):
        if self.core.is_alive():
            self._conn.send(None)
            self.core.join(timeout=10)
