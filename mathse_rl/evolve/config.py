"""The configuration of the self-evolving loop: structured OmegaConf dataclasses.

Every option the paper leaves open is a field here; where the paper made a choice,
that choice is the default (two rounds, reflection once after the rounds with the
paper's prompt, an accumulating pool, SFT with lr 1e-5 / cosine / warm-up 0.1 /
weight decay 0.05).

    >>> cfg = load_config(overrides=["rounds=1", "generate.n=2"])
    >>> cfg.rounds, cfg.generate.n, cfg.reflect.when
    (1, 2, 'after')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from mathse_rl.data.loaders import GOLD_COLUMNS

if TYPE_CHECKING:
    from mathse_rl.step import StepConfig


@dataclass
class DataConfig:
    train: Optional[str] = None  # jsonl path or "hf:<name>[:split]" of training problems
    eval: Optional[str] = None  # held-out problems, same forms; None splits eval_fraction off train
    seed: Optional[str] = None  # jsonl of teacher (distilled) solutions: {"problem_id", "response"}
    eval_fraction: float = 0.0  # share of train held out when `eval` is None
    limit: Optional[int] = None  # use only the first N training problems (smoke runs)
    image_root: Optional[str] = None  # directory that relative image paths are read from
    gold_columns: list[str] = field(default_factory=lambda: list(GOLD_COLUMNS))  # reference answer: per row, the first non-empty


@dataclass
class GenerateConfig:
    backend: str = "hf"  # generator registry name: hf (transformers generate) | vllm | a registered name
    n: int = 1  # sampled paths per unsolved question per round (the paper reads as one)
    temperature: float = 0.7  # sampling temperature for round generation
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 512  # completion budget per path
    batch_size: int = 8  # prompts per generate call
    chunk_size: int = 64  # problems per durable chunk (a resumed stage skips finished chunks)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific (e.g. vLLM gpu_memory_utilization)


@dataclass
class ReflectConfig:
    enabled: bool = True  # run the reflection stage at all
    when: str = "after"  # after: once after the rounds (Algorithm 1) | every_round: after each round's judging | never
    template: str = "paper"  # reflection prompt: paper | short | a format string (see mathse_rl.prompts)
    refiner: str = "policy"  # refiner registry name: policy (the model writes its own) | openai (a teacher)
    n: int = 1  # refinements per wrong path
    attempts: int = 1  # refinements tried one after another per wrong path, stopping at the first verified one
    temperature: float = 0.7  # refiner sampling temperature
    max_tokens: Optional[int] = None  # new tokens per refinement (None: generate.max_new_tokens); longer = truncated
    max_per_question: Optional[int] = None  # wrong paths reflected per question (None: all, as in the paper)
    only_unsolved: bool = False  # reflect only questions with no correct path in the pool
    openai: dict[str, Any] = field(default_factory=lambda: {  # teacher endpoint for refiner=openai
        "model": "gpt-4o", "base_url": None, "api_key_env": "OPENAI_API_KEY", "max_tokens": 1024})


@dataclass
class PoolConfig:
    dedup: bool = True  # drop a path whose normalised text is already pooled for the question
    max_per_question: Optional[int] = 4  # accepted paths kept per question (None: no cap)
    accumulate: bool = True  # rounds add to the pool (paper); False trains each round on its own paths


@dataclass
class TrainConfig:
    backend: str = "sft"  # trainer registry name: sft (trl SFTTrainer) | a registered name
    from_base: bool = False  # each round fine-tunes the base model (True) or continues from the last (False)
    learning_rate: float = 1e-5  # paper: 1e-5 for Qwen2-VL
    lr_scheduler_type: str = "cosine"  # paper: cosine decay
    warmup_ratio: float = 0.1  # share of steps warming up (paper: 0.1 for Qwen2-VL); passed as a float warmup_steps
    weight_decay: float = 0.05  # paper: 0.05
    num_train_epochs: float = 1.0  # passes over the pool per fine-tune
    max_steps: int = -1  # cap on optimiser steps (-1: epochs decide)
    per_device_train_batch_size: int = 4  # micro-batch
    gradient_accumulation_steps: int = 32  # with 1 device, 4 x 32 = 128, the paper's global batch
    max_length: Optional[int] = None  # truncate rows (None: keep whole, safe with images)
    bf16: bool = False  # bf16 mixed precision (GPU)
    use_cpu: bool = False  # force CPU (tests, demo)
    gradient_checkpointing: bool = False  # trade compute for memory
    seed: int = 0  # trainer seed
    save_processor: bool = True  # save the processor/tokenizer next to each checkpoint
    options: dict[str, Any] = field(default_factory=dict)  # extra SFTConfig fields


@dataclass
class EvalConfig:
    enabled: bool = True  # evaluate the held-out split after distillation, every round and the final fine-tune
    judge: str = "verifier"  # reward name that scores held-out answers
    k: int = 0  # pass@k samples per question at eval_temperature (0: greedy accuracy only)
    temperature: float = 0.7  # sampling temperature for pass@k
    max_new_tokens: Optional[int] = None  # None: generate.max_new_tokens
    keep_best: bool = True  # report the best checkpoint by held-out accuracy
    early_stop: bool = True  # stop the rounds when held-out accuracy falls below the best so far
    tolerance: float = 0.0  # a drop larger than this counts as falling


@dataclass
class TrackingConfig:
    report_to: list[str] = field(default_factory=lambda: ["console"])  # any of console, wandb
    project: str = "mathse-rl"  # wandb project
    run_name: Optional[str] = None  # wandb run name (default: the output directory's name)
    table_rows: int = 16  # examples per round in the wandb table
    progress: bool = True  # tqdm bars on generation, judging and reflection


@dataclass
class EvolveConfig:
    model: str = ""  # base model path or hub id (the policy)
    output_dir: str = "mathse_runs/evolve"  # run directory: pool, stage records, checkpoints, images
    rounds: int = 2  # self-evolving rounds K (the paper's data sizes imply two)
    judge: str = "verifier"  # reward name that accepts paths: verifier | orm | composites like verifier+format
    judge_threshold: float = 0.5  # only for a custom judge reward with no verdict of its own: accept at score >= this
    judge_options: dict[str, Any] = field(default_factory=dict)  # reward options (orm*: judge config; empty = critic's)
    critic: dict[str, Any] = field(default_factory=lambda: {"backend": "verifier"})  # orm.load_judge config for critiques
    undecidable_as_wrong: bool = False  # undecidable paths (no gold, timeout, judge failure) count as wrong
    require_final_answer: bool = True  # the verifier accepts only a stated final answer (strict extraction)
    distill_train: bool = True  # fine-tune on the seed (distilled) pool before round 1 (M0)
    seed: int = 0  # global seed
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    reflect: ReflectConfig = field(default_factory=ReflectConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


REFLECT_WHEN = ("after", "every_round", "never")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), *,
                defaults: Mapping[str, Any] | None = None, **fields: Any) -> EvolveConfig:
    """Merge, in this order: the schema defaults, a caller's ``defaults`` mapping, a YAML recipe,
    ``key=value`` overrides and keyword fields (nested mappings merge key by key).

    Unknown keys fail here, before any work starts. The result is a typed
    ``EvolveConfig`` object (attribute access, validated types).
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(EvolveConfig)
    if defaults:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(defaults)))
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"evolve config not found: {path}")
        cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    if fields:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(fields))
    obj = OmegaConf.to_object(cfg)
    validate(obj)
    return obj


