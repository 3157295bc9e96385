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


# --- limits (a hostile client: huge decodes, odd formats, links, floods, oversized bodies) --------

def _data_url(img: "Image.Image", fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()  # the MIME type lies on purpose


def _image_body(url: str, **kw):
    return _body(content=[{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}], **kw)


def _png_bytes(width: int, height: int) -> bytes:
    """A real, complete solid-colour PNG of any size, written without decoding it in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\xc8\x1e\x1e" * width
    per_block = max(1, (1 << 20) // len(row))
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * min(per_block, height - i)) for i in range(0, height, per_block))
    data += packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_image_sizes_and_formats_are_checked_before_decoding(server):
    small = Image.new("RGB", (28, 28), (200, 30, 30))
    tall = "data:image/png;base64," + base64.b64encode(_png_bytes(1, 16_777_216)).decode()  # 1 × 16,777,216
    refused = [tall, _data_url(Image.new("RGB", (300, 1)), "PNG"),  # aspect ratio 300
               *(_data_url(small, fmt) for fmt in ("TIFF", "PCX", "BMP", "GIF", "PPM", "TGA")),
               _data_url(Image.new("RGBA", (16, 16)), "ICO")]
    before = httpx.get(server + "/stats").json()
    replies = _post_all(server, [_image_body(u) for u in refused])
    assert [r.status_code for r in replies] == [400] * len(refused), [r.text for r in replies]
    assert len({r.text for r in replies}) == 1  # one message for every bad image
    after = httpx.get(server + "/stats").json()
    assert after["failed"] == before["failed"]  # refused at validation, never in generation
    accepted = _post_all(server, [_image_body(_data_url(small, fmt)) for fmt in ("PNG", "JPEG", "WEBP")])
    assert [r.status_code for r in accepted] == [200] * 3, [r.text for r in accepted]


def test_no_link_leads_out_of_the_image_directory(server, image_dir, tmp_path):
    Image.new("RGB", (28, 28), (1, 2, 3)).save(tmp_path / "private.png")
    (image_dir / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (28, 28), (0, 90, 0)).save(image_dir / "sub" / "ok.png")
    for name in ("hard.png", "soft.png", "soft-in.png", "dir-link"):
        if os.path.lexists(image_dir / name):
            os.unlink(image_dir / name)
    os.link(tmp_path / "private.png", image_dir / "hard.png")  # a hard link: the same file as one outside
    (image_dir / "soft.png").symlink_to(tmp_path / "private.png")
    (image_dir / "soft-in.png").symlink_to(image_dir / "bar.png")
    (image_dir / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    names = ["hard.png", str(image_dir / "hard.png"), "soft.png", "soft-in.png", "dir-link/private.png"]
    replies = _post_all(server, [_image_body(n) for n in names])
    assert [r.status_code for r in replies] == [400] * len(names), [r.text for r in replies]
    ok = _post_all(server, [_image_body("sub/ok.png"), _image_body(str(image_dir / "bar.png"))])
    assert [r.status_code for r in ok] == [200, 200], [r.text for r in ok]


def test_an_oversized_body_gets_413_before_it_is_read(server):
    big = b'{"model": "orm", "messages": [' + b" " * (40 << 20) + b"]}"
    r = httpx.post(server + "/v1/chat/completions", content=big, timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text

    def chunks():  # no Content-Length: the server counts while reading
        yield b'{"model": "orm", "messages": ['
        for _ in range(40):
            yield b" " * (1 << 20)
        yield b"]}"

    r = httpx.post(server + "/v1/chat/completions", content=chunks(), timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert httpx.post(server + "/v1/chat/completions", json=_body(), timeout=60).status_code == 200


def test_a_full_queue_answers_503_with_retry_after(server):
    from served import SERVE_MAX_QUEUE, SERVE_MAX_TOKENS

    flood = [_body(max_tokens=SERVE_MAX_TOKENS, min_tokens=SERVE_MAX_TOKENS) for _ in range(4 * SERVE_MAX_QUEUE)]
    replies = _post_all(server, flood)
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503} and codes.count(200) >= SERVE_MAX_QUEUE // 2 and codes.count(503) > 0, codes
    for r in replies:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "server_error"
    assert httpx.get(server + "/stats").json()["admitted"] == 0
    assert httpx.post(server + "/v1/chat/completions", json=_body(), timeout=60).status_code == 200


def test_a_burst_of_large_images_is_shed_and_its_memory_returned(served_process):
    from served import rss_mb

    proc, url = served_process
    big = "data:image/png;base64," + base64.b64encode(_png_bytes(4096, 4096)).decode()
    assert httpx.post(url + "/v1/chat/completions", json=_image_body(big), timeout=120).status_code == 200  # warm
    time.sleep(1.0)
    start = rss_mb(proc.pid)
    replies = _post_all(url, [_image_body(big) for _ in range(24)])  # 24 × 64 MB once decoded
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and rss_mb(proc.pid) > start * 1.1:
        time.sleep(0.2)
    assert rss_mb(proc.pid) <= start * 1.1, (start, rss_mb(proc.pid))
