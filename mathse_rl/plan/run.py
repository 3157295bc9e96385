"""A run's plan from its recipe: per-GPU memory in each phase, disk per stage, every launch line per node.

    >>> plan = plan_recipe("recipes/trl/qwen2_5_vl_7b.yaml")          # doctest: +SKIP
    >>> plan.fits, plan.problems                                        # doctest: +SKIP
    (True, [])
    >>> print(plan.render())                                            # doctest: +SKIP

Recipes: the offline loop's (``mathse-rl evolve``, an :class:`~mathse_rl.evolve.config.EvolveConfig` YAML),
the online trainer's (``recipes/trl/mathse_grpo.py``, a ``MathSEConfig`` YAML) and the ORM's
(``mathse-rl orm train`` / a judge config). What a phase needs is compared with the GPU (80 GB unless told);
a phase that does not fit, a vLLM engine that cannot hold one ``max_model_len`` sequence, or a launch line
its launcher cannot parse is a problem, listed with its numbers.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mathse_rl.plan.commands import check_command, expand_on_node, split_prefix, srun_options
from mathse_rl.plan.memory import (
    GB, Line, TrainSpec, checkpoint_bytes, judge_lines, training_lines, vllm_lines,
)
from mathse_rl.plan.shapes import ModelShape, model_shape

ONLINE_KEYS = {"num_generations", "reward_funcs", "use_vllm", "reflect_mode", "loss"}
ORM_TRAIN_KEYS = {"train_data", "sft_kwargs"}
JUDGE_KEYS = {"backend", "fallback"}
ONLINE_SCRIPT = "recipes/trl/mathse_grpo.py"


@dataclass
class Assumptions:
    """What a recipe does not say and the plan must assume (each is printed with the plan)."""

    gpu_gb: float = 80.0  # memory of one GPU, in GB (1e9 bytes)
    prompt_tokens: int = 512  # text tokens of a prompt (question, options, template)
    image_tokens: int = 1024  # LLM tokens per image (a 896x896 image at 28 pixels per token after the 2x2 merge)
    images_per_prompt: int = 1  # images per prompt for a vision model
    judge_tokens: int = 2560  # a local ORM's prompt + verdict tokens per item
    cpus_per_gpu: int = 2  # CPUs a training rank needs beside its GPU (data loading, the collator)


@dataclass
class GpuTable:
    """One GPU's memory in one phase."""

    title: str
    lines: list[Line]
    capacity: int

    @property
    def used(self) -> int:
        return sum(line.bytes for line in self.lines)

    @property
    def left(self) -> int:
        return self.capacity - self.used

    @property
    def fits(self) -> bool:
        return self.left >= 0


@dataclass
class Command:
    what: str
    node: int
    argv: list[str]
    error: str | None = None


@dataclass
class RunPlan:
    recipe: str
    kind: str  # evolve | online | orm-train | judge | cpu
    model: ModelShape | None
    assumptions: Assumptions
    tables: list[GpuTable] = field(default_factory=list)
    disk: list[tuple[str, int, str]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def render(self) -> str:
        from mathse_rl.plan.report import render

        return render(self)


def _load_yaml(path: str | Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {})


def recipe_kind(data: Mapping[str, Any]) -> str:
    if ONLINE_KEYS & set(data):
        return "online"
    if ORM_TRAIN_KEYS & set(data):
        return "orm-train"
    if JUDGE_KEYS & set(data) and "generate" not in data:
        return "judge"
    return "evolve"


def plan_recipe(recipe: str | Path, overrides: Sequence[str] = (), assumptions: Assumptions | None = None,
                *, model: str | None = None) -> RunPlan:
    """Plan ``recipe`` with ``key=value`` overrides (the same forms its own entry point takes)."""
    a = assumptions or Assumptions()
    data = _load_yaml(recipe)
    kind = recipe_kind(data)
    if kind == "evolve":
        from mathse_rl.evolve.config import load_config

        extra = [f"model={model}"] if model else []
        return plan_evolve(load_config(recipe, [*overrides, *extra]), a, recipe=str(recipe))
    values = {**data, **_dotlist(overrides)}
    if model:
        values["model"] = model
    if kind == "online":
        return plan_online(values, a, recipe=str(recipe))
    if kind == "orm-train":
        return plan_orm_train(values, a, recipe=str(recipe))
    return plan_judge(values, a, recipe=str(recipe))


def _dotlist(overrides: Sequence[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides))) or {})


