"""Session-wide fixtures: offline settings, tiny models built once, one local Ray.

Expensive things are built once per test session and shared:
``tiny_vlm_path`` / ``tiny_lm_path`` (saved tiny Qwen2.5-VL / Qwen2 checkpoints) and
``ray_local`` (a 2-CPU local Ray, started on first use and shut down at the end).
"""

from __future__ import annotations

import os

# Never reach a hub; wandb writes offline runs only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_vlm_path(tiny_cache) -> str:
    """A saved tiny Qwen2.5-VL (random weights, local tokenizer, PIL image processor)."""
    from mathse_rl.models.tiny import build_tiny

    return build_tiny(tiny_cache / "vlm-xs", kind="vlm", size="XS")


@pytest.fixture(scope="session")
def tiny_lm_path(tiny_cache) -> str:
    """A saved tiny Qwen2 causal LM with the same tokenizer."""
    from mathse_rl.models.tiny import build_tiny

    return build_tiny(tiny_cache / "lm-xs", kind="lm", size="XS")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs), shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def http_clients_built(monkeypatch):
    """A list that gains one entry per ``httpx.AsyncClient`` built while the test runs."""
    import httpx

    built: list[int] = []

    class Counted(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", Counted)
    return built
