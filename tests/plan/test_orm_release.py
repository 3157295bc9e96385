"""``judge=orm critic.backend=local``: the ORM the loop holds is freed before every SFT stage."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evolve"))

from scripted_parts import RecordingTrainer, ScriptedGenerator, make_problems, scripted_config, seed_for  # noqa: E402


def test_a_local_orm_is_released_before_each_sft_stage(tiny_vlm_path, tmp_path, monkeypatch):
    from mathse_rl.evolve import run_evolve
    from mathse_rl.orm.backends import local

    loaded: list[weakref.ref] = []
    real = local.load_judge_model

    def tracked(path, device="auto", dtype="auto"):
        model, processor = real(path, device, dtype)
        loaded.append(weakref.ref(model))
        return model, processor

    monkeypatch.setattr(local, "load_judge_model", tracked)
    alive_at_stage: list[int] = []

    class Probe(RecordingTrainer):
        def train(self, rows, init_model, output_dir):
            gc.collect()
            alive_at_stage.append(sum(r() is not None for r in loaded))
            return super().train(rows, init_model, output_dir)

    train, heldout = make_problems(4), make_problems(2, prefix="h", start=10)
    cfg = scripted_config(tmp_path / "run", rounds=1, judge="orm", reflect={"enabled": False},
                          critic={"backend": "local", "model": tiny_vlm_path, "max_new_tokens": 4, "batch_size": 8})
    run_evolve(cfg, train, heldout, seed_attempts=seed_for(train[:2]), generator=ScriptedGenerator(), trainer=Probe())
    assert loaded, "the ORM was never loaded"
    assert alive_at_stage == [0] * len(alive_at_stage) and len(alive_at_stage) == 2  # distill and r1
    assert len(loaded) >= 2  # judged again after the first stage: loaded again
