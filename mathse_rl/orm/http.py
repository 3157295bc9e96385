"""The one HTTP client for OpenAI-compatible chat endpoints: the judge's and the teacher refiner's.

Each body is one item. Requests run with bounded concurrency (``concurrency``), each request,
headers to last byte, ends within ``timeout`` (a server that drips bytes cannot stretch it),
and each item — retries, ``Retry-After`` waits and the caller's parsing of the reply included —
ends within ``deadline`` counted from when it is first sent. Retryable failures (HTTP 5xx/429,
timeouts, refused connections, bodies that are not a chat completion) are retried up to
``max_retries`` times with exponential backoff; a ``Retry-After`` on 429/503 is honoured when it
fits in the deadline, otherwise the item fails at once. Bodies longer than ``max_reply_bytes``
are not read.

Secrets are never kept in clear: the endpoint URL (which may carry a key in its query or
userinfo) is held as a :class:`Secret` and shown masked; the API key is read from the
environment variable ``api_key_env`` at request time.

One ``httpx.AsyncClient`` is built per event loop and kept (building one loads TLS certificates,
tens of milliseconds of blocking work), so a process judging from one loop holds one client and at
most ``concurrency`` requests in flight however many batches it sends; synchronous callers share
one event loop thread per client. :meth:`ChatClient.close` closes them.

    client = ChatClient("http://127.0.0.1:8000/v1/chat/completions", timeout=30, max_retries=2)
    outcomes = client.run([{"model": "m", "messages": [...]}], parse=lambda reply: reply["choices"][0])
    # [Outcome(value={...}, error=None)] or [Outcome(value=None, error="http_503")]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from mathse_rl.orm.config import redact

# Failure kinds worth another try; other 4xx (bad request, auth) are not.
RETRYABLE_PREFIXES = ("http_5", "http_429", "timeout", "connection", "malformed_response")
_THROTTLED = (429, 503)  # statuses whose Retry-After is honoured
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError)  # a reply the caller's parse cannot read
logger = logging.getLogger(__name__)


class Secret:
    """A string that no repr, log line, config dump or pickle shows: it is stored masked with a
    random pad and revealed only where a request is built.

    >>> s = Secret("https://h/v1?api_key=sk-1")
    >>> s, b"sk-1" in s._masked, s.reveal()[-4:]
    (Secret('***'), False, 'sk-1')
    """

    __slots__ = ("_pad", "_masked")

    def __init__(self, value: str) -> None:
        data = value.encode("utf-8")
        self._pad = secrets.token_bytes(len(data))
        self._masked = bytes(a ^ b for a, b in zip(data, self._pad))

    def reveal(self) -> str:
        return bytes(a ^ b for a, b in zip(self._masked, self._pad)).decode("utf-8")

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unmask, (self._masked, self._pad))


def _unmask(masked: bytes, pad: bytes) -> Secret:
    s = Secret.__new__(Secret)
    s._masked, s._pad = masked, pad
    return s


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


def install_log_filter() -> None:
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


@dataclass(frozen=True)
class Outcome:
    """One item's result: the caller's parsed value, or the kind of failure."""

    value: Any = None
    error: str | None = None  # e.g. "timeout", "http_500", "connection", "malformed_response", "parse_timeout"


class _Counts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class ChatClient:
    """POST chat-completions bodies within the limits above; see the module docstring.

    ``counters`` is anything with ``add(key, n=1)`` (a judge's :class:`JudgeCounters`); it receives
    ``retries``, ``deadline_exceeded`` and ``attempt_error/<kind>``.
    """

    def __init__(self, url: str, *, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 60.0,
                 deadline: float | None = None, max_retries: int = 2, backoff: float = 0.5,
                 max_reply_bytes: int = 4 << 20, concurrency: int = 8, counters: Any = None) -> None:
        if concurrency < 1 or timeout <= 0 or max_retries < 0 or max_reply_bytes < 1:
            raise ValueError("concurrency, timeout and max_reply_bytes must be positive and max_retries >= 0")
        self._url = Secret(url)
        self.url = redact(url)  # for reprs and logs
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff = float(timeout), int(max_retries), float(backoff)
        self.deadline = float(deadline) if deadline is not None else self.timeout * (self.max_retries + 1)
        self.max_reply_bytes, self.concurrency = int(max_reply_bytes), int(concurrency)
        self.counters = counters if counters is not None else _Counts()
        self._https: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]]" = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # where synchronous calls run
        install_log_filter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, deadline={self.deadline:g})"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    # -- public API -------------------------------------------------------------------
    def run(self, bodies: Sequence[dict[str, Any] | None],
            parse: Callable[[dict[str, Any], int], Any]) -> list[Outcome]:
        """Send every body (None: skipped, ``bad_input``) and parse each reply with ``parse(reply, index)``.

        Callable from sync code and from inside a running event loop: synchronous callers share this
        client's event loop thread (and so one HTTP client).
        """
        return asyncio.run_coroutine_threadsafe(self.arun(bodies, parse), self._background_loop()).result()

    async def arun(self, bodies: Sequence[dict[str, Any] | None],
                   parse: Callable[[dict[str, Any], int], Any]) -> list[Outcome]:
        """:meth:`run` on the caller's event loop (this loop's HTTP client, built on first use and kept)."""
        http, sem = self._http()
        # Replies are decoded and parsed off the event loop, inside each item's deadline.
        parsers = concurrent.futures.ThreadPoolExecutor(min(4, self.concurrency), thread_name_prefix="reply-parse")
        try:
            return list(await asyncio.gather(*(
                self._one(http, sem, parsers, body, parse, i) if body is not None
                else _done(Outcome(error="bad_input")) for i, body in enumerate(bodies))))
        finally:
            parsers.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Close the HTTP clients (each on its own loop, where that loop still runs) and stop the
        synchronous callers' loop; a later call builds new ones."""
        with self._lock:
            https, self._https = list(self._https.items()), weakref.WeakKeyDictionary()
            loop, self._loop = self._loop, None
        for owner, (http, _) in https:
            if owner.is_running() and not owner.is_closed():
                done = asyncio.run_coroutine_threadsafe(http.aclose(), owner)
                if owner is loop:
                    done.result(timeout=5)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    # -- internals --------------------------------------------------------------------
    def _http(self) -> tuple[Any, asyncio.Semaphore]:
        """This event loop's HTTP client and request slots (at most ``concurrency`` requests in flight)."""
        import httpx

        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._https.get(loop)
            if entry is None:
                limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
                entry = self._https[loop] = (httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), limits=limits),
                                             asyncio.Semaphore(self.concurrency))
        return entry

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="chat-client-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    async def _one(self, http: Any, sem: asyncio.Semaphore, parsers: Any, body: dict[str, Any],
                   parse: Callable[[dict[str, Any], int], Any], index: int) -> Outcome:
        # The slot is held across retries (a throttled server gets fewer requests, not more) and the
        # deadline starts once the item holds it: waiting for the client's own slots is not the server's time.
        async with sem:
            outcome = await self._attempts(http, parsers, body, parse, index)
        if outcome.error is not None:
            logger.info("request to %s failed: %s", self.url, outcome.error)
        return outcome

    async def _attempts(self, http: Any, parsers: Any, body: dict[str, Any],
                        parse: Callable[[dict[str, Any], int], Any], index: int) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        kind, wait = "timeout", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = max(self.backoff * 2 ** (attempt - 1), wait or 0.0)
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
                kind, data, wait = await asyncio.wait_for(self._post(http, body), min(self.timeout, remaining))
            except asyncio.TimeoutError:
                kind, data, wait = "timeout", None, None
            if data is not None:
                try:
                    value = await asyncio.wait_for(loop.run_in_executor(parsers, _decode_and_parse, data, parse, index),
                                                   max(0.0, deadline - loop.time()))
                    return Outcome(value)
                except asyncio.TimeoutError:
                    self.counters.add("deadline_exceeded")
                    return Outcome(error="parse_timeout")  # the reply came, but reading it did not end in time
                except _PARSE_ERRORS:
                    kind = "malformed_response"
            self.counters.add(f"attempt_error/{kind}")
            if not kind.startswith(RETRYABLE_PREFIXES):
                break
        return Outcome(error=kind)

    async def _post(self, http: Any, body: dict[str, Any]) -> tuple[str, bytes | None, float | None]:
        """One request: (failure kind, body bytes, Retry-After seconds); the body is read up to the size cap."""
        import httpx

        cap = self.max_reply_bytes
        try:
            async with http.stream("POST", self._url.reveal(), json=body, headers=self._headers()) as r:
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
        return "", b"".join(chunks), None


def _decode_and_parse(data: bytes, parse: Callable[[dict[str, Any], int], Any], index: int) -> Any:
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("the reply is not a JSON object")
    return parse(reply, index)


async def _done(outcome: Outcome) -> Outcome:
    return outcome


def message_text(reply: dict[str, Any], choice: int = 0) -> str:
    """The text of one choice of a chat completion (a ``ValueError`` when it is not one)."""
    text = reply["choices"][choice]["message"]["content"]
    if not isinstance(text, str):
        raise ValueError("the completion's content is not text")
    return text
