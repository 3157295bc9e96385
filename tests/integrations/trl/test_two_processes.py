"""MathSETrainer on two processes (torchrun, gloo, CPU) against one process with twice the batch.

Process 0 holds only questions the policy gets right, process 1 only questions it gets wrong, so only
process 1 asks for refinements. Generation hands results back the way trl's vLLM server does
(``trl_parts.server_split_trainer``). One SGD step (lr 1, no clipping) makes the parameter change
equal to minus the gradient, so "the same update" is checked on the gradient itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trl_parts import SCENARIOS, run_scenario

pytestmark = pytest.mark.slow

# fp32 sums taken in another order (two processes, all-reduce) differ by rounding only.
RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(taught_vlm, tmp_path_factory):
    """Every scenario run once on 2 processes; rank 0's parameter changes and logs."""
    out = tmp_path_factory.mktemp("two-processes")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[2]), str(here)]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(here / "trl_parts.py"), str(taught_vlm), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads((out / "seen.json").read_text())
    return {name: (torch.load(out / f"{name}.pt"), seen[name]) for name in SCENARIOS}


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest change."""
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", ["rft", "grpo_add"])
def test_the_update_does_not_depend_on_the_process_layout(two_processes, taught_vlm, tmp_path, name):
    two, seen = two_processes[name]
    one, seen_one = run_scenario(name, taught_vlm, tmp_path / name, processes=1)
    assert one.abs().max() > 0
    assert _close(two, one) < RTOL
    # The same rows were refined and verified in both layouts: the "seven" rows, on process 1 only.
    assert seen["refined"] == seen_one["refined"] == [False] * 4 + [True, True, False, False]
    for key in ("mathse/reflected", "mathse/refine_verified", "mathse/accepted_frac"):
        assert seen["metrics"][key] == seen_one["metrics"][key], key
    assert seen["metrics"]["mathse/reflected"] == 4 and seen["metrics"]["mathse/refine_verified"] == 2


def test_refinements_come_back_to_the_process_that_asked(two_processes):
    _, seen = two_processes["rft"]
    # Only process 1 has failures (4 rows to refine): the round is shared out, 2 rows per process, instead
    # of 4 on each (the idle process generating full-length filler).
    assert seen["reflection_rows"] == [2, 2]
    # rft trains verified refinements in place: the "seven" rows now read the reflection answer (7).
    completions = seen["completions"]
    assert all("is 3." in c for c in completions[:4])
    assert all("is 7." in c for c in completions[4:6])


def test_refinement_cap_counts_a_group_that_spans_processes(two_processes):
    _, seen = two_processes["cap"]
    # One "seven" group of 2 rows: row 0 on process 0, row 1 on process 1; at most one refinement per group.
    assert seen["metrics"]["mathse/reflected"] == 1
    assert seen["refined"] == [True, False]
