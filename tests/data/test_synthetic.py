"""The synthetic bar-chart world: deterministic splits, exact ground truth, numbers only in the image."""

from __future__ import annotations

import pytest

from mathse_rl.data import synthetic
from mathse_rl.data.synthetic import LEVELS, WorldConfig, make_problem, make_split


def test_same_seed_same_problems_and_images():
    a = make_split("train", 20, seed=3)
    b = make_split("train", 20, seed=3)
    assert [p.gold for p in a] == [p.gold for p in b]
    assert all(x.images[0].tobytes() == y.images[0].tobytes() for x, y in zip(a, b))


def test_splits_and_seeds_are_different_streams():
    train = make_split("train", 50, seed=0)
    held = make_split("heldout", 50, seed=0)
    other = make_split("train", 50, seed=1)
    key = lambda ps: [(p.meta["level"], tuple(p.meta["heights"])) for p in ps]  # noqa: E731
    assert key(train) != key(held) and key(train) != key(other)
    assert {p.id for p in train}.isdisjoint({p.id for p in held})


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_ground_truth_is_exact(level):
    for p in make_split("train", 30, seed=0, level=level):
        h, ops = p.meta["heights"], p.meta["ops"]
        value = h[0]
        for op, x in zip(ops, h[1:]):
            value = value + x if op == "+" else value - x
        assert p.meta["value"] == value >= 0
        assert len(h) == len(LEVELS[level].bars)
        if p.choices:
            assert p.choices["ABCD".index(p.gold)] == str(value)
            assert len(set(p.choices)) == 4
        else:
            assert p.gold == str(value)


def test_numbers_are_only_in_the_image():
    for p in make_split("train", 30, seed=0):
        for h in p.meta["heights"]:
            assert str(h) not in p.question
        assert p.images[0].size == (28 * len(p.meta["bars"]), 56)


def test_bar_heights_are_drawn_to_scale():
    cfg = WorldConfig(jitter_px=0)
    p = make_problem(0, "train", seed=0, cfg=cfg, level=2)
    img = p.images[0]
    for i, (colour, h) in enumerate(zip(p.meta["bars"], p.meta["heights"])):
        x = i * cfg.column_px + cfg.column_px // 2
        painted = [y for y in range(img.height) if img.getpixel((x, y)) == synthetic.COLOURS[colour]]
        assert len(painted) == h * cfg.unit_px


def test_multiple_choice_share_and_levels_follow_config():
    probs = make_split("train", 400, seed=0, cfg=WorldConfig(levels=(1, 3), mc_rate=0.5))
    assert {p.meta["level"] for p in probs} == {1, 3}
    share = sum(p.choices is not None for p in probs) / len(probs)
    assert 0.4 < share < 0.6
    assert not any(p.choices for p in make_split("train", 50, seed=0, cfg=WorldConfig(mc_rate=0.0)))


def test_bad_config_fails_at_the_edge():
    with pytest.raises(ValueError, match="unknown levels"):
        WorldConfig(levels=(9,))
    with pytest.raises(ValueError, match="unknown split"):
        make_problem(0, "validation")


def test_multiple_choice_answer_is_not_always_the_middle_option():
    probs = [p for p in make_split("train", 600, seed=0, cfg=WorldConfig(mc_rate=1.0))]
    ranks = [sorted(int(c) for c in p.choices).index(p.meta["value"]) for p in probs]
    share_edges = sum(r in (0, 3) for r in ranks) / len(ranks)
    assert share_edges > 0.35  # uniform ranks give 0.5; random distractors around the answer give ~0.1
