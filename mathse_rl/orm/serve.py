"""A small OpenAI-compatible chat server for a local judge model (``mathse-rl orm serve``).

It answers ``POST /v1/chat/completions`` (string or ``text``/``image_url`` parts) and
``GET /v1/models``, batching concurrent requests into one ``generate`` call (up to
``max_batch`` requests, waiting at most ``max_wait_ms`` for a batch to fill). It is meant
for tests, benchmarks and single-machine runs; serve a real judge with vLLM or SGLang,
which speak the same protocol.

What a client cannot do to it:

* a malformed request (``max_tokens="abc"``, a message without a role, a bad image) is
  that request's 400, checked before it joins a batch; a batch that still fails is
  retried request by request, so one request never fails its neighbours;
* ``max_tokens`` above :attr:`ServeConfig.max_tokens_cap` is capped (``finish_reason``
  says ``length``);
* a client that disconnects stops its own generation at the next token; SIGTERM stops
  every generation at the next token and the server exits within a few seconds;
* ``image_url`` is read only from ``data:`` URLs, or from files inside the directory the
  operator names (``image_dir``), reached without following a symbolic link and refused when
  hard-linked (it may be a file outside); every image failure gives the same message, so the
  server never tells which paths exist;
* only PNG, JPEG and WebP are decoded, and each image's size (pixels, longest side, aspect
  ratio) is checked from its header before it is decoded;
* at most ``max_queue`` requests are admitted at once and their images hold at most
  ``max_inflight_pixels`` decoded pixels; beyond that a request gets 503 with ``Retry-After``
  before its body is read; a body above ``max_body_bytes`` gets 413 without being read whole;
* bodies are checked on a thread of their own and images decoded on ``decode_workers``
  others (a request without images never waits behind a large decode), and when the last
  admitted request is done the server collects garbage and hands its freed heap back to the
  system (``mathse-rl orm serve`` also fixes glibc's mmap threshold and arena count,
  :func:`tune_allocator`), so a burst does not leave its peak behind.

    server = serve_in_thread(make_app(ChatModel(*load_judge_model("path/to/judge")), "orm"))
    judge = load_judge({"backend": "openai", "endpoint": server.url + "/v1", "model": "orm"})
    server.stop()
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import ctypes
import ctypes.util
import gc
import io
import json
import math
import os
import socket
import stat
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

from mathse_rl.models.tiny import encode_batch

ROLES = ("system", "user", "assistant", "developer")
_MAX_MESSAGES = 256  # messages in one request


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # the only formats decoded (not every format PIL reads)


@dataclass
class ServeConfig:
    max_batch: int = 8  # requests per generate() call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_tokens_cap: int = 1024  # the most tokens one request may generate; larger asks are capped
    default_max_tokens: int = 256  # when a request names no max_tokens
    image_dir: str | None = None  # a directory whose files image_url may name (None: data: URLs only)
    max_image_bytes: int = 16 << 20  # largest encoded image accepted
    max_image_pixels: int = 4096 * 4096  # largest decoded image accepted (no decompression bombs), from its header
    max_image_side: int = 8192  # longest side of an image, from its header
    max_aspect_ratio: float = 200.0  # long side / short side (Qwen2-VL's processor refuses more), from the header
    max_images: int = 8  # images in one request
    max_body_bytes: int = 32 << 20  # largest request body; a larger one gets 413 before it is read whole
    max_queue: int = 64  # requests admitted at once (being read, waiting or generating); more get 503 + Retry-After
    max_inflight_pixels: int = 4 * 4096 * 4096  # decoded pixels all admitted requests may hold; more get 503
    decode_workers: int = 2  # threads that decode images (bounds the decoding peak); one more checks bodies
    disconnect_poll_s: float = 0.1  # how often a waiting request checks that its client is still there


class RequestError(ValueError):
    """A request the server refuses with HTTP 400; the message is safe to show the client."""


def _image_error(cfg: ServeConfig) -> RequestError:
    where = " or the name of a file in the server's image directory" if cfg.image_dir else ""
    return RequestError(f"image_url must be a data: URL with a base64 PNG, JPEG or WebP image{where}, within the "
                        f"server's size limits")


def _read_inside(root: str, name: str, max_bytes: int) -> bytes | None:
    """The bytes of the regular file ``name`` inside ``root``, or None.

    The path is walked one component at a time from ``root`` with ``O_NOFOLLOW`` (no symbolic link,
    no ``..``, nothing swapped in between check and open), and a file with more than one hard link is
    refused: another of its names may lie outside ``root``.
    """
    root = os.path.realpath(root)
    if name.startswith("file://"):
        name = name[len("file://"):]
    if os.path.isabs(name):
        if not name.startswith(root + os.sep):
            return None
        name = name[len(root) + 1:]
    parts = name.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    try:
        for part in parts[:-1]:
            fds.append(os.open(part, nofollow | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open(parts[-1], nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=fds[-1])
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > max_bytes:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(max_bytes + 1)
    finally:
        for fd in reversed(fds):
            os.close(fd)


def open_image(url: Any, cfg: ServeConfig):
    """The image an ``image_url`` names, opened but not decoded: its format and size are checked from
    the header first (PNG/JPEG/WebP; pixels, longest side and aspect ratio within ``cfg``).

    ``url`` is a ``data:`` URL or a file inside ``cfg.image_dir``. Every failure raises the same
    :class:`RequestError` (no oracle on which paths exist).
    """
    from PIL import Image

    raw: bytes | None = None
    try:
        if isinstance(url, str) and url.startswith("data:"):
            head, _, data = url.partition(",")
            if ";base64" in head and len(data) <= cfg.max_image_bytes * 4 // 3 + 4:
                raw = base64.b64decode(data, validate=True)
        elif isinstance(url, str) and cfg.image_dir:
            raw = _read_inside(cfg.image_dir, url, cfg.max_image_bytes)
        if raw is not None and len(raw) <= cfg.max_image_bytes:
            img = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
            w, h = img.size
            if img.format in IMAGE_FORMATS and 0 < w * h <= cfg.max_image_pixels \
                    and max(w, h) <= cfg.max_image_side and max(w, h) <= cfg.max_aspect_ratio * min(w, h):
                return img
    except Exception:  # unreadable, whatever the reason: the same answer as any other bad image
        pass
    raise _image_error(cfg)


def decode_image(img: Any, cfg: ServeConfig):
    """Decode an image from :func:`open_image` to RGB (the same error as any bad image if it fails)."""
    try:
        img.load()
        if img.mode == "RGB":
            return img  # no second copy of a large image
        rgb = img.convert("RGB")
        img.close()
        return rgb
    except Exception:
        raise _image_error(cfg) from None


def load_image(url: Any, cfg: ServeConfig):
    """The RGB image an ``image_url`` names (:func:`open_image`, then decoded)."""
    return decode_image(open_image(url, cfg), cfg)


def _as_int(body: dict[str, Any], key: str, default: int | None, low: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, got {type(value).__name__}")
    if value < low:
        raise RequestError(f"{key} must be >= {low}, got {value}")
    return value


@dataclass
class ChatRequest:
    """A validated request: messages, token limits and the images they carry."""

    messages: list[dict[str, Any]]
    max_tokens: int
    min_tokens: int = 0
    images: list[Any] = field(default_factory=list)
    capped: bool = False  # max_tokens was lowered to the server's cap

    @property
    def pixels(self) -> int:
        """Decoded pixels the request's images hold (0 for URLs not yet opened)."""
        return sum(img.size[0] * img.size[1] for img in self.images if hasattr(img, "size"))


