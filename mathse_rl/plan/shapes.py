"""The real shape of a model, from its config alone: the model is built on the meta device.

    >>> s = model_shape("Qwen/Qwen2.5-VL-7B-Instruct")        # the shipped public config; no hub, no weights
    >>> s.params, s.vision_params, s.largest_module_params
    (8292166656, 676550144, 544997376)

A model reference is a saved model directory (its ``config.json``), a hub id in the local cache, or a
hub id whose public config ships in ``mathse_rl/plan/models/`` (Qwen2.5-VL-7B-Instruct).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).parent / "models"
# hub id -> folder under SHIPPED holding its public config.json (see SOURCE.md there)
KNOWN_CONFIGS = {"Qwen/Qwen2.5-VL-7B-Instruct": "Qwen2.5-VL-7B-Instruct"}


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts and the sizes the memory plan needs (all counted on the real module tree)."""

    name: str
    params: int  # every parameter once (tied weights once)
    vision_params: int  # the vision tower (0 for a text model)
    largest_module_params: int  # the largest single module's own parameters (DeepSpeed's "largest layer")
    root_params: int  # parameters outside decoder layers and vision blocks (FSDP's root unit when those are wrapped)
    layer_params: int  # one decoder layer
    vision_block_params: int  # one vision block (0 for a text model)
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    vision_hidden: int
    vision_depth: int
    vision_intermediate: int
    linear_shapes: tuple[tuple[str, int, int], ...]  # (module name, in, out) of every nn.Linear: LoRA sizes

    @property
    def kv_bytes_per_token(self) -> int:
        """vLLM's KV cache per token in bf16: keys and values of every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def lora_params(self, r: int, targets: Any = "all-linear") -> int:
        """Adapter parameters of LoRA rank ``r`` on ``targets`` (peft's ``all-linear``: every linear layer of the
        language model except the output head; or a list of module-name suffixes)."""
        total = 0
        for name, fan_in, fan_out in self.linear_shapes:
            leaf = name.rsplit(".", 1)[-1]
            if targets == "all-linear":
                hit = "visual" not in name and leaf != "lm_head"
            else:
                hit = any(name == t or name.endswith("." + t) or leaf == t for t in targets)
            if hit:
                total += r * (fan_in + fan_out)
        return total


def resolve_config_dir(ref: str) -> Path:
    """The directory holding ``ref``'s config.json (a saved model, a cached hub id, or a shipped config)."""
    path = Path(ref).expanduser()
    if (path / "config.json").exists():
        return path
    if ref in KNOWN_CONFIGS:
        return SHIPPED / KNOWN_CONFIGS[ref]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent
    except Exception:  # not a hub id
        pass
    raise FileNotFoundError(f"no config for model {ref!r}: not a saved model directory, not in the hub cache, and "
                            f"not one of the shipped configs ({', '.join(KNOWN_CONFIGS)})")


@functools.lru_cache(maxsize=8)
def model_shape(ref: str) -> ModelShape:
    """Build ``ref``'s model on the meta device (no memory, no weights) and count its parts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(str(resolve_config_dir(ref)))
    vision = getattr(config, "vision_config", None)
    auto = AutoModelForImageTextToText if vision is not None else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    text = getattr(config, "text_config", config)
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen[id(p)] = p.numel()
    params = sum(seen.values())
    vision_params = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    layer = block = 0
    wrapped = 0
    for m in model.modules():
        kind = type(m).__name__
        if kind.endswith("DecoderLayer"):
            layer = sum(p.numel() for p in m.parameters())
            wrapped += layer
        elif kind.endswith("VisionBlock"):
            block = sum(p.numel() for p in m.parameters())
            wrapped += block
    linears = tuple((n, m.in_features, m.out_features) for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear))
    heads = text.num_attention_heads
    return ModelShape(
        name=ref, params=params, vision_params=vision_params, largest_module_params=largest,
        root_params=params - wrapped, layer_params=layer, vision_block_params=block,
        hidden=text.hidden_size, layers=text.num_hidden_layers, intermediate=text.intermediate_size,
        vocab=text.vocab_size, heads=heads, kv_heads=getattr(text, "num_key_value_heads", heads) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vision_hidden=getattr(vision, "hidden_size", 0) if vision is not None else 0,
        vision_depth=getattr(vision, "depth", 0) if vision is not None else 0,
        vision_intermediate=getattr(vision, "intermediate_size", 0) if vision is not None else 0,
        linear_shapes=linears)