# ----------------------------------------------------------------------------- accelerate configs
def sharding_of(config_file: str | None, *, num_processes: int | None = None) -> dict[str, Any]:
    """What an accelerate config file (or none: DDP) means for memory: sharding, offload, checkpoint type."""
    if not config_file:
        return {"sharding": "ddp", "mixed_precision": None, "offload_optimizer": False, "offload_params": False,
                "state_dict_type": "FULL_STATE_DICT", "file": None}
    data = _load_yaml(config_file)
    kind = str(data.get("distributed_type", "NO")).upper()
    out: dict[str, Any] = {"file": str(config_file), "mixed_precision": data.get("mixed_precision"),
                           "offload_optimizer": False, "offload_params": False,
                           "state_dict_type": "FULL_STATE_DICT"}
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        offload = bool(fsdp.get("fsdp_offload_params"))
        out.update(sharding="fsdp", offload_optimizer=offload, offload_params=offload,
                   state_dict_type=str(fsdp.get("fsdp_state_dict_type", "FULL_STATE_DICT")),
                   fsdp_version=int(fsdp.get("fsdp_version", 1)))
    elif kind == "DEEPSPEED":
        ds = data.get("deepspeed_config") or {}
        if int(ds.get("zero_stage", 0)) != 3:
            out.update(sharding="ddp", note=f"DeepSpeed ZeRO-{ds.get('zero_stage')} is planned as DDP")
        else:
            out.update(sharding="zero3", offload_optimizer=str(ds.get("offload_optimizer_device", "none")) == "cpu",
                       offload_params=str(ds.get("offload_param_device", "none")) == "cpu",
                       multinode_launcher=ds.get("deepspeed_multinode_launcher"))
    else:
        out["sharding"] = "ddp"
    return out


def _seq_len(a: Assumptions, shape: ModelShape, completion: int) -> tuple[int, int]:
    images = a.images_per_prompt if shape.vision_depth else 0
    return a.prompt_tokens + images * a.image_tokens + completion, images


def _uses_local_orm(conf: Mapping[str, Any] | None) -> bool:
    return bool(conf) and conf.get("backend") == "local"


def _judge_shape(conf: Mapping[str, Any], policy: ModelShape, notes: list[str]) -> ModelShape:
    ref = str(conf.get("model") or "")
    try:
        return model_shape(ref)
    except Exception:
        notes.append(f"the ORM {ref or '(no model set)'} has no readable config here: planned with the policy's "
                     f"shape ({policy.name}), as an ORM fine-tuned from the same base")
        return policy


def _check_table(plan: RunPlan, table: GpuTable) -> None:
    plan.tables.append(table)
    if not table.fits:
        plan.problems.append(f"{table.title}: needs {table.used / GB:.1f} GB of a {table.capacity / GB:.0f} GB GPU "
                             f"({-table.left / GB:.1f} GB over)")


def _vllm_check(plan: RunPlan, info: Mapping[str, Any], where: str) -> None:
    if info["kv_cache"] <= 0:
        plan.problems.append(f"{where}: vLLM's share ({info['share'] / GB:.1f} GB) does not hold the weights "
                             f"({info['weights'] / GB:.1f} GB) and its activations: raise gpu_memory_utilization")
    elif info["max_model_len"] and info["kv_tokens"] < info["max_model_len"]:
        plan.problems.append(f"{where}: vLLM's KV cache holds {info['kv_tokens']:,} tokens, less than one "
                             f"max_model_len={info['max_model_len']:,} sequence (vLLM refuses to start)")


