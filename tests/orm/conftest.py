"""ORM fixtures: toy labelled rollouts, a tiny judge trained once, and judge servers.

``trained_judge`` runs build-data → train (trl SFTTrainer, CPU) once per session; the local,
HTTP and pipeline tests all use it. ``served_judge`` is the real ``mathse-rl orm serve`` process
on ``quoting_judge`` (a tiny VLM fine-tuned to answer every prompt like a judge that repeats the
student's injected verdict after its own); the server tests and the injection suite share it.
``judge_server`` serves the trained judge in a thread with an OpenAI-compatible API, plus fault
routes under a prefix:

    /v1/...            the real judge              /http500/v1/...   always HTTP 500
    /hang/v1/...       sleeps past any timeout      /malformed/v1/... 200 with a body that is not JSON
    /badshape/v1/...   JSON without ``choices``     /junk/v1/...      a completion that is not a judgment
    /flaky/v1/...      HTTP 500 twice, then real    /auth/v1/...      401 unless the right bearer key
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from fastapi import Request

from mathse_rl.orm import Judge, Reply, register_backend
from mathse_rl.orm.data import build_orm_dataset, eval_items
from mathse_rl.orm.toy import toy_rollouts

sys.path.insert(0, str(Path(__file__).parent))  # shared helpers: injection_cases, served

from served import SERVE_MAX_QUEUE, SERVE_MAX_TOKENS, build_quoting_judge, start_server, stop_server  # noqa: E402

TRAIN_STEPS = 60
TEST_KEY_ENV = "MATHSE_ORM_TEST_KEY"
TEST_KEY = "sk-test-do-not-log-4242"


@pytest.fixture(scope="session")
def orm_dataset():
    """40 toy rollouts (balanced), 8 held out."""
    return build_orm_dataset(toy_rollouts(40, seed=0), test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def trained_judge(tiny_vlm_path, orm_dataset, tmp_path_factory):
    """(path, train summary) of the tiny VLM fine-tuned as a judge on the toy set."""
    import json

    from mathse_rl.orm.train import train_orm

    out = tmp_path_factory.mktemp("orm-judge")
    path = train_orm(model=tiny_vlm_path, rows=orm_dataset.train, output_dir=str(out), max_steps=TRAIN_STEPS,
                     learning_rate=1e-2, lr_scheduler_type="constant", warmup_ratio=0.0,
                     per_device_train_batch_size=4, use_cpu=True, logging_steps=10)
    return path, json.loads((out / "orm_train.json").read_text())


@pytest.fixture(scope="session")
def quoting_judge(tiny_cache):
    """Path of the tiny judge that states WRONG, then quotes the student's verdict (:func:`served.build_quoting_judge`)."""
    return build_quoting_judge(tiny_cache / "quoting-judge")


@pytest.fixture(scope="session")
def served_image_dir(tmp_path_factory):
    """The served judge's --image-dir, holding bar.png."""
    from PIL import Image

    d = tmp_path_factory.mktemp("served-images")
    Image.new("RGB", (28, 28), (0, 0, 200)).save(d / "bar.png")
    return d


@pytest.fixture(scope="session")
def served_process(quoting_judge, served_image_dir):
    """(process, base URL) of ``mathse-rl orm serve`` on the quoting judge (server and injection tests share it)."""
    proc, url = start_server(quoting_judge, "--max-tokens-cap", str(SERVE_MAX_TOKENS), "--max-batch", "8",
                             "--image-dir", str(served_image_dir), "--max-queue", str(SERVE_MAX_QUEUE))
    yield proc, url
    stop_server(proc)


@pytest.fixture(scope="session")
def served_judge(served_process):
    """Base URL of the served quoting judge."""
    return served_process[1]


@pytest.fixture(scope="session")
def toy_items(orm_dataset):
    """(items, labels) of the held-out split."""
    return eval_items(orm_dataset.test)


@register_backend("scripted-test")
class ScriptedJudge(Judge):
    """A test backend: answers each item with ``item.extra["reply"]`` ("!kind" = that failure,
    "RAISE" = the whole batch crashes) and ``item.extra["p"]`` as P(CORRECT)."""

    calls = 0

    def replies(self, items):
        type(self).calls += len(items)
        out = []
        for it in items:
            r = it.extra.get("reply")
            if r == "RAISE":
                raise RuntimeError("backend crashed")
            out.append(Reply(error=r[1:]) if r.startswith("!") else Reply(text=r, p_correct=it.extra.get("p")))
        return out


@pytest.fixture
def scripted_calls():
    """A function returning how many items the scripted backend has answered so far."""
    return lambda: ScriptedJudge.calls


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def api_key_env(monkeypatch):
    """(env var name, key) with the key set in the environment for this test."""
    monkeypatch.setenv(TEST_KEY_ENV, TEST_KEY)
    return TEST_KEY_ENV, TEST_KEY


@pytest.fixture(scope="session")
def judge_server(trained_judge):
    from fastapi.responses import JSONResponse, Response

    from mathse_rl.orm.backends.local import load_judge_model
    from mathse_rl.orm.serve import ChatModel, make_app, serve_in_thread

    app = make_app(ChatModel(*load_judge_model(trained_judge[0], device="cpu")), "orm", max_batch=8)
    real = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/v1/chat/completions")
    app.state.flaky_calls = 0

    @app.post("/http500/v1/chat/completions")
    async def http500(body: dict):
        return JSONResponse({"error": "boom"}, status_code=500)

    @app.post("/hang/v1/chat/completions")
    async def hang(body: dict):
        await asyncio.sleep(3.0)  # far past the client's timeout; the reply comes too late to matter
        return JSONResponse({"error": "late"}, status_code=504)

    @app.post("/malformed/v1/chat/completions")
    async def malformed(body: dict):
        return Response('{"choices": [{"message": {"content": "trunc', media_type="application/json")

    @app.post("/badshape/v1/chat/completions")
    async def badshape(body: dict):
        return {"object": "chat.completion", "result": "CORRECT"}

    @app.post("/junk/v1/chat/completions")
    async def junk(body: dict):
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Looks fine to me!"}}]}

    @app.post("/flaky/v1/chat/completions")
    async def flaky(request: Request):
        app.state.flaky_calls += 1
        if app.state.flaky_calls <= 2:
            return JSONResponse({"error": "warming up"}, status_code=503)
        return await real(request)

    @app.post("/auth/v1/chat/completions")
    async def auth(request: Request):
        if request.headers.get("authorization") != f"Bearer {TEST_KEY}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return await real(request)

    server = serve_in_thread(app)
    yield server
    server.stop()