def parse_request(body: Any, cfg: ServeConfig, load_images: bool = True) -> ChatRequest:
    """Check one chat-completions body field by field; a :class:`RequestError` says what is wrong.

    With ``load_images`` the images are opened and checked (:func:`open_image`), not yet decoded:
    :func:`decode_image` does that once the server has room for their pixels.
    """
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    if len(messages) > _MAX_MESSAGES:
        raise RequestError(f"at most {_MAX_MESSAGES} messages")
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    max_tokens = _as_int(body, "max_tokens", cfg.default_max_tokens, 1)
    min_tokens = _as_int(body, "min_tokens", 0, 0)
    assert max_tokens is not None and min_tokens is not None
    capped = max_tokens > cfg.max_tokens_cap
    max_tokens = min(max_tokens, cfg.max_tokens_cap)
    if min_tokens > max_tokens:
        raise RequestError(f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")
    out, images = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {list(ROLES)}")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(f"messages[{i}].content must be a string or a list of parts")
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text", ""), str):
                parts.append({"type": "text", "text": part.get("text", "")})
            elif kind == "image_url":
                if len(images) >= cfg.max_images:
                    raise RequestError(f"at most {cfg.max_images} images in one request")
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                images.append(open_image(url, cfg) if load_images else url)
                parts.append({"type": "image"})
            else:
                raise RequestError(f"messages[{i}].content[{j}] must be a text or image_url part")
        out.append({"role": role, "content": parts})
    return ChatRequest(out, max_tokens, min_tokens, images, capped)


class ChatModel:
    """Batched chat generation with a transformers model and its processor/tokenizer."""

    def __init__(self, model: Any, processor: Any) -> None:
        from mathse_rl.models.tiny import tokenizer_of

        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.tokenizer.padding_side = "left"
        self.is_vlm = hasattr(processor, "image_processor")

    def render(self, request: ChatRequest) -> tuple[str, list[Any]]:
        """The prompt text and images of a validated request (a text model drops the image parts)."""
        messages = request.messages
        if not self.is_vlm:
            messages = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                         [p for p in m["content"] if p["type"] == "text"]} for m in messages]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, (request.images if self.is_vlm else [])

    def generate_rendered(self, rendered: Sequence[tuple[str, list[Any]]], max_tokens: Sequence[int],
                          min_tokens: Sequence[int] | None = None,
                          stop: Sequence[threading.Event] | None = None) -> list[tuple[str, int]]:
        """(text, tokens generated) per prompt, each cut at its own ``max_tokens``; a row whose
        ``stop`` event is set ends at the next token."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        texts = [t for t, _ in rendered]
        images = [img for _, imgs in rendered for img in imgs]
        inputs = encode_batch(self.processor, texts, images).to(self.model.device)
        prompt_len = inputs["input_ids"].shape[1]
        events = list(stop) if stop is not None else [threading.Event() for _ in rendered]

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor([e.is_set() for e in events], device=input_ids.device)

        processors = LogitsProcessorList()
        mins = list(min_tokens or [0] * len(rendered))
        eos = self.model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if any(mins) and eos_ids:
            processors.append(_MinTokens(prompt_len, mins, eos_ids))
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max(max_tokens), do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      stopping_criteria=StoppingCriteriaList([_Stop()]), logits_processor=processors)
        new = out[:, prompt_len:]
        results = []
        pad = self.tokenizer.pad_token_id
        for row, n in zip(new, max_tokens):
            row = row[:n]
            count = int((row != pad).sum()) if pad is not None else len(row)
            results.append((self.tokenizer.decode(row, skip_special_tokens=True), count))
        return results

    def generate(self, batch: Sequence[Sequence[dict[str, Any]]], max_tokens: Sequence[int]) -> list[str]:
        """Greedy completions for a batch of chat conversations, each cut at its own ``max_tokens``
        (images must be ``data:`` URLs)."""
        cfg = ServeConfig(max_tokens_cap=max(max_tokens))
        reqs = [parse_request({"messages": list(m), "max_tokens": n}, cfg) for m, n in zip(batch, max_tokens)]
        for r in reqs:
            r.images = [decode_image(img, cfg) for img in r.images]
        return [t for t, _ in self.generate_rendered([self.render(r) for r in reqs], max_tokens)]


class _MinTokens:
    """Forbid end-of-sequence before each row's ``min_tokens`` (vLLM's ``min_tokens``)."""

    def __init__(self, prompt_len: int, mins: Sequence[int], eos_ids: Sequence[int]) -> None:
        self.prompt_len, self.mins, self.eos_ids = prompt_len, list(mins), list(eos_ids)

    def __call__(self, input_ids, scores):
        made = input_ids.shape[1] - self.prompt_len
        for row, m in enumerate(self.mins):
            if made < m:
                scores[row, self.eos_ids] = float("-inf")
        return scores


class _PixelBudget:
    """Decoded pixels that admitted requests may hold at once (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


def _heap_trimmer() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere): hands freed heap pages back to the system.

    Decoded images are freed after a burst, but glibc keeps the pages for reuse (per-thread arenas,
    a raised mmap threshold); without this (and :func:`tune_allocator`) a burst of 80 large images
    left 3-5 GB resident.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


