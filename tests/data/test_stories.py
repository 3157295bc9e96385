"""The counting-stories text task: sizes, determinism, text only, teacher solutions the verifier accepts."""

from __future__ import annotations

from mathse_rl.data.loaders import load_problems, load_seed_attempts
from mathse_rl.data.stories import make_task, teacher_solution, write_task
from mathse_rl.verify import verify


def test_splits_have_the_issue_sizes_are_deterministic_and_disjoint():
    task = make_task(seed=3)
    assert (len(task.seed), len(task.pool), len(task.heldout)) == (100, 200, 150)
    again = make_task(seed=3)
    assert [p.question for p in task.heldout] == [p.question for p in again.heldout]
    assert [p.question for p in make_task(seed=4).heldout] != [p.question for p in task.heldout]
    ids = [p.id for p in task.train + task.heldout]
    assert len(ids) == len(set(ids))
    assert all(not p.images for p in task.train + task.heldout)  # text only
    assert any(p.choices for p in task.pool) and any(not p.choices for p in task.pool)


def test_teacher_solutions_are_step_by_step_and_verified():
    task = make_task(seed=0)
    for p in task.seed + task.heldout[:50]:
        sol = teacher_solution(p)
        assert sol.startswith("Step 1: ") and sol.endswith(f"The answer to this problem is {p.gold}.")
        assert verify(sol, p.gold, choices=p.choices).correct, sol
        assert str(p.meta["amounts"][0]) in p.question


def test_written_files_load_as_a_recipe_would(tmp_path):
    task = make_task(seed=1, n_seed=5, n_pool=7, n_heldout=4)
    paths = write_task(tmp_path, task)
    train, bad = load_problems(paths["train"])
    heldout, _ = load_problems(paths["eval"])
    seed, bad_seed = load_seed_attempts(paths["seed"])
    assert not bad and not bad_seed
    assert len(train) == 12 and len(heldout) == 4 and len(seed) == 5
    assert {a.problem_id for a in seed} <= {p.id for p in train}
    assert [p.choices for p in train] == [p.choices for p in task.train]
