"""How the policy is held and saved in training: its load dtype, LoRA adapters (peft), a full final save.

One rule for the online trainer and the offline SFT stages, also used by :mod:`mathse_rl.plan`:

* A full fine-tune loads the weights in fp32 whatever ``bf16`` says: ``bf16`` is mixed precision (autocast,
  FSDP's ``param_dtype``, DeepSpeed's bf16), and the fp32 weights (or their shards) are the master weights
  AdamW updates. AdamW on bf16 weights at lr 1e-6 rounds most updates away: bf16 has 8 bits of mantissa, so
  an update below ~2^-9 of a weight leaves it unchanged.
* With LoRA (``lora: {r: 64, ...}``) the frozen base is loaded in bf16 (when ``bf16``) and only the
  adapters, fp32, are trained.

    >>> policy_dtype(bf16=True, lora=False), policy_dtype(bf16=True, lora=True)
    ('float32', 'bfloat16')
"""

from __future__ import annotations

from typing import Any, Mapping

LORA_DEFAULTS = {"r": 64, "lora_alpha": 128, "lora_dropout": 0.05, "target_modules": "all-linear"}


def policy_dtype(bf16: bool, lora: bool) -> str:
    """The dtype the policy is loaded in for training (see the module docstring)."""
    return "bfloat16" if (bf16 and lora) else "float32"


def lora_config(spec: Mapping[str, Any] | None):
    """A ``peft.LoraConfig`` from a recipe's ``lora`` mapping (None or empty: no LoRA).

    Keys are ``peft.LoraConfig`` fields (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ...);
    ``target_modules: all-linear`` covers every linear layer of the language model, not the vision tower.

        >>> lora_config({"r": 8}).r                                                   # doctest: +SKIP
        8
    """
    if not spec:
        return None
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - peft comes with mathse-rl[trl]
        raise ImportError("lora needs peft: pip install 'mathse-rl[trl]'") from exc
    values = {**LORA_DEFAULTS, **dict(spec)}
    if values["target_modules"] == "all-linear":
        # peft's "all-linear" would also wrap the vision tower's linears: the language model's only.
        values["target_modules"] = r"(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    values.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**values)


def save_full_model(trainer: Any, path: str) -> None:
    """``trainer.save_model(path)`` writing one loadable model (vLLM and ``from_pretrained`` read it next), also
    when in-stage checkpoints are sharded: FSDP's state dict type is switched to ``FULL_STATE_DICT`` for this
    save (accelerate's documented "train sharded, save full"); ZeRO-3 gathers through ``zero3_save_16bit_model``.
    LoRA adapters are merged into the base first (one process; LoRA runs unsharded). Every process calls it.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(path)
            trainer.processing_class.save_pretrained(path)
        trainer.accelerator.wait_for_everyone()
        return
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(path)


def stage_reporting(tracking: Any, output_dir: str) -> dict[str, Any]:
    """``report_to`` / ``run_name`` of a fine-tune: the run's trackers (transformers knows wandb; our console
    sink prints the loop's own records), one wandb run per launched stage named ``<run>-<stage>`` in the
    run's project and group.

        >>> from types import SimpleNamespace as NS
        >>> stage_reporting(NS(report_to=["console"], project="p", run_name=None), "runs/a/checkpoints/r1")
        {'report_to': 'none'}
    """
    import os
    from pathlib import Path

    import sys

    sinks = list(getattr(tracking, "report_to", None) or [])
    if "wandb" not in sinks:
        return {"report_to": "none"}
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        # A fine-tune inside the loop's process: transformers would log into the loop's own run with its own
        # step counter, and wandb drops the loop's later (smaller) steps. The stage's losses stay in its
        # mathse_train.json; launched stages (their own processes) get wandb runs of their own.
        return {"report_to": "none"}
    stage = Path(output_dir).name
    run = getattr(tracking, "run_name", None) or Path(output_dir).parent.parent.name
    os.environ.setdefault("WANDB_PROJECT", getattr(tracking, "project", None) or "mathse-rl")
    os.environ.setdefault("WANDB_RUN_GROUP", run)  # the stages of a run side by side with the loop's own run
    return {"report_to": ["wandb"], "run_name": f"{run}-{stage}"}