@dataclass
class _Admitted:
    """What admitting a body gave: the checked request, or the status and message of a refusal."""

    request: ChatRequest | None = None
    rendered: Any = None  # (prompt text, images)
    pixels: int = 0  # taken from the pixel budget (0 when refused)
    status: int = 200
    message: str = ""


@dataclass
class _Pending:
    rendered: tuple[str, list[Any]]
    max_tokens: int
    min_tokens: int
    future: asyncio.Future
    cancel: threading.Event = field(default_factory=threading.Event)


def make_app(chat_model: ChatModel, model_name: str, max_batch: int | None = None, max_wait_ms: float | None = None,
             config: ServeConfig | None = None):
    """A FastAPI app serving ``chat_model`` under the name ``model_name``.

    ``app.state.stopping`` (an Event) ends every generation at its next token; ``app.state.stats``
    counts requests, rejections (400), bodies too large (413), requests shed (503), cancellations
    (client gone), tokens generated, and the requests admitted now.
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    cfg = config or ServeConfig()
    if max_batch is not None:
        cfg.max_batch = max_batch
    if max_wait_ms is not None:
        cfg.max_wait_ms = max_wait_ms
    queue: asyncio.Queue[_Pending] = asyncio.Queue()
    stopping = threading.Event()
    stats = {"requests": 0, "rejected": 0, "cancelled": 0, "completed": 0, "failed": 0, "active": 0,
             "generated_tokens": 0, "capped": 0, "admitted": 0, "shed": 0, "too_large": 0, "trims": 0}
    # Bodies are checked on one thread and images decoded on others, so a request without images
    # never waits behind a large decode.
    checkers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="judge-check")
    workers = concurrent.futures.ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="judge-decode")
    budget = _PixelBudget(cfg.max_inflight_pixels)
    trim = _heap_trimmer()
    batch_seconds = [1.0]  # a running mean of one generate() call, for Retry-After

    async def run(batch: list[_Pending]) -> list[tuple[str, int]]:
        stats["active"] += len(batch)
        start = time.monotonic()
        try:
            return await asyncio.to_thread(
                chat_model.generate_rendered, [p.rendered for p in batch], [p.max_tokens for p in batch],
                [p.min_tokens for p in batch], [_Either(p.cancel, stopping) for p in batch])
        finally:
            stats["active"] -= len(batch)
            batch_seconds[0] = 0.8 * batch_seconds[0] + 0.2 * (time.monotonic() - start)

    def retry_after() -> int:
        """Seconds until the queue ahead has likely drained: its batches times the mean batch time."""
        batches = stats["admitted"] / max(1, cfg.max_batch) + 1
        return int(min(60, max(1, math.ceil(batches * batch_seconds[0]))))

    async def batcher() -> None:
        while True:
            first = await queue.get()
            batch = [first]
            deadline = time.monotonic() + cfg.max_wait_ms / 1000
            while len(batch) < cfg.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            batch = [p for p in batch if not p.cancel.is_set() and not p.future.done()]
            if not batch:
                continue
            try:
                outs: list[Any] = await run(batch)
            except Exception:
                # One request the checks let through must not fail the others: each alone.
                outs = []
                for p in batch:
                    try:
                        outs.extend(await run([p]))
                    except Exception as exc:
                        outs.append(exc)
            for p, o in zip(batch, outs):
                if p.future.done():
                    continue
                if isinstance(o, Exception):
                    p.future.set_exception(o)
                else:
                    stats["generated_tokens"] += o[1]
                    p.future.set_result(o)
            # Drop this batch (and its images) before waiting for the next one: an idle server holds none.
            first = batch = outs = p = None  # type: ignore[assignment]

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher())
        yield
        stopping.set()
        task.cancel()
        checkers.shutdown(wait=False, cancel_futures=True)
        workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(lifespan=lifespan)
    app.state.requests = 0
    app.state.stopping = stopping
    app.state.stats = stats
    app.state.config = cfg

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status in (400, 413) else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                            headers=headers)

    def busy(message: str) -> JSONResponse:
        stats["shed"] += 1
        return error(503, message, {"Retry-After": str(retry_after())})

    async def read_body(request: Any) -> bytes | None:
        """The body, or None when it is larger than ``max_body_bytes`` (stopped reading at the cap)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cfg.max_body_bytes:
            return None
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > cfg.max_body_bytes:
                return None
        return bytes(data)

    def check(data: bytes) -> _Admitted:
        """Parse and check the body and take room for its pixels; render a prompt without images.

        Refusals are returned, not raised: an exception carried back to the handler would tie the
        body to a reference cycle that only a full garbage collection frees.
        """
        try:
            try:
                body = json.loads(data)
            except ValueError:
                return _Admitted(status=400, message="the body must be JSON")
            req = parse_request(body, cfg)
            del body
            pixels = req.pixels
            if pixels > cfg.max_inflight_pixels:
                return _Admitted(status=400, message="the request's images hold more pixels than the server takes")
            if not budget.take(pixels):
                return _Admitted(status=503, message="the server holds as many images as it may; retry later")
            return _Admitted(req, None, pixels) if req.images else render(_Admitted(req, None, 0))
        except RequestError as exc:
            return _Admitted(status=400, message=str(exc))
        except Exception:
            return _Admitted(status=400, message="the request cannot be read")

    def render(got: _Admitted) -> _Admitted:
        """Decode the images of a checked request and render its prompt; a failure gives its pixels back."""
        assert got.request is not None
        try:
            got.request.images = [decode_image(img, cfg) for img in got.request.images]
            got.rendered = chat_model.render(got.request)
            return got
        except RequestError as exc:
            message = str(exc)
        except Exception:
            message = "the messages cannot be rendered with the model's chat template"
        budget.give(got.pixels)
        return _Admitted(status=400, message=message)

    def release_memory() -> None:
        gc.collect()  # what is left of the requests is garbage now; free it before trimming
        if trim is not None:
            trim(0)

    def trim_if_idle() -> None:
        if stats["admitted"] == 0:
            stats["trims"] += 1
            try:
                workers.submit(release_memory)
            except RuntimeError:  # shutting down
                pass

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return dict(stats)

    async def chat(request):  # a plain Starlette route: the body is read, parsed and checked here, not by FastAPI
        app.state.requests += 1
        stats["requests"] += 1
        if stopping.is_set():
            return error(503, "the server is shutting down")
        if stats["admitted"] >= cfg.max_queue:  # shed before reading the body: a flood costs us nothing
            return busy(f"the server has {cfg.max_queue} requests in hand; retry later")
        stats["admitted"] += 1
        try:
            return await answer(request)
        finally:
            stats["admitted"] -= 1
            trim_if_idle()

    async def stage(pool: Any, fn: Any, arg: Any) -> _Admitted:
        job = pool.submit(fn, arg)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:  # the handler is gone (shutdown): its pixels go back once the stage ends
            job.add_done_callback(lambda f: not f.cancelled() and budget.give(f.result().pixels))
            raise

    async def answer(request: Any) -> JSONResponse:
        data = await read_body(request)
        if data is None:
            stats["too_large"] += 1
            return error(413, f"the body is larger than {cfg.max_body_bytes} bytes")
        got = await stage(checkers, check, data)
        del data
        if got.status == 200 and got.rendered is None:
            got = await stage(workers, render, got)
        if got.status == 503:
            return busy(got.message)
        if got.status == 400:
            stats["rejected"] += 1
            return error(400, got.message)
        try:
            return await generate(request, got.request, got.rendered)
        finally:
            budget.give(got.pixels)
            got.request.images, got.rendered = [], ("", [])

    async def generate(request: Any, req: ChatRequest, rendered: tuple[str, list[Any]]) -> JSONResponse:
        stats["capped"] += req.capped
        pending = _Pending(rendered, req.max_tokens, req.min_tokens, asyncio.get_running_loop().create_future())
        await queue.put(pending)
        while True:
            done, _ = await asyncio.wait({pending.future}, timeout=cfg.disconnect_poll_s)
            if done:
                break
            if await request.is_disconnected() or stopping.is_set():
                pending.cancel.set()  # its generation ends at the next token
                stats["cancelled"] += 1
                if stopping.is_set():
                    return error(503, "the server is shutting down")
                return error(499, "client closed the request")
        try:
            text, n_tokens = pending.future.result()
        except Exception as exc:
            stats["failed"] += 1
            return error(500, f"generation failed: {type(exc).__name__}")
        stats["completed"] += 1
        return JSONResponse({
            "id": "chatcmpl-" + uuid.uuid4().hex[:16], "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if n_tokens >= req.max_tokens else "stop"}],
            "usage": {"completion_tokens": n_tokens},
        })

    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    return app


