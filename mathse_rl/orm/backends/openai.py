"""The HTTP judge: an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, verl's router).

Requests run with bounded concurrency (``concurrency``), a per-request ``timeout``, and up
to ``max_retries`` retries with exponential backoff on retryable failures (HTTP 5xx/429,
timeouts, refused connections, bodies that are not a chat completion). Images are sent as
``data:`` URLs. The API key is read from the environment variable named by
``api_key_env`` at request time; it is never stored in the config nor logged.

    judge = load_judge({"backend": "openai", "endpoint": "http://127.0.0.1:8000/v1",
                        "model": "mathse-orm", "concurrency": 16})
    # inside verl, with the judge served behind its reward router:
    judge = load_judge({"backend": "openai", "reward_router_address": "10.0.0.5:30000", "model": "orm"})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any, Sequence

from mathse_rl.orm.config import JudgeConfig
from mathse_rl.orm.images import to_data_url
from mathse_rl.orm.judge import Judge, Reply, register_backend
from mathse_rl.orm.prompts import build_judge_prompt
from mathse_rl.types import RewardInput

# Failure kinds worth another try; other 4xx (bad request, auth) are not.
_RETRYABLE_PREFIXES = ("http_5", "http_429", "timeout", "connection", "malformed_response")


def chat_url(endpoint: str) -> str:
    """``http://h:p/v1`` → ``http://h:p/v1/chat/completions`` (a full URL is kept)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def build_request(item: RewardInput, config: JudgeConfig) -> dict[str, Any]:
    """The chat-completions body for one item, images first as data URLs."""
    text = build_judge_prompt(item.question, item.response, item.gold, item.choices, len(item.images),
                              template=config.prompt_template)
    content: Any = text
    if item.images:
        content = [{"type": "image_url", "image_url": {"url": to_data_url(img)}} for img in item.images]
        content.append({"type": "text", "text": text})
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
    }
    body.update(config.request_kwargs)
    return body


@register_backend("openai")
class OpenAIJudge(Judge):
    """Judge through an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__(config)
        endpoint = config.endpoint
        if not endpoint and config.reward_router_address:
            endpoint = f"http://{config.reward_router_address}/v1"
        if not endpoint:
            raise ValueError("judge backend 'openai' needs `endpoint` (base URL) or `reward_router_address`")
        if not config.model:
            raise ValueError("judge backend 'openai' needs `model`: the served model's name")
        self.url = chat_url(endpoint)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.areplies(items))
        # Called from inside an event loop (e.g. an async trainer): run on a private loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.areplies(items)).result()

    async def areplies(self, items: Sequence[RewardInput]) -> list[Reply]:
        import httpx

        sem = asyncio.Semaphore(self.config.concurrency)
        limits = httpx.Limits(max_connections=self.config.concurrency,
                              max_keepalive_connections=self.config.concurrency)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout), limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, sem, item) for item in items)))

    async def _one(self, client: Any, sem: asyncio.Semaphore, item: RewardInput) -> Reply:
        try:
            body = build_request(item, self.config)
        except Exception as exc:  # an unreadable image is this item's failure only
            return Reply(error=f"bad_input:{type(exc).__name__}")
        kind = "unknown"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.counters.add("retries")
                await asyncio.sleep(self.config.backoff * 2 ** (attempt - 1))
            async with sem:
                kind, reply = await self._post(client, body)
            if reply is not None:
                return reply
            self.counters.add(f"attempt_error/{kind}")
            if not kind.startswith(_RETRYABLE_PREFIXES):
                break
        return Reply(error=kind)

    async def _post(self, client: Any, body: dict[str, Any]) -> tuple[str, Reply | None]:
        import httpx

        try:
            r = await client.post(self.url, json=body, headers=self._headers())
        except httpx.TimeoutException:
            return "timeout", None
        except httpx.TransportError:
            return "connection", None
        if r.status_code != 200:
            return f"http_{r.status_code}", None
        try:
            text = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "malformed_response", None
        if not isinstance(text, str):
            return "malformed_response", None
        return "", Reply(text=text)
