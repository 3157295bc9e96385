"""Refiner ``openai``: a teacher behind an OpenAI-compatible endpoint writes the reflections.

This is the paper's setting (GPT-4o reflects on the policy's wrong paths). Configure it in
``reflect.openai``: ``model``, ``base_url`` (e.g. ``http://127.0.0.1:8000/v1`` for a vLLM
server; default the OpenAI API), ``api_key_env`` (the environment variable holding the key,
read at request time, never stored), ``max_tokens``, ``concurrency``, ``timeout``.

    mathse-rl evolve --config recipes/trl/qwen2_5_vl_7b.yaml reflect.refiner=openai \\
        reflect.openai.model=gpt-4o reflect.openai.base_url=https://api.openai.com/v1

A request that fails yields an empty refinement, which the re-judge rejects; the run goes on. Each
refinement carries the endpoint's finish reason: one cut at ``max_tokens`` is never accepted.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Any, Sequence

from mathse_rl.prompts import build_reflect_messages
from mathse_rl.step import Generation
from mathse_rl.types import Judgment, Problem

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _openai_messages(messages: list[dict[str, Any]], images: Sequence[Any]) -> list[dict[str, Any]]:
    """Our chat parts → OpenAI parts: each ``{"type": "image"}`` becomes an ``image_url`` data URL."""
    from mathse_rl.orm.images import to_data_url

    it = iter(images)
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": to_data_url(next(it))}}
                       if part.get("type") == "image" else {"type": "text", "text": part.get("text", "")}
                       for part in content]
        out.append({"role": m["role"], "content": content})
    return out


class OpenAIRefiner:
    """Reflections from a chat-completions endpoint, requests in parallel threads."""

    def __init__(self, config: Any, generator: Any = None):
        opts = dict(config.reflect.openai)
        self.model = opts.get("model") or "gpt-4o"
        self.url = (opts.get("base_url") or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.api_key_env = opts.get("api_key_env") or "OPENAI_API_KEY"
        self.max_tokens = int(opts.get("max_tokens") or 1024)
        self.concurrency = int(opts.get("concurrency") or 8)
        self.timeout = float(opts.get("timeout") or 120.0)
        self.failures = 0

    def refine(self, problems: Sequence[Problem], wrong: Sequence[str], critiques: Sequence[Judgment | None], *,
               n: int, temperature: float, max_new_tokens: int, template: str) -> list[list[Generation]]:
        import httpx

        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}

        def one(args) -> list[Generation]:
            p, w, c = args
            body = {"model": self.model, "n": n, "temperature": temperature, "max_tokens": self.max_tokens,
                    "messages": _openai_messages(build_reflect_messages(p, w, c, template=template), p.images)}
            try:
                r = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
                r.raise_for_status()
                # finish_reason "length": the teacher hit max_tokens; the step never accepts that refinement
                texts = [Generation(ch["message"]["content"] or "", ch.get("finish_reason"))
                         for ch in r.json()["choices"]]
            except Exception as exc:  # one failed request costs one refinement, not the stage
                self.failures += 1
                logger.warning("refiner request failed for %s: %s", p.id, exc)
                texts = []
            return (texts + [Generation("", "error")] * n)[:n]

        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, zip(problems, wrong, critiques)))