def _train_disk(plan: RunPlan, shape: ModelShape, spec: TrainSpec, stages: int, label: str) -> None:
    ck = checkpoint_bytes(shape, spec)
    kind = spec.sharding if spec.sharding != "fsdp" else f"fsdp {spec.state_dict_type}"
    plan.disk.append((f"{label}: in-stage checkpoint ({kind})", ck["checkpoint"],
                      f"the most one rank gathers and writes: {ck['checkpoint_rank0'] / GB:.1f} GB; "
                      f"{spec.save_total_limit} kept during the stage"))
    plan.disk.append((f"{label}: model saved per stage", ck["final"], f"x {stages} stage(s) kept in the run"))
    plan.disk.append((f"{label}: peak disk of the run", ck["final"] * stages + ck["checkpoint"] * spec.save_total_limit,
                      "saved models + the checkpoints of the running stage"))
    if ck["checkpoint_rank0"] > 64 * GB:
        plan.problems.append(f"{label}: an in-stage checkpoint gathers {ck['checkpoint_rank0'] / GB:.0f} GB on rank 0 "
                             f"(host memory and one writer): use a sharded state dict")


def _commands(plan: RunPlan, what: str, cmd: Sequence[str], nodes: int) -> None:
    prefix, line, _ = split_prefix(cmd)
    runs_on = range(nodes) if line is not None else range(1)
    for node in runs_on:
        try:
            argv = expand_on_node(cmd, node)
        except ValueError as exc:
            plan.commands.append(Command(what, node, [], str(exc)))
            plan.problems.append(f"{what} (node {node}): {exc}")
            continue
        error = check_command(argv)
        plan.commands.append(Command(what, node, argv if line is not None else list(cmd), error))
        if error:
            plan.problems.append(f"{what} (node {node}): the launcher refuses its arguments: {error}")
    if prefix:
        opts = srun_options(prefix)
        if opts and "--cpus-per-task" not in opts:
            plan.problems.append(f"{what}: srun without --cpus-per-task gives each node's task one CPU for all its "
                                 f"ranks and data loaders")


