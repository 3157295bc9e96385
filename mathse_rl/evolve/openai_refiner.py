"""Refiner ``openai``: a teacher behind an OpenAI-compatible endpoint writes the reflections.

This is the paper's setting (GPT-4o reflects on the policy's wrong paths). Configure it in
``reflect.openai``: ``model``, ``base_url`` (e.g. ``http://127.0.0.1:8000/v1`` for a vLLM
server; default the OpenAI API), ``api_key_env`` (the environment variable holding the key,
read at request time, never stored), ``max_tokens``, ``concurrency``, ``timeout`` (seconds one
request may take), and optionally ``deadline`` (seconds per wrong path, retries and waits
included; default ``timeout × (max_retries + 1)``), ``max_retries``, ``backoff``,
``max_reply_bytes`` and ``image_dirs`` (folders whose image files may be sent; default the
data's ``image_root``, else the folders of the data files, and the run's own ``images`` folder).

    mathse-rl evolve --config recipes/trl/qwen2_5_vl_7b.yaml reflect.refiner=openai \\
        reflect.openai.model=gpt-4o reflect.openai.base_url=https://api.openai.com/v1

Requests go through the judge's HTTP client (:class:`~mathse_rl.orm.http.ChatClient`): the same
deadline, retries with backoff, ``Retry-After``, reply size cap and masked secrets. A request that
fails yields empty refinements, which the re-judge rejects; the run goes on. Each refinement
carries the endpoint's finish reason: one cut at ``max_tokens`` is never accepted.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from mathse_rl.evolve.config import image_dirs
from mathse_rl.prompts import build_reflect_messages
from mathse_rl.step import Generation
from mathse_rl.types import Judgment, Problem

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _openai_messages(messages: list[dict[str, Any]], images: Sequence[Any],
                     image_dirs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Our chat parts → OpenAI parts: each ``{"type": "image"}`` becomes an ``image_url`` data URL."""
    from mathse_rl.orm.images import to_data_url

    it = iter(images)
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": to_data_url(next(it), image_dirs)}}
                       if part.get("type") == "image" else {"type": "text", "text": part.get("text", "")}
                       for part in content]
        out.append({"role": m["role"], "content": content})
    return out


class OpenAIRefiner:
    """Reflections from a chat-completions endpoint, ``concurrency`` requests at a time."""

    def __init__(self, config: Any, generator: Any = None):
        from mathse_rl.orm.http import ChatClient

        opts = dict(config.reflect.openai)
        self.model = opts.get("model") or "gpt-4o"
        base_url = (opts.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.max_tokens = int(opts.get("max_tokens") or 1024)
        self.image_dirs = [str(d) for d in (opts.get("image_dirs") or image_dirs(config))]
        self.client = ChatClient(
            base_url + "/chat/completions", api_key_env=opts.get("api_key_env") or "OPENAI_API_KEY",
            timeout=float(opts.get("timeout") or 120.0), deadline=opts.get("deadline"),
            max_retries=int(opts.get("max_retries", 2)), backoff=float(opts.get("backoff", 0.5)),
            max_reply_bytes=int(opts.get("max_reply_bytes") or 4 << 20), concurrency=int(opts.get("concurrency") or 8))
        self.url = self.client.url  # secrets masked
        self.failures = 0

    def refine(self, problems: Sequence[Problem], wrong: Sequence[str], critiques: Sequence[Judgment | None], *,
               n: int, temperature: float, max_new_tokens: int, template: str) -> list[list[Generation]]:
        bodies: list[dict[str, Any] | None] = []
        for p, w, c in zip(problems, wrong, critiques):
            try:
                messages = _openai_messages(build_reflect_messages(p, w, c, template=template), p.images,
                                            self.image_dirs)
            except Exception as exc:  # an image that may not be sent costs this path's refinements only
                logger.warning("refiner request not sent for %s: %s", p.id, exc)
                bodies.append(None)
                continue
            bodies.append({"model": self.model, "n": n, "temperature": temperature, "max_tokens": self.max_tokens,
                           "messages": messages})

        def parse(reply: dict[str, Any], i: int) -> list[Generation]:
            # finish_reason "length": the teacher hit max_tokens; the step never accepts that refinement
            return [Generation(ch["message"]["content"] or "", ch.get("finish_reason")) for ch in reply["choices"]]

        out = []
        for p, outcome in zip(problems, self.client.run(bodies, parse)):
            texts = outcome.value if outcome.error is None else []
            if outcome.error is not None:  # one failed request costs one path's refinements, not the stage
                self.failures += 1
                logger.warning("refiner request failed for %s: %s", p.id, outcome.error)
            out.append((list(texts) + [Generation("", "error")] * n)[:n])
        return out
