"""Read files from a local checkout: a work tree, or a bare git directory (its HEAD)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def read_text(root: str | Path, rel: str) -> str | None:
    """The text of ``rel`` under ``root`` (a work tree or a git directory), or None when absent."""
    root = Path(root)
    if (root / rel).is_file():
        return (root / rel).read_text(encoding="utf-8")
    try:
        out = subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{rel}"], capture_output=True, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return out.stdout.decode("utf-8")


def list_files(root: str | Path, under: str) -> list[str]:
    """Paths (relative to ``root``) of the files below ``under``."""
    root = Path(root)
    if (root / under).is_dir():
        return sorted(str(p.relative_to(root)) for p in (root / under).rglob("*") if p.is_file())
    try:
        out = subprocess.run(["git", "--git-dir", str(root), "ls-tree", "-r", "--name-only", "HEAD", under],
                             capture_output=True, check=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return []
    return out.stdout.split()


def head_commit(root: str | Path) -> str | None:
    """The checkout's HEAD commit, when it is a git checkout."""
    root = Path(root)
    for args in (["git", "-C", str(root), "rev-parse", "HEAD"], ["git", "--git-dir", str(root), "rev-parse", "HEAD"]):
        try:
            return subprocess.run(args, capture_output=True, check=True, text=True).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            continue
    return None
