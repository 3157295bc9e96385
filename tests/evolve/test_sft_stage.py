"""SFT stages on trl's machinery: warm-up on short stages, in-stage checkpoints and resume,
and the same stage run as a 2-process job (gloo on CPU) through the launcher a GPU user runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripted_parts import make_problems

from mathse_rl.evolve import load_config
from mathse_rl.evolve.components import solve_row

ANSWER = "Step 1: add. The answer to this problem is {}."


def sft_rows(tmp: Path, n: int):
    """``n`` solve rows of the scripted addition problems, their images saved as files."""
    import dataclasses

    rows = []
    for p in make_problems(n):
        img = tmp / f"{p.id}.png"
        p.images[0].save(img)
        rows.append(solve_row(dataclasses.replace(p, images=(str(img),)), ANSWER.format(p.gold), "sampled"))
    return rows


def sft_config(model: str, out: Path, **train):
    base = {"use_cpu": True, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "max_steps": -1, "save_steps": 0, "seed": 0}
    return load_config(model=model, output_dir=str(out), train={**base, **train},
                       tracking={"report_to": ["none"], "progress": False})


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("train", [
    {"max_steps": 1},  # a one-step stage
    # the 7B recipe's global batch of 128 (4 x 32 on one process): 8 pool rows are one step
    {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 32, "global_batch_size": 128},
], ids=["one-step", "global-batch-128"])
def test_a_one_step_stage_changes_the_weights(tiny_vlm_path, tmp_path, train):
    from mathse_rl.integrations.trl.backends import SFTBackend

    cfg = sft_config(tiny_vlm_path, tmp_path, warmup_ratio=0.1, **train)
    path = SFTBackend(cfg).train(sft_rows(tmp_path, 8), tiny_vlm_path, str(tmp_path / "m1"))
    info = json.loads((Path(path) / "mathse_train.json").read_text())
    assert info["steps"] == 1
    before, after = weights(tiny_vlm_path), weights(path)
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    assert changed > len(before) // 2, f"only {changed} of {len(before)} tensors moved"


def test_launcher_commands_for_one_node_and_two():
    from mathse_rl.evolve.config import LaunchConfig
    from mathse_rl.evolve.launch import stage_command

    one = stage_command(LaunchConfig(launcher="accelerate", num_processes=8, config_file="fsdp.yaml"), ["s.json"],
                        python="py", port=29500)
    assert one == ["py", "-m", "accelerate.commands.launch", "--config_file", "fsdp.yaml", "--num_processes", "8",
                   "--num_machines", "1", "--machine_rank", "0", "--main_process_port", "29500",
                   "--module", "mathse_rl.evolve.launch", "s.json"]
    two = stage_command(LaunchConfig(launcher="torchrun", num_processes=8, num_machines=2, main_process_ip="node0",
                                     prefix=["srun", "--nodes=2", "--ntasks-per-node=1"]), ["s.json"], python="py")
    assert two[:5] == ["srun", "--nodes=2", "--ntasks-per-node=1", "bash", "-c"]
    assert two[5] == ("py -m torch.distributed.run --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d "
                      "--rdzv_endpoint node0:29500 -m mathse_rl.evolve.launch s.json")
    # Under a prefix, a per-node variable in machine_rank is left for the node's shell to expand.
    acc = stage_command(LaunchConfig(launcher="accelerate", num_processes=8, num_machines=2, main_process_ip="node0",
                                     machine_rank="$SLURM_NODEID", prefix=["srun"]), ["s.json"], python="py")
    assert "--machine_rank $SLURM_NODEID" in acc[-1] and "--num_processes 16" in acc[-1]


@pytest.mark.slow
def test_two_processes_through_the_launcher_match_one_process(tiny_vlm_path, tmp_path):
    """The same stage, global batch 4: 1 process x batch 2 x accumulation 2 in the loop's process,
    and 2 processes x batch 2 under ``accelerate launch`` (DDP, gloo on CPU). Same micro-batches,
    gradients summed over accumulation or averaged over processes with trl's global token count:
    losses agree to 1e-4 (relative) and, with plain SGD, the weights to 1e-5 (absolute; the update
    itself is > 1e-3; measured: 0, bit-identical). Plain SGD keeps the comparison meaningful:
    AdamW's first step is lr x sign(gradient), which turns float32 rounding on near-zero gradient
    entries into +-lr differences. (One process x batch 4 differs by 1.2e-3 of the update norm:
    micro-batches of 4 pad differently from micro-batches of 2.)"""
    from mathse_rl.evolve.launch import LaunchedTrainer
    from mathse_rl.integrations.trl.backends import SFTBackend

    rows = sft_rows(tmp_path, 8)
    sgd = {"optim": "sgd"}
    one_cfg = sft_config(tiny_vlm_path, tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         max_steps=2, learning_rate=0.1, options=sgd)
    one = SFTBackend(one_cfg).train(rows, tiny_vlm_path, str(tmp_path / "one"))
    two_cfg = load_config(model=tiny_vlm_path, output_dir=str(tmp_path), train={
        "use_cpu": True, "learning_rate": 0.1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": 2, "save_steps": 0, "seed": 0, "global_batch_size": 4, "options": sgd},
        launch={"launcher": "accelerate", "num_processes": 2}, tracking={"report_to": ["none"]})
    two = LaunchedTrainer(two_cfg, stage_timeout=600).train(rows, tiny_vlm_path, str(tmp_path / "two"))
    info = json.loads((Path(two) / "mathse_train.json").read_text())
    ref = json.loads((Path(one) / "mathse_train.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == ref["steps"] == 2
    assert info["losses"] == pytest.approx(ref["losses"], rel=1e-4)
    a, b, init = weights(one), weights(two), weights(tiny_vlm_path)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    rel = (sum(((a[k] - b[k]) ** 2).sum() for k in a) / sum(((a[k] - init[k]) ** 2).sum() for k in a)) ** 0.5
    print(f"max |w_1proc - w_2proc| = {diff:.3g}; max |w - w_init| = {moved:.3g}; "
          f"|w_1proc - w_2proc| / |update| = {rel.item():.3g}")
    assert moved > 1e-3 and diff < 1e-5


_LOOP_WITH_LAUNCHED_STAGE = """
import sys
sys.path.insert(0, {here!r})
from pathlib import Path
from scripted_parts import ScriptedGenerator, make_problems, scripted_config, seed_for
from mathse_rl.evolve import run_evolve

