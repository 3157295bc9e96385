"""Fine-tune a judge with trl's ``SFTTrainer`` (``mathse-rl orm train``).

The data is what :func:`~mathse_rl.orm.data.build_orm_dataset` writes: conversational
prompt-completion rows with images, so the loss falls on the judgment JSON only. The
defaults follow the paper's SFT (AdamW, cosine decay, weight decay 0.05); a GPU recipe
for a 7B VLM is in ``recipes/orm/``.

    from mathse_rl.orm import OrmTrainConfig, train_orm
    path = train_orm(OrmTrainConfig(model="tiny-vlm", train_data="orm-data/train.jsonl",
                                    output_dir="orm-judge", max_steps=20, use_cpu=True))
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mathse_rl.orm.config import config_from

_TRAIN_KEYS = ("prompt", "completion", "images")


@dataclass
class OrmTrainConfig:
    model: str = ""  # checkpoint path of the judge to fine-tune (a causal LM or VLM)
    train_data: str = ""  # train.jsonl written by `orm build-data` (or its folder)
    output_dir: str = "orm-judge"  # where the fine-tuned judge is saved
    max_steps: int = -1  # optimizer steps; -1 = run num_train_epochs
    num_train_epochs: float = 1.0  # passes over the data when max_steps is -1
    learning_rate: float = 1e-5  # paper: 1e-5 (Qwen2-VL) / 2e-5 (CogVLM2, InternVL2.5)
    lr_scheduler_type: str = "cosine"  # paper: cosine decay
    warmup_ratio: float = 0.03  # paper: 0.01-0.1 depending on the backbone
    weight_decay: float = 0.05  # paper: 0.05
    per_device_train_batch_size: int = 4  # rows per device per micro-step
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step
    max_length: int | None = None  # truncate longer rows (None: no truncation, safest with images)
    use_cpu: bool = False  # train on CPU (tests, tiny models)
    bf16: bool = False  # bfloat16 training (GPU)
    gradient_checkpointing: bool = False  # trade compute for memory on large models
    logging_steps: int = 10  # log every this many steps
    seed: int = 0  # data order and init seed
    report_to: str = "none"  # "wandb", "none", ...
    sft_kwargs: dict[str, Any] = field(default_factory=dict)  # any other trl SFTConfig field


def train_config(config: Any = None, **overrides: Any) -> OrmTrainConfig:
    """An :class:`OrmTrainConfig` from a mapping/OmegaConf/dataclass plus overrides; unknown keys fail."""
    return config_from(OrmTrainConfig, config, "ORM train config", **overrides)


def _save_processor(processor: Any, out: Path) -> None:
    from mathse_rl.models.tiny import tokenizer_of

    try:
        processor.save_pretrained(out)
        return
    except Exception:
        pass  # a Qwen VL processor without a video processor cannot save itself; save its parts
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        image_processor.save_pretrained(out)
    tokenizer_of(processor).save_pretrained(out)


def train_orm(config: Any = None, *, rows: Sequence[Mapping[str, Any]] | None = None, **overrides: Any) -> str:
    """Fine-tune the judge and save it (model + processor) under ``output_dir``; return that path.

    ``rows`` (dataset rows in memory) replace ``train_data`` when given.
    """
    cfg = train_config(config, **overrides)
    if not cfg.model:
        raise ValueError("ORM training needs `model`: the checkpoint to fine-tune")
    if rows is None:
        if not cfg.train_data or not Path(cfg.train_data).exists():
            raise FileNotFoundError(f"ORM train data not found: {cfg.train_data!r} (run `mathse-rl orm build-data`)")
        from mathse_rl.orm.data import load_orm_split

        rows = load_orm_split(cfg.train_data)
    if not rows:
        raise ValueError("ORM training got no rows")

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathse_rl.orm.backends.local import load_judge_model

    # Loaded on CPU: the Trainer places it (one device per rank under torchrun/accelerate).
    model, processor = load_judge_model(cfg.model, device="cpu", dtype="bfloat16" if cfg.bf16 else "float32")
    is_vlm = hasattr(processor, "image_processor")
    keys = _TRAIN_KEYS if is_vlm else _TRAIN_KEYS[:2]
    dataset = Dataset.from_list([{k: r[k] for k in keys} for r in rows])
    fields = dict(
        output_dir=cfg.output_dir, max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=float(cfg.warmup_ratio) if cfg.warmup_ratio else 0,  # a float < 1 is a ratio of the steps
        weight_decay=cfg.weight_decay, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        use_cpu=cfg.use_cpu, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps, seed=cfg.seed, report_to=cfg.report_to, save_strategy="no",
        dataloader_num_workers=0,
    )
    fields.update(cfg.sft_kwargs)  # recipe-level SFTConfig fields win
    args = SFTConfig(**fields)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out)
    _save_processor(processor, out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (out / "orm_train.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg), "rows": len(rows), "steps": trainer.state.global_step,
         "losses": losses}, indent=2, default=str))
    return str(out)
