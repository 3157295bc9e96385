"""Each SFT stage of the loop as a job of N processes on M nodes, started by an existing launcher.

The loop stays one process that generates, judges and reflects. When a stage fine-tunes, it
writes the stage's rows to a file and starts ``accelerate launch`` (FSDP or DeepSpeed ZeRO-3
from an accelerate config) or ``torchrun`` for that stage alone; the stage's processes train
with the registered trainer backend (trl's ``SFTTrainer``), save, and exit; the loop waits and
checks the saved checkpoint before it records the stage.

    launch.launcher=accelerate launch.num_processes=8 \\
        launch.config_file=recipes/trl/accelerate/fsdp.yaml                 # one node, 8 GPUs
    launch.num_machines=2 launch.main_process_ip=node0 launch.machine_rank='$SLURM_NODEID' \\
        launch.prefix=[srun,--nodes=2,--ntasks-per-node=1,--cpus-per-task=64]  # two nodes under SLURM

Why a job per stage rather than the whole loop under the launcher:

- **GPU memory.** Generation (vLLM) and a full fine-tune of a 7B VLM do not fit the same GPUs
  at once. The loop tears vLLM down before the stage; the stage's processes exit when the
  stage ends, so every byte they held (weights, AdamW states, FSDP buffers, the NCCL
  communicator) returns to the driver, and generation starts again on empty GPUs. Freeing
  all that inside long-lived processes is what in-process teardown gets wrong.
- **Several nodes.** The launcher's own rendezvous (``--main_process_ip/--machine_rank``,
  torchrun's c10d endpoint, DeepSpeed's hostfile) spans the nodes; with ``launch.prefix``
  (``srun``, ``mpirun``, ``pdsh``) the loop starts it on every node. Generation, judging and
  the pool stay on the loop's node and nothing of ours has to be distributed.
- **Resume.** A stage is a plain trl run with checkpoints on a step schedule; killing it
  (or the loop) loses at most ``train.save_steps`` steps, and ``--resume`` reruns the stage,
  which continues from its newest checkpoint.

The child entry point is this module: ``python -m mathse_rl.evolve.launch <spec.json>``.
It imports no framework itself; the trainer backend named in the config does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from mathse_rl.evolve.config import EvolveConfig, LaunchConfig, load_config, to_yaml, world_size
from mathse_rl.evolve.pool import atomic_write_text, read_jsonl, write_jsonl

logger = logging.getLogger(__name__)

ENTRY = "mathse_rl.evolve.launch"
_SHELL_VAR = re.compile(r"^\$\{?\w+\}?$")


def free_port() -> int:
    """An unused local TCP port (single-node rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_command(la: LaunchConfig, args: Sequence[str], *, python: str | None = None,
                  port: int | None = None) -> list[str]:
    """The command that runs ``python -m mathse_rl.evolve.launch *args`` under the launcher.

    >>> la = LaunchConfig(launcher="torchrun", num_processes=2, main_process_port=29511)
    >>> stage_command(la, ["spec.json"], python="python")[:6]
    ['python', '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node']
    """
    py = python or la.python or sys.executable
    port = port or la.main_process_port or (29500 if la.num_machines > 1 else free_port())
    rank = str(la.machine_rank)
    if not la.prefix and _SHELL_VAR.match(rank):
        # No prefix: the launcher runs once, here, with no shell to expand a per-node variable; this node is
        # the rendezvous' rank 0 (a DeepSpeed hostfile launch numbers the other nodes itself).
        rank = "0"
    if la.launcher == "accelerate":
        cmd = [py, "-m", "accelerate.commands.launch"]
        if la.config_file:
            cmd += ["--config_file", la.config_file]
        cmd += ["--num_processes", str(la.num_processes * la.num_machines), "--num_machines", str(la.num_machines),
                "--machine_rank", rank, "--main_process_port", str(port)]
        if la.main_process_ip:
            cmd += ["--main_process_ip", la.main_process_ip]
        if not la.config_file:
            # no config: plain data parallelism (DDP) over the processes, as `accelerate config` would write it
            cmd += ["--multi_gpu"] if la.num_processes * la.num_machines > 1 else []
            cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += [*la.extra_args, "--module", ENTRY, *args]
    elif la.launcher == "torchrun":
        cmd = [py, "-m", "torch.distributed.run", "--nnodes", str(la.num_machines),
               "--nproc_per_node", str(la.num_processes)]
        if la.num_machines > 1:
            cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"{la.main_process_ip}:{port}"]
        else:
            cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
        cmd += [*la.extra_args, "-m", ENTRY, *args]
    else:
        raise ValueError(f"launch.launcher={la.launcher!r} runs the stage in the loop's process; nothing to launch")
    if not la.prefix:
        return cmd
    # A prefix (srun, mpirun, pdsh) starts the launcher on every node: a shell there expands the
    # per-node variable in machine_rank (e.g. $SLURM_NODEID).
    line = " ".join(a if (a == rank and _SHELL_VAR.match(a)) else shlex.quote(a) for a in cmd)
    return [*la.prefix, "bash", "-c", line]


