"""Memory of one GPU in each phase of a run, from the model's real shape (:mod:`mathse_rl.plan.shapes`).

Model states (weights, gradients, optimizer states, master weights) are counted exactly from the parameter
counts and the sharding; activations, vLLM's KV cache need and the runtime overhead are estimates (each
line says which). The rules, per parameter (P all, T trainable, N processes that shard):

* DDP (no sharding): weights, gradients, DDP's gradient buckets and AdamW's two states, each in the
  dtype the model is loaded in (AdamW keeps its states in the parameter's dtype). Loaded in fp32 with
  bf16 autocast, the fp32 weights are the master weights and autocast holds a bf16 copy for compute.
  Loaded in bf16 there are no master weights: AdamW updates bf16 weights directly.
* FSDP (full shard, mixed precision bf16): fp32 shards of the weights (the master weights), gradients and
  AdamW states, 1/N each; the root unit and two layers (the one computing, the one prefetched) gathered in bf16.
* ZeRO-3 (bf16): DeepSpeed's own count, 18 bytes per parameter / N (bf16 partition 2, fp32 master 4,
  fp32 gradient 4, AdamW 8) plus 4 bytes per parameter of the largest module gathered; offload moves the
  optimizer side (master, gradients, AdamW) or the bf16 partition to host memory.

    >>> from mathse_rl.plan.shapes import model_shape
    >>> spec = TrainSpec(processes=8, sharding="zero3", micro_batch=1, seq_len=1024, logit_tokens=1024)
    >>> lines = training_lines(model_shape("Qwen/Qwen2.5-VL-7B-Instruct"), spec)
    >>> round(sum(l.bytes for l in lines if l.kind == "model") / 1e9, 1)  # DeepSpeed's formula: 18 P / 8 + 4 L
    20.8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mathse_rl.plan.shapes import ModelShape

GB = 1e9
SHARDINGS = ("ddp", "fsdp", "zero3")
RUNTIME_BYTES = int(2.5 * GB)  # CUDA context, NCCL buffers, allocator slack per training process (estimate)
VLLM_ACTIVATION_BYTES = int(3 * GB)  # vLLM's profiled activation peak beside weights and KV cache (estimate)


@dataclass(frozen=True)
class Line:
    """One line of a GPU's memory: what, how many bytes, whether it is an estimate, a note."""

    name: str
    bytes: int
    kind: str = "model"  # model | activations | vllm | judge | runtime
    estimate: bool = False
    note: str = ""


@dataclass
class TrainSpec:
    """How one training job holds the model (everything the memory of a training GPU depends on)."""

    processes: int = 1  # processes sharing the sharded states (all GPUs of the job)
    sharding: str = "ddp"  # ddp | fsdp | zero3
    offload_optimizer: bool = False  # ZeRO-3 / FSDP: master weights, gradients and AdamW states on the host
    offload_params: bool = False  # ZeRO-3: the bf16 partition on the host too
    weights_dtype: str = "float32"  # the dtype the model is loaded in (bfloat16 | float32)
    mixed_precision: bool = True  # bf16 compute (autocast / FSDP param_dtype / DeepSpeed bf16)
    lora_r: int = 0  # LoRA rank (0: full fine-tune)
    lora_targets: Any = "all-linear"
    micro_batch: int = 1  # rows per forward pass
    seq_len: int = 2048  # tokens per row (prompt with image tokens + completion)
    logit_tokens: int = 2048  # tokens whose logits are kept per row (SFT: the row; GRPO: the completion)
    logit_bytes: int = 10  # per logit: bf16 logits, their fp32 upcast in the loss, the fp32 gradient
    images_per_row: int = 0
    image_tokens: int = 1024  # LLM tokens per image (after the 2x2 merge; the vision tower sees 4x as many patches)
    gradient_checkpointing: bool = True
    state_dict_type: str = "SHARDED_STATE_DICT"  # FSDP in-stage checkpoints
    save_total_limit: int = 2
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {SHARDINGS}, got {self.sharding!r}")

    def trainable(self, shape: ModelShape) -> int:
        return shape.lora_params(self.lora_r, self.lora_targets) if self.lora_r else shape.params


