"""The HTTP judge: an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, verl's router).

Requests go through :class:`~mathse_rl.orm.http.ChatClient` (the one HTTP client of the
package, shared with the teacher refiner): bounded concurrency, a per-request ``timeout`` and a
per-item ``deadline`` that covers retries, ``Retry-After`` waits and the parsing of the reply,
and a reply size cap. Images are sent as ``data:`` URLs only: PIL images, bytes and ``data:``
URLs are encoded, a local file is read only from the directories in ``image_dirs``, and an
``http(s)`` URL is never passed on (the judge server would fetch what the dataset names). The
API key is read from the environment variable named by ``api_key_env`` at request time; a secret
in the endpoint URL or in ``request_kwargs`` is kept masked (:class:`~mathse_rl.orm.http.Secret`)
and never appears in the judge's attributes, reprs or logs.

    judge = load_judge({"backend": "openai", "endpoint": "http://127.0.0.1:8000/v1",
                        "model": "mathse-orm", "concurrency": 16})
    # inside verl, with the judge served behind its reward router:
    judge = load_judge({"backend": "openai", "reward_router_address": "10.0.0.5:30000", "model": "orm"})
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from mathse_rl.orm.config import JudgeConfig, redact
from mathse_rl.orm.http import ChatClient, Secret, chat_url, message_text
from mathse_rl.orm.images import to_data_url
from mathse_rl.orm.judge import Judge, Reply, register_backend
from mathse_rl.orm.parse import parse_judgment_report
from mathse_rl.orm.prompts import build_judge_prompt
from mathse_rl.orm.steps import segment_steps
from mathse_rl.types import RewardInput


def build_request(item: RewardInput, config: JudgeConfig) -> dict[str, Any]:
    """The chat-completions body for one item, images first as data URLs (only ``config.image_dirs`` files)."""
    text = build_judge_prompt(item.question, item.response, item.gold, item.choices, len(item.images),
                              template=config.prompt_template)
    content: Any = text
    if item.images:
        content = [{"type": "image_url", "image_url": {"url": to_data_url(img, config.image_dirs)}}
                   for img in item.images]
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
        endpoint = config.endpoint
        if not endpoint and config.reward_router_address:
            endpoint = f"http://{config.reward_router_address}/v1"
        if not endpoint:
            raise ValueError("judge backend 'openai' needs `endpoint` (base URL) or `reward_router_address`")
        if not config.model:
            raise ValueError("judge backend 'openai' needs `model`: the served model's name")
        # The judge keeps no secret in clear: the URL and request_kwargs live masked, the config shows ***.
        self._request_kwargs = Secret(json.dumps(config.request_kwargs))
        config = dataclasses.replace(config, endpoint=redact(config.endpoint) if config.endpoint else None,
                                     request_kwargs=redact(config.request_kwargs))
        super().__init__(config)
        self.client = ChatClient(chat_url(endpoint), api_key_env=config.api_key_env, timeout=config.timeout,
                                 deadline=config.deadline, max_retries=config.max_retries, backoff=config.backoff,
                                 max_reply_bytes=config.max_reply_bytes, concurrency=config.concurrency,
                                 counters=self.counters)

    @property
    def url(self) -> str:
        """The chat-completions URL, secrets masked."""
        return self.client.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, model={self.config.model!r})"

    def close(self) -> None:
        """Close the HTTP client's connections (a later call opens new ones)."""
        self.client.close()

    @property
    def deadline(self) -> float:
        """Seconds one item may take from its first send, retries, Retry-After waits and parsing included."""
        return self.client.deadline

    def _bodies(self, items: Sequence[RewardInput]) -> tuple[list[dict[str, Any] | None], list[str | None]]:
        bodies: list[dict[str, Any] | None] = []
        errors: list[str | None] = []
        for item in items:
            try:
                body = build_request(item, self.config)
                body.update(json.loads(self._request_kwargs.reveal()))
                bodies.append(body)
                errors.append(None)
            except Exception as exc:  # an unreadable or refused image is this item's failure only, nothing is sent
                bodies.append(None)
                errors.append(f"bad_input:{type(exc).__name__}")
        return bodies, errors

    @staticmethod
    def _replies(outcomes: Sequence[Any], errors: Sequence[str | None]) -> list[Reply]:
        return [Reply(error=err) if err else o.value if o.error is None else Reply(error=o.error)
                for o, err in zip(outcomes, errors)]

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        bodies, errors = self._bodies(items)
        return self._replies(self.client.run(bodies, self._parser(items)), errors)

    async def areplies(self, items: Sequence[RewardInput]) -> list[Reply]:
        bodies, errors = self._bodies(items)
        return self._replies(await self.client.arun(bodies, self._parser(items)), errors)

    @staticmethod
    def _parser(items: Sequence[RewardInput]):
        """Reads reply ``i`` as item ``i``'s judgment; runs inside that item's deadline."""

        def parse(reply: dict[str, Any], i: int) -> Reply:
            text = message_text(reply)
            item = items[i]
            return Reply(text=text, report=parse_judgment_report(text, segment_steps(item.response), item.response))

        return parse