def validate(cfg: EvolveConfig) -> None:
    """Fail loudly on settings that cannot work."""
    if cfg.rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {cfg.rounds}")
    if cfg.generate.n < 1:
        raise ValueError(f"generate.n must be >= 1, got {cfg.generate.n}")
    if cfg.reflect.n < 1:
        raise ValueError(f"reflect.n must be >= 1, got {cfg.reflect.n}")
    if cfg.reflect.attempts < 1:
        raise ValueError(f"reflect.attempts must be >= 1, got {cfg.reflect.attempts}")
    if cfg.reflect.when not in REFLECT_WHEN:
        raise ValueError(f"reflect.when must be one of {REFLECT_WHEN}, got {cfg.reflect.when!r}")
    if cfg.pool.max_per_question is not None and cfg.pool.max_per_question < 1:
        raise ValueError("pool.max_per_question must be >= 1 or null")
    if not 0.0 <= cfg.data.eval_fraction < 1.0:
        raise ValueError("data.eval_fraction must be in [0, 1)")


def to_yaml(cfg: EvolveConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def judge_options(cfg: EvolveConfig) -> dict[str, Any]:
    """Options for the judge reward: given ones, else (for an ORM judge) the critic's ORM config.

    The paper's ORM both judges and critiques, so ``judge=orm`` with ``critic.backend=local
    critic.model=...`` judges with that same model unless ``judge_options`` says otherwise.
    """
    from mathse_rl.step import uses_orm

    if cfg.judge_options:
        return dict(cfg.judge_options)
    return dict(cfg.critic) if uses_orm(cfg.judge) else {}


def step_config(cfg: EvolveConfig, **overrides: Any) -> "StepConfig":
    """The MathSE step's config (:class:`mathse_rl.step.StepConfig`) of this run: the same names.

        >>> step_config(load_config(overrides=["reflect.attempts=2"])).reflect.attempts
        2
    """
    from mathse_rl.step import step_config as make

    r = cfg.reflect
    values = {"judge": cfg.judge, "judge_options": dict(cfg.judge_options), "critic": dict(cfg.critic),
              "threshold": cfg.judge_threshold, "undecidable_as_wrong": cfg.undecidable_as_wrong,
              "require_final_answer": cfg.require_final_answer,
              "reflect": {"enabled": r.enabled, "template": r.template, "attempts": r.attempts,
                          "temperature": r.temperature, "max_tokens": r.max_tokens}}
    return make({**values, **overrides})  # an override replaces a field whole (judge_options={} empties it)


def coerce(config: EvolveConfig | dict[str, Any] | str | Path | None) -> EvolveConfig:
    """Accept a config object, a dict of fields, or a YAML path."""
    if isinstance(config, EvolveConfig):
        validate(config)
        return config
    if config is None:
        return load_config()
    if isinstance(config, (str, Path)):
        return load_config(config)
    from omegaconf import OmegaConf

    return load_config(None, (), **OmegaConf.to_container(OmegaConf.create(dict(config))))