def _size(dtype: str) -> int:
    return 2 if dtype in ("bfloat16", "bf16", "float16", "fp16") else 4


def training_lines(shape: ModelShape, spec: TrainSpec) -> list[Line]:
    """Per-GPU memory of a training process: model states (exact) and activations (estimates)."""
    return _model_states(shape, spec) + activation_lines(shape, spec) + [
        Line("runtime: CUDA context, NCCL buffers, allocator slack", RUNTIME_BYTES, "runtime", True)]


def _model_states(shape: ModelShape, spec: TrainSpec) -> list[Line]:
    P, N = shape.params, max(1, spec.processes)
    T = spec.trainable(shape)
    frozen = P - T
    w = _size(spec.weights_dtype)
    # LoRA: the frozen base stays in the loaded dtype; the adapters are fp32 (peft's default upcast).
    tw = 4 if spec.lora_r else w
    compute = 2 if spec.mixed_precision else w
    lines: list[Line] = []
    if spec.sharding == "ddp":
        if spec.lora_r:
            lines.append(Line("weights (frozen base + fp32 adapters)", frozen * w + T * 4))
        elif w == 4 and spec.mixed_precision:
            lines.append(Line("weights (bf16 autocast copies)", P * 2, note="held for the whole forward/backward"))
            lines.append(Line("master weights (fp32)", P * 4))
        else:
            lines.append(Line(f"weights ({spec.weights_dtype})", P * w))
            lines.append(Line("master weights", 0, note="none: AdamW updates bf16 weights in place"))
        lines.append(Line("gradients", T * tw))
        lines.append(Line("DDP gradient buckets", T * tw, note="gradient_as_bucket_view off (accelerate's default)"))
        lines.append(Line("optimizer states (AdamW, 2 per parameter)", 2 * T * tw))
        return lines
    if spec.sharding == "fsdp":
        gathered = shape.root_params + 2 * max(shape.layer_params, shape.vision_block_params)
        lines.append(Line("weights (bf16, gathered: root unit + 2 layers)", gathered * compute,
                          note="FSDP unit = decoder layer / vision block"))
        host = spec.offload_optimizer or spec.offload_params
        if spec.lora_r:
            lines.append(Line("weights (frozen base shards)", 0 if host else frozen * w // N))
        lines.append(Line(f"master weights ({'fp32' if tw == 4 else 'bf16'} shards)", 0 if host else T * tw // N,
                          note="on the host (offload)" if host else ""))
        lines.append(Line("gradients (shards)", 0 if host else T * tw // N))
        lines.append(Line("optimizer states (AdamW shards)", 0 if host else 2 * T * tw // N))
        return lines
    # ZeRO-3, bf16: DeepSpeed's estimate_zero3_model_states_mem_needs (stage3.py) term by term.
    lines.append(Line("weights (bf16 partition)", 0 if spec.offload_params else P * 2 // N,
                      note="on the host (offload_param)" if spec.offload_params else ""))
    lines.append(Line("weights + gradients gathered (largest module, 4 bytes/param)", 4 * shape.largest_module_params))
    off = spec.offload_optimizer
    lines.append(Line("master weights (fp32 partition)", 0 if off else T * 4 // N,
                      note="on the host (offload_optimizer)" if off else ""))
    lines.append(Line("gradients (fp32 partition)", 0 if off else T * 4 // N))
    lines.append(Line("optimizer states (AdamW partition)", 0 if off else T * 8 // N))
    return lines


def activation_lines(shape: ModelShape, spec: TrainSpec) -> list[Line]:
    """Activations of one micro-batch (estimates): layer-boundary checkpoints, one layer recomputed with its
    gradients, the logits kept for the loss, and the vision tower on the rows' images."""
    b, s, h, i = spec.micro_batch, spec.seq_len, shape.hidden, shape.intermediate
    per_layer = 2 * b * s * (6 * h + 4 * i) * 2  # forward intermediates of attention + MLP and their gradients, bf16
    if spec.gradient_checkpointing:
        text = [Line("activations: layer checkpoints", shape.layers * b * s * h * 2, "activations", True),
                Line("activations: one layer recomputed", per_layer, "activations", True)]
    else:
        text = [Line("activations: every layer", shape.layers * per_layer, "activations", True)]
    text.append(Line("activations: logits for the loss", b * spec.logit_tokens * shape.vocab * spec.logit_bytes,
                     "activations", True, note=f"{spec.logit_tokens} tokens x vocab {shape.vocab}"))
    if spec.images_per_row and shape.vision_depth:
        patches = b * spec.images_per_row * spec.image_tokens * 4
        vh, vi = shape.vision_hidden, shape.vision_intermediate
        vision = patches * vh * 2 * (shape.vision_depth if spec.gradient_checkpointing else 0)
        vision += 2 * patches * (6 * vh + 4 * vi) * 2 * (1 if spec.gradient_checkpointing else shape.vision_depth)
        text.append(Line("activations: vision tower", vision, "activations", True,
                         note=f"{spec.images_per_row} image(s) x {spec.image_tokens} tokens per row"))
    return text


def checkpoint_bytes(shape: ModelShape, spec: TrainSpec) -> dict[str, int]:
    """Bytes an in-stage checkpoint writes (in all, and the most one rank gathers/writes) and the final model."""
    P, N, T = shape.params, max(1, spec.processes), spec.trainable(shape)
    w = _size(spec.weights_dtype)
    tw = 4 if spec.lora_r else w
    if spec.lora_r:  # adapters and their optimizer only; the final model is the merged base
        total = T * tw * 3
        return {"checkpoint": total, "checkpoint_rank0": total, "final": P * w}
    if spec.sharding == "zero3":
        total = P * 2 + T * 12  # bf16 partitions + fp32 master + AdamW, every rank its own
        return {"checkpoint": total + P * 2, "checkpoint_rank0": total // N + P * 2, "final": P * 2}
    optim = 2 * T * tw
    if spec.sharding == "fsdp" and spec.state_dict_type != "FULL_STATE_DICT":
        total = P * w + optim
        return {"checkpoint": total, "checkpoint_rank0": total // N, "final": P * w}
    # DDP, or FSDP FULL_STATE_DICT: rank 0 gathers the whole model (the FSDP file and the safetensors) and optimizer
    model = P * w * (2 if spec.sharding == "fsdp" else 1)
    return {"checkpoint": model + optim, "checkpoint_rank0": model + optim, "final": P * w}


def vllm_lines(shape: ModelShape, *, utilization: float, gpu_bytes: int, tensor_parallel: int = 1,
               max_model_len: int = 0) -> tuple[list[Line], dict[str, Any]]:
    """vLLM's share of a GPU (``gpu_memory_utilization`` of its memory) and what it holds: the weights
    (bf16, split over tensor parallel GPUs), an activation reserve (estimate) and the KV cache it leaves."""
    share = int(utilization * gpu_bytes)
    weights = shape.params * 2 // max(1, tensor_parallel)
    kv = share - weights - VLLM_ACTIVATION_BYTES
    per_token = shape.kv_bytes_per_token // max(1, tensor_parallel)
    info = {"share": share, "weights": weights, "kv_cache": kv, "kv_tokens": max(0, kv) // per_token,
            "max_model_len": max_model_len}
    lines = [Line(f"vLLM (gpu_memory_utilization {utilization:g}): weights {weights / GB:.1f}, KV cache "
                  f"{max(0, kv) / GB:.1f} ({info['kv_tokens']:,} tokens)", share, "vllm",
                  note="reserved whole at start")]
    return lines, info


def judge_lines(shape: ModelShape, *, batch: int = 32, tokens: int = 2560) -> list[Line]:
    """A local ORM (transformers, bf16) in the loop's process: weights and its generation cache (estimate)."""
    return [Line("ORM judge: weights (bf16)", shape.params * 2, "judge"),
            Line(f"ORM judge: KV cache ({batch} x {tokens} tokens)", batch * tokens * shape.kv_bytes_per_token,
                 "judge", True),
            Line("ORM judge: CUDA context", int(0.5 * GB), "judge", True)]