class _Either:
    """Set when either event is: a request's own cancel or the server's shutdown."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


def _server(app: Any, graceful_s: float, host: str = "127.0.0.1", port: int = 0) -> Any:
    """A uvicorn server whose exit signal (SIGTERM, SIGINT) also stops every generation at once."""
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.stopping.set()
            super().handle_exit(sig, frame)

    return _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                  timeout_graceful_shutdown=graceful_s))


def tune_allocator() -> None:
    """For a server process of its own (glibc only): blocks of 128 KiB and more are mapped and
    unmapped one by one (a fixed threshold, not glibc's, which rises after each large free and then
    keeps decoded images on the heap), in at most two arenas (not eight per core)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, graceful_s: float = 2.0) -> None:
    """Serve ``app`` in the foreground until SIGTERM/SIGINT; generations stop at the next token and
    open connections get ``graceful_s`` seconds to finish."""
    _server(app, graceful_s, host, port).run()


@dataclass
class ServerHandle:
    """A server running in a background thread; ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    port: int
    app: Any
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.app.state.stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> ServerHandle:
    """Start ``app`` with uvicorn in a daemon thread on ``host:port`` (0 = a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = _server(app, 1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - start > timeout:
            raise RuntimeError(f"judge server on {host}:{port} did not start")
        time.sleep(0.02)
    return ServerHandle(f"http://{host}:{port}", port, app, server, thread)
