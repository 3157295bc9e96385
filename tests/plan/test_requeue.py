"""A SLURM job requeued onto another node resumes its run: the lock names the job, not only the host."""

from __future__ import annotations

import json
import logging

import pytest

from mathse_rl.evolve.lock import RunLock, RunLockedError


def _left_by(tmp_path, **owner):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 4242, "host": "node-a", "started": "then", **owner}))


def test_a_requeued_job_on_another_node_takes_over_its_lock(tmp_path, monkeypatch, caplog):
    _left_by(tmp_path, job="777", restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert lock.held and "was requeued" in caplog.text
    assert json.loads((tmp_path / "run.lock").read_text())["restart"] == 1
    lock.release()


@pytest.mark.parametrize("owner, env", [
    ({"job": "777", "restart": 1}, {"SLURM_JOB_ID": "777", "SLURM_RESTART_COUNT": "1"}),  # the same incarnation
    ({"job": "777", "restart": 0}, {"SLURM_JOB_ID": "778", "SLURM_RESTART_COUNT": "1"}),  # another job
    ({}, {}),  # no SLURM: another host cannot be checked
], ids=["same-incarnation", "another-job", "no-slurm"])
def test_other_owners_on_another_host_are_still_refused(tmp_path, monkeypatch, owner, env):
    for var in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _left_by(tmp_path, **owner)
    with pytest.raises(RunLockedError, match="in use by pid 4242 on host node-a"):
        RunLock(tmp_path).acquire()
