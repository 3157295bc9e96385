"""The real ``mathse-rl orm serve`` process, on a tiny model, against hostile and careless clients."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from PIL import Image
from served import SERVE_MAX_TOKENS, start_server, stop_server


def _start(model: str, *flags: str) -> tuple[subprocess.Popen, str]:
    return start_server(model, *flags)


def _stop(proc: subprocess.Popen) -> None:
    stop_server(proc)


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (28, 28), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(content="Is 5 + 7 = 12 right?", **kw):
    return {"model": "orm", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **kw}


@pytest.fixture
def image_dir(served_image_dir):
    return served_image_dir


@pytest.fixture
def server(served_judge):
    return served_judge


def _post_all(url, bodies):
    """Send every body at once (so they share batches); returns the responses in order."""
    out = [None] * len(bodies)

    def one(i):
        out[i] = httpx.post(url + "/v1/chat/completions", json=bodies[i], timeout=120)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


BAD = [
    _body(max_tokens="abc"),
    {"model": "orm", "messages": [{"content": "no role"}], "max_tokens": 4},
    {"model": "orm", "messages": "not a list"},
    {"model": "orm", "messages": [{"role": "wizard", "content": "x"}]},
    _body(max_tokens=-3),
    _body(max_tokens=True),
    _body(content=[{"type": "video", "video": "x"}]),
    _body(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]),
    _body(min_tokens=10, max_tokens=4),
]


def test_each_bad_request_is_a_400_and_its_neighbours_are_answered(server):
    good = [_body(), _body(content=[{"type": "image_url", "image_url": {"url": _png()}},
                                    {"type": "text", "text": "Which colour?"}]), _body()]
    bodies = [good[0], *BAD[:4], good[1], *BAD[4:], good[2]]
    replies = _post_all(server, bodies)
    for body, r in zip(bodies, replies):
        if any(body is g for g in good):
            assert r.status_code == 200, r.text
            assert isinstance(r.json()["choices"][0]["message"]["content"], str)
        else:
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_a_400(server):
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_max_tokens_is_capped_by_the_server(server):
    # min_tokens keeps the model writing: it stops at the server's cap, not at the 10**9 asked for
    r = httpx.post(server + "/v1/chat/completions", timeout=120,
                   json=_body(max_tokens=10 ** 9, min_tokens=SERVE_MAX_TOKENS))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == SERVE_MAX_TOKENS
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert httpx.get(server + "/stats").json()["capped"] >= 1


def test_image_paths_are_no_oracle_and_only_the_named_directory_is_read(server, image_dir, tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (28, 28)).save(tmp_path / "outside.png")
    paths = ["/etc/passwd", "/no/such/file.png", str(tmp_path / "sub"), str(tmp_path / "outside.png"),
             "../" * 8 + "etc/passwd", "file:///etc/passwd", str(image_dir / "missing.png"), "bar.png/..",
             "http://127.0.0.1:1/x.png"]
    bodies = [_body(content=[{"type": "image_url", "image_url": {"url": p}}, {"type": "text", "text": "?"}])
              for p in paths]
    replies = _post_all(server, bodies)
    assert {r.status_code for r in replies} == {400}
    assert len({r.text for r in replies}) == 1, [r.text for r in replies]  # one message, whatever the path
    # A file inside the operator's directory is read.
    ok = httpx.post(server + "/v1/chat/completions", timeout=120, json=_body(
        content=[{"type": "image_url", "image_url": {"url": "bar.png"}}, {"type": "text", "text": "?"}]))
    assert ok.status_code == 200, ok.text


@pytest.mark.slow
def test_disconnect_cancels_generation_and_sigterm_stops_the_server(tiny_vlm_path):
    proc, url = _start(tiny_vlm_path, "--max-tokens-cap", "100000")
    try:
        long = _body(max_tokens=50_000, min_tokens=50_000)  # minutes of generation on this CPU
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url + "/v1/chat/completions", json=long, timeout=2.0)  # the client gives up
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and httpx.get(url + "/stats").json()["active"]:
            time.sleep(0.2)
        stats = httpx.get(url + "/stats").json()
        assert stats["active"] == 0 and stats["cancelled"] == 1, stats
        assert stats["generated_tokens"] < 50_000
        # The next client is served at once, not after the abandoned generation.
        assert httpx.post(url + "/v1/chat/completions", json=_body(), timeout=60).status_code == 200

        # SIGTERM in the middle of a long generation: the process is gone within a few seconds.
        threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", json=long, timeout=300),
                         daemon=True).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not httpx.get(url + "/stats").json()["active"]:
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert time.monotonic() - t0 < 6.0
    finally:
        _stop(proc)