class LaunchedTrainer:
    """The loop's trainer when ``launch.launcher`` is set: a job of N processes per SFT stage.

    ``train(rows, init, output_dir)`` writes the rows and the config next to ``output_dir``
    (``<output_dir>.launch/``), runs the launcher, waits, and returns the checkpoint the
    job's main process reports, after checking that it holds a saved model.
    """

    def __init__(self, config: EvolveConfig, stage_timeout: float | None = None):
        self.cfg = config
        self.timeout = stage_timeout
        self.last_command: list[str] = []

    def train(self, rows: Sequence[Any], init_model: str, output_dir: str) -> str:
        job = Path(output_dir).with_name(Path(output_dir).name + ".launch")
        job.mkdir(parents=True, exist_ok=True)
        rows_path, result_path = job / "rows.jsonl", job / "result.json"
        write_jsonl(rows_path, (_row_to_json(r) for r in rows))
        atomic_write_text(job / "config.yaml", to_yaml(self.cfg))
        spec = {"config": str(job / "config.yaml"), "rows": str(rows_path), "init": init_model,
                "output": output_dir, "result": str(result_path)}
        atomic_write_text(job / "spec.json", json.dumps(spec, indent=1))
        result_path.unlink(missing_ok=True)
        cmd = stage_command(self.cfg.launch, [str(job / "spec.json")])
        self.last_command = cmd
        env = {**os.environ, **{k: str(v) for k, v in self.cfg.launch.env.items()}}
        logger.info("fine-tune on %d process(es): %s", world_size(self.cfg), shlex.join(cmd))
        proc = subprocess.Popen(cmd, env=env)
        try:
            rc = proc.wait(timeout=self.timeout)
        except BaseException:  # Ctrl-C / timeout: the stage's processes do not outlive the loop
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        if rc != 0:
            raise RuntimeError(f"the fine-tune of {Path(output_dir).name} exited with status {rc} (see its output "
                               f"above); run again with --resume to continue from its last checkpoint")
        if not result_path.exists():
            raise RuntimeError(f"the fine-tune of {Path(output_dir).name} exited without reporting a checkpoint "
                               f"({result_path} is missing)")
        checkpoint = json.loads(result_path.read_text())["checkpoint"]
        if not (Path(checkpoint) / "config.json").exists():
            raise RuntimeError(f"the fine-tune reported {checkpoint}, which holds no saved model")
        return checkpoint


def _row_to_json(row: Any) -> dict[str, Any]:
    images = [str(i) for i in row.images if isinstance(i, (str, os.PathLike))]
    if len(images) != len(row.images):
        raise TypeError(f"row {row.problem_id}: a launched fine-tune reads images from files, got an in-memory image")
    return {"problem_id": row.problem_id, "messages": row.messages, "images": images, "response": row.response,
            "source": row.source}


def rank() -> int:
    """This process's global rank under torchrun / accelerate (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each process of a launched stage: train, and (rank 0) report the checkpoint."""
    from mathse_rl.evolve.components import TrainRow, get_trainer

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m mathse_rl.evolve.launch <spec.json>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if rank() == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[0]).read_text())
    cfg = load_config(spec["config"])
    rows = [TrainRow(r["problem_id"], r["messages"], tuple(r["images"]), r["response"], r["source"])
            for r in read_jsonl(spec["rows"])]
    checkpoint = get_trainer(cfg.train.backend, cfg).train(rows, spec["init"], spec["output"])
    if rank() == 0:
        atomic_write_text(Path(spec["result"]), json.dumps({"checkpoint": checkpoint, "rows": len(rows),
                                                            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