train, heldout = make_problems(6), make_problems(2, prefix="h", start=10)
cfg = scripted_config(Path({out!r}), model={model!r}, rounds=1, distill_train=False, reflect={{"enabled": False}},
                      train={{"use_cpu": True, "max_steps": 6, "save_steps": 1, "per_device_train_batch_size": 1,
                             "gradient_accumulation_steps": 1, "learning_rate": 1e-3}},
                      launch={{"launcher": "torchrun", "num_processes": 2}})
run_evolve(cfg, train, heldout, seed_attempts=seed_for(train[:2]), generator=ScriptedGenerator(), resume={resume})
"""


def _pool(out: Path) -> set[tuple]:
    from mathse_rl.evolve.pool import read_jsonl

    return {(r["problem_id"], r["response"], r["source"], r["round"]) for r in read_jsonl(out / "pool.jsonl")}


@pytest.mark.slow
def test_sigkill_of_a_two_process_stage_then_resume_continues_from_its_checkpoint(tiny_vlm_path, tmp_path):
    """The loop runs r1.train as a 2-process torchrun job with a checkpoint every step; the loop,
    the launcher and both workers are SIGKILLed once checkpoint-1 exists. ``--resume`` reruns
    the stage, which continues from its newest checkpoint (logged steps go on) and the run ends
    with every pool sample accepted before the kill."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "run"
    script = tmp_path / "loop.py"
    here = str(Path(__file__).parent)
    script.write_text(_LOOP_WITH_LAUNCHED_STAGE.format(here=here, out=str(out), model=tiny_vlm_path, resume=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(here).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list((out / "checkpoints").glob("r1.trainer/*/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:  # the loop, the launcher and its workers, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    from mathse_rl.evolve.pool import read_jsonl

    recorded = [r["stage"] for r in read_jsonl(out / "stages.jsonl")]
    assert recorded[-1] == "r1.judge" and "r1.train" not in recorded
    assert (out / "run.lock").exists()  # left behind by the killed run
    pool_at_kill = _pool(out)
    assert pool_at_kill

    script.write_text(_LOOP_WITH_LAUNCHED_STAGE.format(here=here, out=str(out), model=tiny_vlm_path, resume=True))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "taking over the lock" in done.stderr and not (out / "run.lock").exists()
    info = json.loads((out / "checkpoints" / "r1" / "mathse_train.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 6
    assert 1 <= info["resumed_at_step"] < 6 and info["resumed_from"] == f"checkpoint-{info['resumed_at_step']}"
    assert info["logged_steps"] == [1, 2, 3, 4, 5, 6]  # the resumed job logs from resumed_at_step + 1, not from 1
    stages = [r["stage"] for r in read_jsonl(out / "stages.jsonl")]
    assert stages[-2:] == ["r1.train", "r1.eval"]
    assert pool_at_kill <= _pool(out)
    assert json.loads((out / "result.json").read_text())["stages"]["r1.train"]["rows"] == len(_pool(out))


@pytest.mark.slow
def test_a_killed_stage_resumes_from_its_checkpoint_with_the_same_steps_and_data_order(tiny_vlm_path, tmp_path,
                                                                                         monkeypatch):
    """In the loop's process: a 4-step stage with a checkpoint every step is cut after step 2
    (later checkpoints removed, as a kill leaves them); the rerun resumes at step 2 and ends
    with the losses and weights of an uninterrupted run."""
    import shutil

    from mathse_rl.integrations.trl import backends

    rows = sft_rows(tmp_path, 8)
    cfg = sft_config(tiny_vlm_path, tmp_path, max_steps=4, save_steps=1, save_total_limit=10, options={"optim": "sgd"},
                     learning_rate=0.1)
    whole = backends.SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / "whole"))

    def killed(*a, **k):
        raise KeyboardInterrupt("killed after training")

    monkeypatch.setattr(backends, "_save_final", killed)
    with pytest.raises(KeyboardInterrupt):
        backends.SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / "cut"))
    monkeypatch.undo()
    (work,) = (tmp_path / "cut.trainer").iterdir()
    for step in (3, 4):
        shutil.rmtree(work / f"checkpoint-{step}")
    cut = backends.SFTBackend(cfg).train(rows, tiny_vlm_path, str(tmp_path / "cut"))
    a = json.loads((Path(whole) / "mathse_train.json").read_text())
    b = json.loads((Path(cut) / "mathse_train.json").read_text())
    assert (b["resumed_from"], b["steps"], b["logged_steps"]) == ("checkpoint-2", 4, [1, 2, 3, 4])
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-6)
    wa, wb = weights(whole), weights(cut)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6
    assert not (tmp_path / "cut.trainer").exists()  # checkpoints go once the stage's model is saved


@pytest.mark.slow
def test_the_online_recipe_resumes_and_saves_through_save_model(tiny_vlm_path, tmp_path):
    """``recipes/trl/mathse_grpo.py``: two steps with a checkpoint each, then ``--resume`` to three:
    training goes on from checkpoint-2, and ``final/`` is a loadable model with its processor."""
    import subprocess
    import sys

    from mathse_rl.integrations.trl.backends import load_policy

    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "train.jsonl"
    lines = []
    for p in make_problems(4):
        img = tmp_path / f"{p.id}.png"
        p.images[0].save(img)
        lines.append(json.dumps({"id": p.id, "question": p.question, "answer": p.gold, "images": [img.name]}))
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "grpo"
    base = [sys.executable, str(root / "recipes" / "trl" / "mathse_grpo.py"), "--config",
            str(root / "recipes" / "trl" / "mathse_grpo_tiny_cpu.yaml"), "--model", tiny_vlm_path,
            "--train_data", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "4",
            "--num_generations", "4", "--max_completion_length", "8", "--save_strategy", "steps", "--save_steps", "1"]
    first = subprocess.run(base + ["--max_steps", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    again = subprocess.run(base + ["--max_steps", "3", "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-2'}" in again.stdout
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
    model, processor = load_policy(str(out / "final"))
    assert getattr(processor, "image_processor", None) is not None


def test_vllm_data_parallel_engines_split_prompts_and_keep_their_order(monkeypatch):
    """Two engines x tensor parallel 2 over four visible GPUs, with a stand-in for ``vllm.LLM`` that
    starts its engine core as a child process, as vLLM V1 does (so an engine process that may not have
    children, a daemon, fails here as on a GPU node): each engine process sees its own two GPUs, the
    prompts are split 3 + 2, the answers come back in prompt order, and ``release()`` ends the engine
    processes and their cores. (vLLM itself is not installed here: this checks our side of the
    contract and the process model, not vLLM.)"""
    import psutil

    from mathse_rl.integrations.trl.backends import VLLMGenerator

    class Fake(VLLMGenerator):
        engine, sampling = "fake_vllm:FakeLLM", "fake_vllm:FakeParams"

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    cfg = load_config(generate={"backend": "vllm", "tensor_parallel_size": 2, "data_parallel_size": 2,
                                "options": {"gpu_memory_utilization": 0.85}})
    gen = Fake(cfg, "some/model")
    try:
        msgs = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
        outs = gen.generate(msgs, [()] * 5, n=2, temperature=1.0, max_new_tokens=8)
        assert [len(o) for o in outs] == [2] * 5
        assert all(o[k].endswith(f"k={k} question {i}") for i, o in enumerate(outs) for k in range(2))
        assert [o[0].split()[0] for o in outs] == ["gpus=4,5"] * 3 + ["gpus=6,7"] * 2
        assert all(" tp=2 " in o[0] for o in outs)
        procs = [p for p, _ in gen.workers]
        assert not any(p.daemon for p in procs)
        cores = {int(o[0].split(" core=")[1].split()[0]) for o in outs}
        workers = {int(o[0].split(" pid=")[1].split()[0]) for o in outs}
        assert len(cores) == 2 and workers == {p.pid for p in procs} and not cores & workers
    finally:
        gen.release()
    assert not gen.workers and not any(p.is_alive() for p in procs)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in cores)


@pytest.mark.parametrize("name", ["fsdp.yaml", "zero3.yaml", "zero3_hostfile.yaml", "zero3_offload_1gpu.yaml"])
def test_launcher_configs_are_read_by_accelerate(name):
    """accelerate's own config reader accepts each file (it rejects unknown keys)."""
    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).resolve().parents[2] / "recipes" / "trl" / "accelerate" / name
    cfg = ClusterConfig.from_yaml_file(path)
    assert str(cfg.distributed_type).split(".")[-1] in ("FSDP", "DEEPSPEED") and cfg.mixed_precision == "bf16"
    if cfg.deepspeed_config:
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]
    else:
        # in-stage checkpoints sharded (each rank its 1/N); the delivered model is saved whole (save_full_model)
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


def test_the_global_batch_is_checked_at_load():
    from mathse_rl.evolve.config import ConfigError

    with pytest.raises(ConfigError, match=r"global_batch_size=128 but .*\(4\) x .*\(4\) x processes \(1\) = 16"):
        load_config(train={"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
                           "global_batch_size": 128})
    cfg = load_config(train={"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
                             "global_batch_size": 128}, launch={"launcher": "torchrun", "num_processes": 8})
    assert cfg.train.global_batch_size == 128
