"""The SFT backend's per-stage example cache (``train.cache_mb``): what it feeds trl is exactly what
trl's own collator would, so a cached stage trains the same weights; it is used only where it pays."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "evolve"))


def _rows(n: int, tmp: Path | None = None):
    """World problems of mixed widths (2 and 3 bars), a quarter multiple choice, solutions of mixed length."""
    import dataclasses

    from mathse_rl.data import synthetic, teacher
    from mathse_rl.evolve.components import solve_row

    probs = synthetic.make_split("seed", n, seed=0, cfg=synthetic.WorldConfig(levels=(1, 2), mc_rate=0.5))
    rows = []
    for i, p in enumerate(probs):
        if tmp is not None:  # images as files, as the loop hands them to the trainer
            img = tmp / f"{p.id}.png"
            p.images[0].save(img)
            p = dataclasses.replace(p, images=(str(img),))
        rows.append(solve_row(p, teacher.teacher_solution(probs[i]) + " Done." * (i % 3), "distilled"))
    return rows


def test_cached_batches_are_trls_batches(tiny_vlm_path):
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.integrations.trl.backends import CachedCollator, _pad_id, load_model, load_processing, \
        rows_to_dataset

    proc = load_processing(tiny_vlm_path)
    args = SFTConfig(output_dir="/tmp/unused", use_cpu=True, per_device_train_batch_size=8, report_to="none",
                     max_length=None)
    trainer = SFTTrainer(model=load_model(tiny_vlm_path), args=args, train_dataset=rows_to_dataset(_rows(8)),
                         processing_class=proc)
    examples = [trainer.train_dataset[i] for i in range(8)]
    cached = CachedCollator(trainer.data_collator, _pad_id(proc))
    for order in (range(8), [5, 1, 7, 0], [3]):  # first draw (encodes), then mixes of cached rows
        batch = [dict(examples[i]) for i in order]
        want = trainer.data_collator([dict(e) for e in batch])
        got = cached(batch)
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert cached.misses == 8 and cached.hits == 5


def test_an_example_past_the_memory_budget_goes_through_trls_collator(tiny_vlm_path):
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.integrations.trl.backends import CachedCollator, _pad_id, load_model, load_processing, \
        rows_to_dataset

    proc = load_processing(tiny_vlm_path)
    args = SFTConfig(output_dir="/tmp/unused", use_cpu=True, per_device_train_batch_size=4, report_to="none")
    trainer = SFTTrainer(model=load_model(tiny_vlm_path), args=args, train_dataset=rows_to_dataset(_rows(4)),
                         processing_class=proc)
    examples = [dict(trainer.train_dataset[i]) for i in range(4)]
    cached = CachedCollator(trainer.data_collator, _pad_id(proc), budget_mb=0.0)
    got = cached([dict(e) for e in examples])
    want = trainer.data_collator([dict(e) for e in examples])
    assert all(torch.equal(got[k], want[k]) for k in want) and not cached.cache


@pytest.mark.slow
def test_a_cached_stage_trains_the_same_weights(tiny_vlm_path, tmp_path):
    from test_sft_stage import sft_config, weights

    from mathse_rl.integrations.trl.backends import SFTBackend

    rows = _rows(6, tmp_path)  # 6 rows, 4 steps of 4: every row is read more than once
    runs = {}
    for name, cache_mb in (("cache", 512.0), ("plain", 0.0)):
        cfg = sft_config(tiny_vlm_path, tmp_path, max_steps=4, per_device_train_batch_size=4, cache_mb=cache_mb)
        path = SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / name))
        runs[name] = (json.loads((Path(path) / "mathse_train.json").read_text()), weights(path))
    (info_c, w_c), (info_p, w_p) = runs["cache"], runs["plain"]
    assert info_c["collate_cache"]["hits"] > 0 and info_p["collate_cache"] is None
    assert info_c["losses"] == info_p["losses"]
    assert all(torch.equal(w_c[k], w_p[k]) for k in w_p)
