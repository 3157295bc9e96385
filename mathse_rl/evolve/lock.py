"""One run per output directory: a lock file naming its owner's pid and host.

    >>> lock = RunLock("runs/a")          # doctest: +SKIP
    >>> lock.acquire(); ...; lock.release()  # doctest: +SKIP

A second run on the same directory is refused with the owner's pid, host and start time.
A lock left by a dead process on this host (a kill, a crash) is taken over with a message.
A lock from another host cannot be checked and is refused, except one of the same SLURM job
requeued: a job's id stays when SLURM requeues it (possibly onto another node) and its
``SLURM_RESTART_COUNT`` grows, and SLURM runs a job's incarnations one at a time, so the owner
with a lower restart count is gone. Otherwise delete the lock by hand when that run is gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live run owns the output directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def slurm_job() -> dict:
    """This process's SLURM job id and restart count (empty outside SLURM)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    return {"job": job, "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def _requeued(owner: dict, me: dict) -> bool:
    """The same SLURM job, a later incarnation: the owner's run is gone (SLURM runs one at a time)."""
    return bool(me.get("job")) and owner.get("job") == me["job"] and int(owner.get("restart") or 0) < me["restart"]


class RunLock:
    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **slurm_job()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and isinstance(pid, int) and (pid == me["pid"] or not _alive(pid)):
                    if pid != me["pid"]:
                        logger.warning("%s: taking over the lock of pid %s on %s, which is no longer running",
                                       self.path.parent, pid, host)
                    self.path.unlink(missing_ok=True)
                    continue
                if _requeued(owner, me):
                    logger.warning("%s: SLURM job %s (restart %s) takes over the lock of its earlier run (restart %s, "
                                   "pid %s on %s): the job was requeued", self.path.parent, me["job"],
                                   me["restart"], owner.get("restart", 0), pid, host)
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(
                    f"{self.path.parent} is in use by pid {pid} on host {host} (since {owner.get('started')}); "
                    f"wait for that run, use another output_dir, or delete {self.path} if that run is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise RunLockedError(f"could not take the lock {self.path}: another run took it first")

    def release(self) -> None:
        if self.held and self._owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
