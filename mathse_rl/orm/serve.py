"""A small OpenAI-compatible chat server for a local judge model (``mathse-rl orm serve``).

It answers ``POST /v1/chat/completions`` (string or ``text``/``image_url`` parts, images as
``data:`` URLs) and ``GET /v1/models``, batching concurrent requests into one ``generate``
call (up to ``max_batch`` requests, waiting at most ``max_wait_ms`` for a batch to fill).
It is meant for tests, benchmarks and single-machine runs; serve a real judge with vLLM
or SGLang, which speak the same protocol.

    server = serve_in_thread(make_app(ChatModel(*load_judge_model("path/to/judge")), "orm"))
    judge = load_judge({"backend": "openai", "endpoint": server.url + "/v1", "model": "orm"})
    server.stop()
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Sequence

from mathse_rl.models.tiny import encode_batch
from mathse_rl.orm.images import to_pil


class ChatModel:
    """Batched chat generation with a transformers model and its processor/tokenizer."""

    def __init__(self, model: Any, processor: Any) -> None:
        from mathse_rl.models.tiny import tokenizer_of

        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.tokenizer.padding_side = "left"
        self.is_vlm = hasattr(processor, "image_processor")

    def _render(self, messages: Sequence[dict[str, Any]]) -> tuple[str, list[Any]]:
        images: list[Any] = []
        rendered = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image_url":
                        url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part["image_url"]
                        if self.is_vlm:
                            images.append(to_pil(url))
                            parts.append({"type": "image"})
                    elif part.get("type") == "text":
                        parts.append({"type": "text", "text": part.get("text", "")})
                content = parts
            rendered.append({"role": m["role"], "content": content})
        text = self.processor.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True)
        return text, images

    def generate(self, batch: Sequence[Sequence[dict[str, Any]]], max_tokens: Sequence[int]) -> list[str]:
        """Greedy completions for a batch of chat conversations, each cut at its own ``max_tokens``."""
        import torch

        rendered = [self._render(msgs) for msgs in batch]
        texts = [t for t, _ in rendered]
        images = [img for _, imgs in rendered for img in imgs]
        inputs = encode_batch(self.processor, texts, images).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max(max_tokens), do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new, max_tokens)]


@dataclass
class _Pending:
    messages: list[dict[str, Any]]
    max_tokens: int
    future: asyncio.Future


def make_app(chat_model: ChatModel, model_name: str, max_batch: int = 8, max_wait_ms: float = 5.0):
    """A FastAPI app serving ``chat_model`` under the name ``model_name``."""
    from fastapi import FastAPI, HTTPException

    queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def batcher() -> None:
        while True:
            first = await queue.get()
            batch = [first]
            deadline = time.monotonic() + max_wait_ms / 1000
            while len(batch) < max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                texts = await asyncio.to_thread(chat_model.generate, [p.messages for p in batch],
                                                [p.max_tokens for p in batch])
                for p, t in zip(batch, texts):
                    if not p.future.done():
                        p.future.set_result(t)
            except Exception as exc:  # a failed batch fails its requests, not the server
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    app.state.requests = 0

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        app.state.requests += 1
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(status_code=400, detail="messages must be a non-empty list")
        future = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(messages, int(body.get("max_tokens") or 256), future))
        try:
            text = await future
        except Exception as exc:
            raise HTTPException(status_code=500, detail=f"generation failed: {type(exc).__name__}") from exc
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:16], "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }

    return app


@dataclass
class ServerHandle:
    """A server running in a background thread; ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    port: int
    app: Any
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> ServerHandle:
    """Start ``app`` with uvicorn in a daemon thread on ``host:port`` (0 = a free port)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - start > timeout:
            raise RuntimeError(f"judge server on {host}:{port} did not start")
        time.sleep(0.02)
    return ServerHandle(f"http://{host}:{port}", port, app, server, thread)
