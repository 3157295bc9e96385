"""A stand-in for ``vllm.LLM`` with its offline contract: ``get_tokenizer().apply_chat_template``,
``generate(requests, SamplingParams)`` returning one output per request with ``n`` texts.
Each text names the GPUs the engine process saw, so tests can check how prompts were spread."""

from __future__ import annotations

import os
from types import SimpleNamespace


class FakeParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16):
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens


class _Tokenizer:
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        content = messages[-1]["content"]
        return content if isinstance(content, str) else " ".join(c.get("text", "<image>") for c in content)


class FakeLLM:
    def __init__(self, model: str, tensor_parallel_size: int = 1, **options):
        self.model, self.tp, self.options = model, tensor_parallel_size, options
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def get_tokenizer(self):
        return _Tokenizer()

    def generate(self, requests, params, use_tqdm=False):
        return [SimpleNamespace(outputs=[SimpleNamespace(
            text=f"gpus={self.devices} tp={self.tp} pid={os.getpid()} images={len(r.get('multi_modal_data', {}))} "
                 f"k={k} {r['prompt']}") for k in range(params.n)]) for r in requests]
