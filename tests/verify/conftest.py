"""Fixtures for the verifier tests: the shared dev cases and one warm worker pool.

The pool is started once for the session and shut down at the end, and the test
then checks that no worker process outlived it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mathse_rl.verify import pool as verify_pool


def shared_dir() -> Path:
    """``$MATHSE_SHARED_DIR`` if set, else ``shared/`` beside the checkout (CI lays it there)."""
    env = os.environ.get("MATHSE_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared"


def load_dev_cases() -> list[dict]:
    path = shared_dir() / "verifier" / "dev_cases.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; /proc says which.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="session")
def warm_pool():
    """The process-wide verifier pool, started once; its workers must all be gone afterwards."""
    from mathse_rl.verify import shutdown, warmup

    warmup(workers=2, wait=60.0)
    pool = verify_pool.get_pool()
    seen: set[int] = set()
    yield pool
    for p in list(verify_pool._POOLS):
        seen.update(p.started)
    shutdown()
    leaked = [pid for pid in seen if _alive(pid)]
    assert not leaked, f"verifier workers left running: {leaked}"


@pytest.fixture
def pool():
    """A private one-worker pool without math-verify preloaded (fast to start and to replace)."""
    p = verify_pool.WorkerPool(size=1, preload=False)
    p.start(wait=30.0)
    yield p
    p.close()


def pytest_generate_tests(metafunc):
    """Parametrize ``dev_case`` over the shared dev cases (one skipped param when absent)."""
    if "dev_case" in metafunc.fixturenames:
        cases = load_dev_cases()
        if cases:
            metafunc.parametrize("dev_case", cases, ids=[f"{i}-{c['category']}" for i, c in enumerate(cases)])
        else:
            where = shared_dir() / "verifier" / "dev_cases.jsonl"
            metafunc.parametrize("dev_case", [pytest.param(None, marks=pytest.mark.skip(
                reason=f"{where} not found: lay shared/ beside the checkout or set MATHSE_SHARED_DIR"))])
