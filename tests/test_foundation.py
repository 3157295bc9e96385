"""The foundation is real: package, CLI, import isolation, wandb offline, verl's data protocol."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mathse_rl

FRAMEWORKS = ("trl", "verl", "ray", "vllm")
CORE = ("mathse_rl", "mathse_rl.types", "mathse_rl.verify", "mathse_rl.orm", "mathse_rl.rewards",
        "mathse_rl.evolve", "mathse_rl.data", "mathse_rl.models.tiny", "mathse_rl.integrations.trl",
        "mathse_rl.integrations.verl")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_core_import_pulls_in_no_framework():
    # A fresh interpreter: importing the core (and the lazy integration packages) must not
    # import trl, verl, ray or vllm.
    code = (
        "import importlib, json, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})))"
    )
    assert json.loads(_run(code)) == []


def test_every_core_module_imports_without_a_framework():
    # Every module outside mathse_rl.integrations, not only the package entry points.
    code = (
        "import importlib, json, pkgutil, sys, mathse_rl\n"
        "names = [m.name for m in pkgutil.walk_packages(mathse_rl.__path__, 'mathse_rl.')\n"
        "         if '.integrations' not in m.name and not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        f"print(json.dumps([len(names), sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})]))"
    )
    n_modules, frameworks = json.loads(_run(code))
    assert n_modules > 40 and frameworks == []


# Layers from the bottom up; a module may import only its own layer or the ones below it.
LAYERS = (("types", "chat", "prompts", "verify"), ("orm", "rewards", "models", "step"), ("data",), ("evolve",),
          ("integrations",))


def test_dependencies_point_downward():
    # data/ and evolve/ share the prompts: they live below both (mathse_rl.prompts), so no core
    # module imports from a layer above its own.
    import ast
    from pathlib import Path

    root = Path(mathse_rl.__file__).parent
    rank = {name: i for i, names in enumerate(LAYERS) for name in names}
    upward = []
    for path in root.rglob("*.py"):
        top = path.relative_to(root).parts[0].removesuffix(".py")
        if top not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for mod in mods:
                parts = mod.split(".")
                if parts[0] == "mathse_rl" and len(parts) > 1 and rank.get(parts[1], -1) > rank[top]:
                    upward.append(f"{path.relative_to(root)} -> {mod}")
    assert upward == []


def test_cli_version_and_help():
    out = _run("from mathse_rl.cli import main; import sys; sys.argv=['mathse-rl','--help']\n"
               "try: main()\nexcept SystemExit: pass")
    assert "verify" in out and "evolve" in out and "demo" in out
    proc = subprocess.run([sys.executable, "-m", "mathse_rl", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mathse-rl {mathse_rl.__version__}"


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(project="mathse-rl-test", dir=str(tmp_path), config={"k": 1})
    run.log({"accuracy": 0.5})
    run.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_verl_imports_and_dataproto_round_trips():
    import numpy as np
    import torch
    from verl.protocol import DataProto

    batch = DataProto.from_dict(
        tensors={"responses": torch.arange(6).reshape(2, 3)},
        non_tensors={"ground_truth": np.array(["7", "12"], dtype=object)},
    )
    first = batch[:1]
    assert len(batch) == 2 and first.batch["responses"].tolist() == [[0, 1, 2]]
    assert first.non_tensor_batch["ground_truth"].tolist() == ["7"]
