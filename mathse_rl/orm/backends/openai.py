"""The HTTP judge: an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, verl's router).

Requests run with bounded concurrency (``concurrency``) and up to ``max_retries`` retries
with exponential backoff on retryable failures (HTTP 5xx/429, timeouts, refused
connections, bodies that are not a chat completion). Each request, headers to last byte,
ends within ``timeout`` (a server that drips bytes cannot stretch it), and each item,
retries and waits included, within ``deadline`` counted from its first send. A
``Retry-After`` on 429/503 is honoured when it fits in the deadline; otherwise the item
fails at once. Bodies longer than ``max_reply_bytes`` are not read. Images are sent as
``data:`` URLs. The API key is read from the environment variable named by ``api_key_env``
at request time; it is never stored in the config, and secrets in the URL or
``request_kwargs`` are masked in reprs and logs.

    judge = load_judge({"backend": "openai", "endpoint": "http://127.0.0.1:8000/v1",
                        "model": "mathse-orm", "concurrency": 16})
    # inside verl, with the judge served behind its reward router:
    judge = load_judge({"backend": "openai", "reward_router_address": "10.0.0.5:30000", "model": "orm"})
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import threading
import time
import weakref
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from mathse_rl.orm.config import JudgeConfig, redact
from mathse_rl.orm.images import to_data_url
from mathse_rl.orm.judge import Judge, Reply, register_backend
from mathse_rl.orm.prompts import build_judge_prompt
from mathse_rl.types import RewardInput

# Failure kinds worth another try; other 4xx (bad request, auth) are not.
_RETRYABLE_PREFIXES = ("http_5", "http_429", "timeout", "connection", "malformed_response")
_THROTTLED = (429, 503)  # statuses whose Retry-After is honoured
logger = logging.getLogger(__name__)


class _RedactingFilter(logging.Filter):
    """Masks secrets (a key in the URL's query, a Bearer token) in records of the HTTP libraries,
    which log full request URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_FILTER = _RedactingFilter()


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/unreadable.

    >>> retry_after_seconds("5"), retry_after_seconds(None), retry_after_seconds("soon")
    (5.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def chat_url(endpoint: str) -> str:
    """``http://h:p/v1`` → ``http://h:p/v1/chat/completions`` (a full URL is kept)."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    path = path if path.endswith("/chat/completions") else path + "/chat/completions"
    return urlunsplit(parts._replace(path=path))  # a query string (some gateways take keys there) stays last


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
        _install_log_filter()
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]]" = (
            weakref.WeakKeyDictionary())
        self._clients_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # where synchronous calls run

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact(self.url)!r}, model={self.config.model!r})"

    @property
    def deadline(self) -> float:
        """Seconds one item may take from its first send, retries and Retry-After waits included."""
        c = self.config
        return c.deadline if c.deadline is not None else c.timeout * (c.max_retries + 1)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        # Synchronous callers share one event loop thread (and so one HTTP client) per judge.
        return asyncio.run_coroutine_threadsafe(self.areplies(items), self._background_loop()).result()

    async def areplies(self, items: Sequence[RewardInput]) -> list[Reply]:
        client, sem = self._client()
        return list(await asyncio.gather(*(self._one(client, sem, item) for item in items)))

    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        """This event loop's HTTP client and request slots: built once per loop and kept (building a
        client loads TLS certificates, tens of milliseconds of blocking work), so a process that
        judges from one loop holds one client and at most ``concurrency`` requests in flight."""
        import httpx

        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get(loop)
            if entry is None:
                limits = httpx.Limits(max_connections=self.config.concurrency,
                                      max_keepalive_connections=self.config.concurrency)
                entry = self._clients[loop] = (httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout),
                                                                 limits=limits),
                                               asyncio.Semaphore(self.config.concurrency))
        return entry

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._clients_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="openai-judge-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Close the HTTP clients (each on its own loop, where that loop still runs) and stop the
        synchronous callers' loop."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.items()), weakref.WeakKeyDictionary()
            loop, self._loop = self._loop, None
        for owner, (client, _) in clients:
            if owner.is_running() and not owner.is_closed():
                done = asyncio.run_coroutine_threadsafe(client.aclose(), owner)
                if owner is loop:
                    done.result(timeout=5)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    async def _one(self, client: Any, sem: asyncio.Semaphore, item: RewardInput) -> Reply:
        try:
            body = build_request(item, self.config)
        except Exception as exc:  # an unreadable image is this item's failure only
            return Reply(error=f"bad_input:{type(exc).__name__}")
        # The slot is held across retries (a throttled server gets fewer requests, not more) and the
        # deadline starts once the item holds it: waiting for the client's own slots is not the server's time.
        async with sem:
            reply = await self._attempts(client, body)
        if reply.error is not None:
            logger.info("judge request to %s failed: %s", redact(self.url), reply.error)
        return reply

    async def _attempts(self, client: Any, body: dict[str, Any]) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        kind, wait = "timeout", None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                delay = max(self.config.backoff * 2 ** (attempt - 1), wait or 0.0)
                if loop.time() + delay >= deadline:
                    self.counters.add("deadline_exceeded")
                    break  # the next try could not start in time: fail now, do not sleep past the deadline
                self.counters.add("retries")
                await asyncio.sleep(delay)
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.counters.add("deadline_exceeded")
                break
            try:
                kind, reply, wait = await asyncio.wait_for(self._post(client, body),
                                                           min(self.config.timeout, remaining))
            except asyncio.TimeoutError:
                kind, reply, wait = "timeout", None, None
            if reply is not None:
                return reply
            self.counters.add(f"attempt_error/{kind}")
            if not kind.startswith(_RETRYABLE_PREFIXES):
                break
        return Reply(error=kind)

    async def _post(self, client: Any, body: dict[str, Any]) -> tuple[str, Reply | None, float | None]:
        """One request: (failure kind, reply, Retry-After seconds); the body is read up to the size cap."""
        import json

        import httpx

        cap = self.config.max_reply_bytes
        try:
            async with client.stream("POST", self.url, json=body, headers=self._headers()) as r:
                wait = retry_after_seconds(r.headers.get("retry-after")) if r.status_code in _THROTTLED else None
                if r.status_code != 200:
                    return f"http_{r.status_code}", None, wait
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > cap:
                    return "reply_too_large", None, None
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():  # decoded: the cap holds for compressed bodies too
                    size += len(chunk)
                    if size > cap:
                        return "reply_too_large", None, None
                    chunks.append(chunk)
        except httpx.TimeoutException:
            return "timeout", None, None
        except (httpx.TransportError, httpx.StreamError):
            return "connection", None, None
        try:
            text = json.loads(b"".join(chunks))["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "malformed_response", None, None
        if not isinstance(text, str):
            return "malformed_response", None, None
        return "", Reply(text=text), None
