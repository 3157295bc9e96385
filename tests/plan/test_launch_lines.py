"""An SFT stage's launch line run as SLURM and a DeepSpeed hostfile launch would run it, on CPU.

Stand-ins keep the process model: ``srun`` (an executable on PATH) starts the command once per node in a
real subprocess with that node's SLURM variables (``SLURM_NODEID``, and one CPU per task unless
``--cpus-per-task`` says otherwise); the command is the loop's own ``bash -c LINE``, so the node's shell
expands LINE. The stage's interpreter is a recorder that writes the argv and environment it got and exits;
each recorded argv is then parsed by accelerate's own ``launch`` parser.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from mathse_rl.evolve.config import load_config
from mathse_rl.evolve.launch import LaunchedTrainer
from mathse_rl.plan.commands import check_command

ROOT = Path(__file__).resolve().parents[2]

SRUN = """#!{python}
# srun stand-in: the step's task on every node, concurrently, each with that node's SLURM variables.
import subprocess, sys
from mathse_rl.plan.commands import node_environment
args = sys.argv[1:]
i = 0
while i < len(args) and args[i].startswith("-"):
    i += 1 if "=" in args[i] or args[i] in ("--kill-on-bad-exit",) else 2
options, command = ["srun"] + args[:i], args[i:]
nodes = int(node_environment(options, 0)["SLURM_NNODES"])
procs = [subprocess.Popen(command, env=node_environment(options, k)) for k in range(nodes)]
sys.exit(max(p.wait() for p in procs))
"""

RECORDER = """#!{python}
# The stage's interpreter, recorded: the argv it got and what SLURM gave its task.
import json, os, sys
node = os.environ.get("SLURM_NODEID", "local")
keep = {{k: v for k, v in os.environ.items() if k.startswith("SLURM_")}}
with open(os.path.join({out!r}, f"node-{{node}}.json"), "w") as f:
    json.dump({{"argv": sys.argv, "env": keep}}, f)
"""


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def standins(tmp_path, monkeypatch):
    bin_dir, out = tmp_path / "bin", tmp_path / "records"
    bin_dir.mkdir()
    out.mkdir()
    _script(bin_dir / "srun", SRUN.format(python=sys.executable))
    recorder = _script(bin_dir / "record-python", RECORDER.format(python=sys.executable, out=str(out)))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    return recorder, out


def _launch(recipe: str, overrides: list[str], tmp_path: Path) -> LaunchedTrainer:
    cfg = load_config(ROOT / recipe, [f"output_dir={tmp_path / 'run'}", *overrides])
    trainer = LaunchedTrainer(cfg, stage_timeout=120)
    with pytest.raises(RuntimeError, match="without reporting a checkpoint"):  # the recorder trains nothing
        trainer.train([], "Qwen/Qwen2.5-VL-7B-Instruct", str(tmp_path / "run" / "checkpoints" / "m0"))
    return trainer


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("node-*.json"))}


def test_two_nodes_under_srun_each_get_their_rank_and_the_cpus_of_their_node(standins, tmp_path):
    recorder, out = standins
    _launch("recipes/trl/qwen2_5_vl_7b_2nodes.yaml", [f"launch.python={recorder}"], tmp_path)
    records = _records(out)
    assert sorted(records) == ["node-0", "node-1"]
    for node, rec in records.items():
        argv = rec["argv"][1:]  # after the interpreter: -m accelerate.commands.launch ...
        assert check_command(["python", *argv]) is None, argv
        assert argv[argv.index("--machine_rank") + 1] == node[-1]
        assert argv[argv.index("--main_process_ip") + 1] == "node0" and argv[argv.index("--num_processes") + 1] == "16"
        # 8 ranks and their data loaders per node: srun must hand the task the node's CPUs, not one.
        assert int(rec["env"]["SLURM_CPUS_PER_TASK"]) >= 16, rec["env"]


def test_a_hostfile_launch_without_prefix_is_rank_0_on_the_loops_node(standins, tmp_path):
    """The README's DeepSpeed hostfile line (``launch.prefix=[]``): no shell runs the command, so a
    ``$SLURM_NODEID`` machine rank would reach accelerate as a literal string, which it refuses."""
    recorder, out = standins
    _launch("recipes/trl/qwen2_5_vl_7b_2nodes.yaml", [f"launch.python={recorder}", "launch.prefix=[]",
            f"launch.config_file={ROOT / 'recipes/trl/accelerate/zero3_hostfile.yaml'}"], tmp_path)
    (rec,) = _records(out).values()
    argv = ["python", *rec["argv"][1:]]
    assert check_command(argv) is None, argv
    assert argv[argv.index("--machine_rank") + 1] == "0"


def test_a_quoting_error_shows_as_the_node_shell_sees_it(standins, tmp_path):
    """A value with spaces or quotes stays one argument through srun's ``bash -c``."""
    recorder, out = standins
    weird = tmp_path / "run dir 'a'"
    cfg = load_config(ROOT / "recipes/trl/qwen2_5_vl_7b_2nodes.yaml", [f"output_dir={weird}",
                                                                     f"launch.python={recorder}"])
    with pytest.raises(RuntimeError, match="without reporting"):
        LaunchedTrainer(cfg, stage_timeout=120).train([], "m", str(weird / "checkpoints" / "m0"))
    for rec in _records(out).values():
        assert rec["argv"][-1] == str(weird / "checkpoints" / "m0.launch" / "spec.json")


def test_a_launched_stage_logs_to_the_runs_wandb_project_and_group(monkeypatch):
    """SFT stages used to hard-code ``report_to="none"``; a launched stage now reports to the run's wandb."""
    import mathse_rl.integrations.trl.policy as policy

    cfg = load_config(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml", ["output_dir=runs/exp1"])
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.setitem(sys.modules, "wandb", type(sys)("wandb"))  # a stage process: no wandb run yet
    got = policy.stage_reporting(cfg.tracking, "runs/exp1/checkpoints/r1")
    assert got == {"report_to": ["wandb"], "run_name": "exp1-r1"}
    assert os.environ["WANDB_PROJECT"] == "mathse-rl" and os.environ["WANDB_RUN_GROUP"] == "exp1"