# ----------------------------------------------------------------------------- the offline loop
def plan_evolve(cfg: Any, a: Assumptions, recipe: str = "") -> RunPlan:
    """The offline loop: generation (vLLM engines or HF on the loop's node), judging, each SFT stage."""
    from mathse_rl.evolve.config import world_size

    if not cfg.model:
        raise ValueError("the recipe names no model: pass model=<path or hub id>")
    shape = model_shape(cfg.model)
    plan = RunPlan(recipe, "evolve", shape, a)
    if cfg.train.use_cpu:
        plan.kind = "cpu"
        plan.notes.append("train.use_cpu: a CPU run, nothing on a GPU to plan")
        return plan
    cap = int(a.gpu_gb * GB)
    g = cfg.generate
    orm_local = [k for k, conf in (("critic", cfg.critic), ("judge_options", cfg.judge_options)) if _uses_local_orm(conf)]
    judge = judge_lines(_judge_shape(cfg.critic if "critic" in orm_local else cfg.judge_options, shape, plan.notes),
                        tokens=a.judge_tokens) if orm_local else []
    seq, images = _seq_len(a, shape, g.max_new_tokens)
    # Generation and judging: the loop's node.
    if g.backend == "vllm":
        util = float(g.options.get("gpu_memory_utilization", 0.9))
        max_len = int(g.options.get("max_model_len", 0) or 0)
        lines, info = vllm_lines(shape, utilization=util, gpu_bytes=cap, tensor_parallel=g.tensor_parallel_size,
                                 max_model_len=max_len)
        engines = f"{g.data_parallel_size} engine(s) x tensor parallel {g.tensor_parallel_size}"
        _check_table(plan, GpuTable(f"generation ({engines}), each engine GPU", lines, cap))
        _vllm_check(plan, info, "generation")
        if judge:
            _check_table(plan, GpuTable("generation + judging, GPU 0 (vLLM engine 0 and the loop's local ORM)",
                                        lines + judge, cap))
    else:
        w = 2 if cfg.train.bf16 else 4
        lines = [Line(f"policy weights (HF generate, {'bf16' if w == 2 else 'fp32'})", shape.params * w),
                 Line(f"KV cache ({g.batch_size} x {g.n} x {seq} tokens)",
                      g.batch_size * g.n * seq * shape.kv_bytes_per_token * (w // 2), "activations", True)]
        _check_table(plan, GpuTable("generation (transformers, the loop's process), GPU 0", lines + judge, cap))
    # Each SFT stage.
    t = cfg.train
    la = cfg.launch
    lora = dict(getattr(t, "lora", None) or {})
    shard = sharding_of(la.config_file) if la.launcher == "accelerate" else sharding_of(None)
    spec = TrainSpec(processes=world_size(cfg), sharding=shard["sharding"],
                     offload_optimizer=shard["offload_optimizer"], offload_params=shard["offload_params"],
                     weights_dtype="bfloat16" if (lora and t.bf16) else "float32",
                     mixed_precision=bool(t.bf16), lora_r=int(lora.get("r", 0) or 0),
                     lora_targets=lora.get("target_modules", "all-linear"),
                     micro_batch=t.per_device_train_batch_size, seq_len=min(seq, t.max_length or seq),
                     logit_tokens=min(seq, t.max_length or seq), images_per_row=images,
                     image_tokens=a.image_tokens, gradient_checkpointing=t.gradient_checkpointing,
                     state_dict_type=shard["state_dict_type"], save_total_limit=t.save_total_limit)
    where = (f"SFT stage ({spec.sharding}, {spec.processes} process(es) on {la.num_machines} node(s)), each GPU"
             if la.launcher != "none" else "SFT stage (in the loop's process), GPU 0")
    _check_table(plan, GpuTable(where, training_lines(shape, spec), cap))
    if judge:
        plan.notes.append("the local ORM is released before each SFT stage and loaded again for the next judging")
    stages = (1 if cfg.distill_train else 0) + cfg.rounds + (1 if cfg.reflect.enabled and cfg.reflect.when == "after"
                                                              else 0)
    _train_disk(plan, shape, spec, stages, "SFT")
    if la.launcher != "none":
        from mathse_rl.evolve.launch import stage_command

        spec_path = str(Path(cfg.output_dir) / "checkpoints" / "m0.launch" / "spec.json")
        cmd = stage_command(la, [spec_path], python=la.python or "python", port=la.main_process_port or 29500)
        _commands(plan, "SFT stage launch", cmd, la.num_machines)
        if la.num_machines > 1 and not split_prefix(cmd)[1] and shard.get("multinode_launcher"):
            plan.notes.append(f"the other {la.num_machines - 1} node(s) are started by DeepSpeed's "
                              f"{shard['multinode_launcher']} launcher from its hostfile")
        elif la.num_machines > 1 and not la.prefix:
            plan.problems.append("several nodes without launch.prefix and without a DeepSpeed hostfile launcher: "
                                 "nothing starts the other nodes")
        cpus = srun_options(la.prefix).get("--cpus-per-task")
        if cpus and cpus.isdigit() and int(cpus) < la.num_processes * a.cpus_per_gpu:
            plan.notes.append(f"srun --cpus-per-task={cpus} gives {la.num_processes} ranks fewer than "
                              f"{a.cpus_per_gpu} CPUs each")
    return plan


# ----------------------------------------------------------------------------- the online trainer
def online_train_spec(values: Mapping[str, Any], shape: ModelShape, a: Assumptions, *,
                      sharding: Mapping[str, Any], processes: int) -> TrainSpec:
    """A ``MathSEConfig`` (as a mapping) as a training spec: the policy's dtype rule, GRPO's rows per forward."""
    from mathse_rl.integrations.trl.policy import policy_dtype

    lora = dict(values.get("lora") or {})
    bf16 = bool(values.get("bf16", False))
    completion = int(values.get("max_completion_length", 256) or 256)
    refine = int(values.get("reflect_max_tokens") or completion)
    seq, images = _seq_len(a, shape, max(completion, refine))
    b = int(values.get("per_device_train_batch_size", 8) or 8)
    adds = values.get("loss", "grpo") == "grpo" and values.get("reflect_mode", "add") == "add" and \
        values.get("reflect", True)
    # add mode: a micro-batch's verified refinements ride along in its forward pass (worst case: every row).
    rows = 2 * b if adds else b
    return TrainSpec(processes=processes, sharding=sharding["sharding"],
                     offload_optimizer=sharding["offload_optimizer"], offload_params=sharding["offload_params"],
                     weights_dtype=policy_dtype(bf16, bool(lora)), mixed_precision=bf16,
                     lora_r=int(lora.get("r", 0) or 0), lora_targets=lora.get("target_modules", "all-linear"),
                     micro_batch=rows, seq_len=seq, logit_tokens=max(completion, refine), logit_bytes=8,
                     images_per_row=images, image_tokens=a.image_tokens,
                     gradient_checkpointing=bool(values.get("gradient_checkpointing", False)),
                     state_dict_type=sharding["state_dict_type"],
                     save_total_limit=int(values.get("save_total_limit") or 2))


def plan_online(values: Mapping[str, Any], a: Assumptions, recipe: str = "", *,
                sharding: Mapping[str, Any] | None = None, processes: int | None = None) -> RunPlan:
    """The online recipe: one GRPO step per GPU (colocated vLLM, a local ORM), its launch line.

    ``sharding``/``processes`` replace what the recipe names (``launch_config``, ``launch_processes``): the
    check at start passes what the running ``accelerate launch`` job really is, and no launch line is made.
    """
    if not values.get("model"):
        raise ValueError("the recipe names no model: pass model=<path or hub id>")
    shape = model_shape(str(values["model"]))
    plan = RunPlan(recipe, "online", shape, a)
    if values.get("use_cpu"):
        plan.kind = "cpu"
        plan.notes.append("use_cpu: a CPU run, nothing on a GPU to plan")
        return plan
    cap = int(a.gpu_gb * GB)
    config_file = values.get("launch_config")
    if config_file and not Path(config_file).exists() and recipe:
        beside = Path(recipe).parent / str(config_file)
        config_file = str(beside) if beside.exists() else config_file
    shard = dict(sharding) if sharding is not None else sharding_of(config_file)
    launched = processes is not None
    processes = processes if launched else int(values.get("launch_processes", 1) or 1)
    spec = online_train_spec(values, shape, a, sharding=shard, processes=processes)
    lines = training_lines(shape, spec)
    mode = values.get("vllm_mode", "server") if values.get("use_vllm") else None
    if mode == "colocate" and not values.get("vllm_enable_sleep_mode"):
        util = float(values.get("vllm_gpu_memory_utilization", 0.3))
        tp = int(values.get("vllm_tensor_parallel_size", 1) or 1)
        vl, info = vllm_lines(shape, utilization=util, gpu_bytes=cap, tensor_parallel=tp,
                              max_model_len=int(values.get("vllm_max_model_length") or 0))
        lines = lines + vl
        _vllm_check(plan, info, "colocated vLLM")
    elif mode == "server":
        plan.notes.append("vLLM server mode: the server runs on GPUs of its own (trl vllm-serve), not planned here")
    critic = values.get("critic") or {}
    if _uses_local_orm(critic) or _uses_local_orm(values.get("judge_options")):
        lines = lines + judge_lines(_judge_shape(critic, shape, plan.notes), tokens=a.judge_tokens)
        plan.notes.append("a local ORM is loaded by every training process, on its own GPU")
    _check_table(plan, GpuTable(f"GRPO step ({spec.sharding}, {processes} process(es)), each GPU", lines, cap))
    _train_disk(plan, shape, spec, 1, "GRPO")
    if launched:
        return plan
    cmd = online_command(recipe, config_file, processes)
    _commands(plan, "online launch", cmd, 1)
    error = _script_args_error(recipe)
    if error:
        plan.problems.append(f"online launch: {ONLINE_SCRIPT} refuses the recipe: {error}")
    return plan


def online_command(recipe: str, config_file: str | None, processes: int) -> list[str]:
    """The launch line of the online recipe (one node)."""
    cmd = ["accelerate", "launch"]
    if config_file:
        cmd += ["--config_file", str(config_file)]
    cmd += ["--num_processes", str(processes)]
    if not config_file and processes > 1:
        cmd += ["--multi_gpu"]
    return cmd + [ONLINE_SCRIPT, "--config", recipe, "--train_data", "train.jsonl"]


def _script_args_error(recipe: str) -> str | None:
    """Parse the recipe with the online entry point's own parser (TrlParser over its dataclasses)."""
    if not recipe:
        return None
    try:
        import importlib.util

        from trl import TrlParser

        path = Path(__file__).resolve().parents[2] / ONLINE_SCRIPT
        if not path.exists():  # an installed package without the repository's recipes: nothing to parse with
            return None
        spec = importlib.util.spec_from_file_location("_mathse_grpo_recipe", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        from mathse_rl.integrations.trl import MathSEConfig

        # bf16 off for the check: trl refuses bf16 on a machine without a GPU, which says nothing of the recipe.
        TrlParser((module.ScriptArguments, MathSEConfig)).parse_args_and_config(
            ["--config", recipe, "--output_dir", "/tmp/mathse-plan-check", "--bf16", "False"])
    except SystemExit as exc:
        return f"exit {exc.code}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ----------------------------------------------------------------------------- the ORM
def plan_orm_train(values: Mapping[str, Any], a: Assumptions, recipe: str = "") -> RunPlan:
    shape = model_shape(str(values["model"]))
    plan = RunPlan(recipe, "orm-train", shape, a)
    if values.get("use_cpu"):
        plan.kind = "cpu"
        return plan
    kw = dict(values.get("sft_kwargs") or {})
    fsdp = "full_shard" in str(kw.get("fsdp", ""))
    bf16 = bool(values.get("bf16"))  # mathse_rl.orm.train loads the judge in bf16 when set
    mixed = bf16 or bool(kw.get("bf16"))  # sft_kwargs.bf16 alone: fp32 weights, bf16 autocast
    processes = int(values.get("processes", 8))
    plan.notes.append(f"launched by torchrun over {processes} GPUs of one node (the recipe's own command line)")
    spec = TrainSpec(processes=processes, sharding="fsdp" if fsdp else "ddp", weights_dtype="bfloat16" if bf16 else
                     "float32", mixed_precision=mixed, micro_batch=int(values.get("per_device_train_batch_size", 4)),
                     seq_len=_seq_len(a, shape, a.judge_tokens - a.prompt_tokens)[0],
                     logit_tokens=_seq_len(a, shape, a.judge_tokens - a.prompt_tokens)[0],
                     images_per_row=a.images_per_prompt if shape.vision_depth else 0, image_tokens=a.image_tokens,
                     gradient_checkpointing=bool(values.get("gradient_checkpointing")),
                     state_dict_type=str((kw.get("fsdp_config") or {}).get("state_dict_type", "FULL_STATE_DICT")))
    if bf16:
        plan.notes.append("the ORM recipe loads the judge in bf16: AdamW updates bf16 weights (no fp32 master)")
    _check_table(plan, GpuTable(f"ORM fine-tune ({spec.sharding}, {processes} processes), each GPU",
                                training_lines(shape, spec), int(a.gpu_gb * GB)))
    if str(kw.get("save_strategy", "no")) == "no":  # mathse_rl.orm.train writes no in-stage checkpoints by default
        plan.disk.append(("ORM: the fine-tuned judge", checkpoint_bytes(shape, spec)["final"], "no in-run checkpoints"))
    else:
        _train_disk(plan, shape, dataclasses.replace(spec, save_total_limit=int(kw.get("save_total_limit") or 1)),
                    1, "ORM")
    cmd = ["torchrun", "--nproc_per_node", str(processes), "-m", "mathse_rl", "orm", "train", "--config", recipe]
    _commands(plan, "ORM fine-tune launch", cmd, 1)
    return plan


def plan_judge(values: Mapping[str, Any], a: Assumptions, recipe: str = "") -> RunPlan:
    plan = RunPlan(recipe, "judge", None, a)
    if values.get("backend") != "local":
        plan.notes.append(f"judge backend {values.get('backend')!r}: no model on this machine's GPUs")
        return plan
    shape = _judge_shape(values, model_shape("Qwen/Qwen2.5-VL-7B-Instruct"), plan.notes)
    plan.model = shape
    batch = int(values.get("batch_size", 8))
    _check_table(plan, GpuTable("local judge (one GPU)", judge_lines(shape, batch=batch, tokens=a.judge_tokens),
                                int(a.gpu_gb * GB)))
    return plan


def as_shell(argv: Sequence[str]) -> str:
    return shlex.join(argv)
