"""Drive verl's own v1 trainer, stock and ``mathse``, through one training step on a scripted batch.

What is real (verl 0.9.1's code, unchanged): the trainer classes (``PPOTrainerSync`` and our
``MathSETrainer``) and their ``fit`` loop (sampling, balancing, padding, old log-probs, advantages,
rollout correction, the actor update, checkpoints, metrics and verl's file logger), its
``ReplayBuffer`` (DAPO eviction and refill), the TransferQueue, the dataloader over a parquet file,
and two data-parallel ``ActorRolloutRefWorker`` Ray actors training a tiny Qwen2 with FSDP2 on
gloo (our CPU platform). How outputs enter the TransferQueue is verl's own
``AgentLoopWorkerTQ._agent_loop_postprocess``.

What stands in, keeping the contract, for what needs a GPU engine:

- the rollout (:class:`ScriptedRollout`): answers are token ids fixed by (prompt, session), written
  in order (deterministic), with the extra fields verl's ``single_turn_agent`` or our
  ``mathse_reflect`` loop writes, and the score a reward manager would put on them;
- the rollout replicas' sleep / weight sync (no replicas: :class:`NoReplicas`);
- a worker built for each configuration: one worker group serves every run; each run restores
  its initial checkpoint (weights, optimizer, scheduler, RNG), sets the loss of the run's actor
  config (verl's ``set_loss_fn``) and hands the engine the run's micro-batching switches
  (``use_dynamic_bsz``, micro-batch sizes, token budgets) as the non-tensor fields verl's
  workers read before their own defaults (:class:`Workers`).

Run as a script, it runs every run of :data:`RUNS` and saves one ``<run>.pt`` per run (logged
metrics, the actor's weights after the run, per-row advantages / old log-probs, the real rows of
each optimizer step, the rows each log-prob pass got). ``test_conformance.py`` runs it once and
compares.

    python tests/integrations/verl/conformance.py --out /tmp/conf [--only grpo_plain ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# What the harness process runs with (set in main(): importing this module for its constants changes nothing).
ENV = {"VERL_PLATFORM": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "WANDB_MODE": "offline", "RAY_DEDUP_LOGS": "0"}
PROMPTS = 24  # dataset size: enough for DAPO's refills
BATCH, GROUP, MINI = 4, 4, 2  # prompts per step, samples per prompt, prompts per mini-batch: 2 optimizer steps
DP = 2  # data-parallel ranks
MICRO = 2  # fixed micro-batch size per rank (update and log-prob passes)
MAX_TOKENS = 128  # token budget per rank with dynamic batch sizes (verl pads with rows of 128 tokens)
RESPONSE_LENGTH, PROMPT_LENGTH = 16, 48
REFINE_SFT_COEF = 0.5
# Group shapes (scores of the 4 sessions) by prompt index: uniform groups exist for DAPO.
SCORES = {0: [1, 1, 1, 1], 1: [0, 0, 0, 0], 2: [1, 0, 0, 1], 3: [0, 1, 0, 0]}
# Failures that get a verified refinement in the refine scenarios: (prompt index % 4, session).
REFINED = {(1, 0), (1, 2), (2, 1), (3, 0), (3, 3)}
POLICY_LOG_PROB, REFLECT_LOG_PROB = -0.7, -3.0  # scripted rollout log-probs (policy's, under the reflection prompt)


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Run:
    trainer: str  # "stock" (verl's PPOTrainerSync + single_turn_agent) or "mathse"
    scenario: str  # "plain" (no MathSE), "off" (reflection off), "zero" (reflection on, none verified),
    #                "refine" (verified refinements added), "rft" (mathse_rft, refinements)
    overrides: tuple[str, ...] = ()
    steps: int = 1
    resume_from: str | None = None  # a run whose checkpoint at step 1 this run resumes from


# The matrix: each configuration covers a level of every feature (pairwise).
CONFIGS: dict[str, tuple[str, ...]] = {
    "grpo": ("algorithm.adv_estimator=grpo",),
    "grpo_shuffle_dyn_bypass": ("algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.shuffle=True",
                                "+dyn=1", "+bypass=1", "trainer.balance_batch=False"),
    "rloo_shuffle_bypass": ("algorithm.adv_estimator=rloo", "actor_rollout_ref.actor.shuffle=True", "+bypass=1"),
    "rloo_dyn": ("algorithm.adv_estimator=rloo", "+dyn=1", "trainer.balance_batch=False"),
    "rpp_baseline_dyn_bypass": ("algorithm.adv_estimator=reinforce_plus_plus_baseline", "+dyn=1", "+bypass=1"),
    "rpp_shuffle_epochs": ("algorithm.adv_estimator=reinforce_plus_plus", "actor_rollout_ref.actor.shuffle=True",
                           "actor_rollout_ref.actor.ppo_epochs=2"),
    "dapo": ("algorithm.adv_estimator=grpo", "+dapo=1"),
    "dapo_shuffle_dyn_bypass": ("algorithm.adv_estimator=grpo", "+dapo=1", "actor_rollout_ref.actor.shuffle=True",
                                "+dyn=1", "+bypass=1"),
}
REFINE_CONFIGS = ("grpo", "grpo_shuffle_dyn_bypass", "rloo_shuffle_bypass", "rpp_baseline_dyn_bypass", "rpp_shuffle_epochs",
                  "dapo")
RUNS: dict[str, Run] = {}
for _name, _ov in CONFIGS.items():
    RUNS[f"{_name}/stock"] = Run("stock", "plain", _ov)
    RUNS[f"{_name}/off"] = Run("mathse", "off", _ov)
    if _name in REFINE_CONFIGS:
        RUNS[f"{_name}/refine"] = Run("mathse", "refine", _ov)
RUNS["grpo/zero"] = Run("mathse", "zero", CONFIGS["grpo"])
RUNS["grpo_decoupled_is/refine"] = Run("mathse", "refine", ("algorithm.adv_estimator=grpo", "+decoupled_is=1"))
RUNS["rft/rft"] = Run("mathse", "rft", ("+rft=1",))
RUNS["rft_dyn/rft"] = Run("mathse", "rft", ("+rft=1", "+dyn=1", "actor_rollout_ref.actor.shuffle=True"))
RUNS["validate/stock"] = Run("stock", "plain", ("algorithm.adv_estimator=grpo", "+validate=1"))
RUNS["validate/refine"] = Run("mathse", "refine", ("algorithm.adv_estimator=grpo", "+validate=1"))
RUNS["resume/straight"] = Run("mathse", "refine", CONFIGS["grpo"], steps=2)
RUNS["resume/resumed"] = Run("mathse", "refine", CONFIGS["grpo"], steps=2, resume_from="resume/straight")


def verl_overrides(run: Run, model: str, data: str, out: Path) -> list[str]:
    """The run's Hydra overrides on verl's ``ppo_trainer`` config (the ``+flag=1`` shorthands expanded)."""
    from mathse_rl.integrations.verl.cpu import cpu_overrides

    flags = {o.split("=")[0][1:] for o in run.overrides if o.startswith("+")}
    plain = [o for o in run.overrides if not o.startswith("+")]
    rft = "rft" in flags
    ours = run.trainer == "mathse"
    dyn = "dyn" in flags
    out_ = [
        *cpu_overrides(DP), f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}", f"data.val_files={data}", f"data.train_batch_size={BATCH}",
        f"data.max_prompt_length={PROMPT_LENGTH}", f"data.max_response_length={RESPONSE_LENGTH}",
        "data.filter_overlong_prompts=False", "data.dataloader_num_workers=0", "data.shuffle=False",
        f"actor_rollout_ref.rollout.response_length={RESPONSE_LENGTH}",
        f"actor_rollout_ref.rollout.prompt_length={PROMPT_LENGTH}", f"actor_rollout_ref.rollout.n={GROUP}",
        "actor_rollout_ref.actor.optim.lr=1e-2", f"actor_rollout_ref.actor.ppo_mini_batch_size={MINI}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={MICRO}",
        f"actor_rollout_ref.actor.use_dynamic_bsz={dyn}", f"actor_rollout_ref.rollout.log_prob_use_dynamic_bsz={dyn}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={MAX_TOKENS}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={MAX_TOKENS}",
        "actor_rollout_ref.actor.use_kl_loss=False", "actor_rollout_ref.actor.entropy_coeff=0",
        # rollout correction off: no rollout log-probs (the recipes' setting); on with +bypass / +decoupled_is
        f"actor_rollout_ref.rollout.calculate_log_probs={bool(flags & {'bypass', 'decoupled_is'})}",
        "algorithm.use_kl_in_reward=False",
        "trainer.logger=[file]", "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=1",
        f"trainer.total_training_steps={run.steps}", "trainer.total_epochs=100",
        "trainer.project_name=conformance", "trainer.experiment_name=run", f"trainer.default_local_dir={out}/ckpt",
        "transfer_queue.enable=True",
        "actor_rollout_ref.rollout.agent.default_agent_loop=" + ("mathse_reflect" if ours else "single_turn_agent"),
    ]
    if ours:
        out_ += ["trainer.v1.trainer_mode=mathse", "+mathse.judge=verifier",
                 f"+mathse.reflect.enabled={run.scenario != 'off'}", f"+mathse.refine_sft_coef={REFINE_SFT_COEF}"]
    if rft:
        out_ += ["algorithm.adv_estimator=mathse_rft", "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft"]
    if "bypass" in flags:
        out_ += ["algorithm.rollout_correction.bypass_mode=True"]
    if "decoupled_is" in flags:
        out_ += ["algorithm.rollout_correction.rollout_is=token"]
    if "validate" in flags:
        out_ += ["trainer.val_before_train=True"]
    if "dapo" in flags:
        out_ += ["algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc"]
    return out_ + plain


def compose(overrides: list[str]):
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


# ------------------------------------------------------------------------------------------ data
def write_data(path: Path, tokenizer: Any) -> str:
    import pandas as pd

    rows = []
    for i in range(PROMPTS):
        words = " ".join(["and then"] * (i % 5))
        rows.append({"data_source": "conformance", "prompt": [{"role": "user", "content": f"What is {i} plus {i}? {words}"}],
                     "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                     "extra_info": {"index": i, "question": f"What is {i} plus {i}?"}})
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def response_ids(index: int, session: int, vocab: int, eos: int, refinement: bool = False) -> list[int]:
    """A scripted answer: its length and tokens fixed by (prompt, session)."""
    salt = 11 if refinement else 0
    length = 3 + (7 * index + 3 * session + salt) % 10
    return [5 + (17 * index + 5 * session + 3 * t + salt) % (vocab - 10) for t in range(length)] + [eos]


def score_of(index: int, session: int) -> float:
    return float(SCORES[index % 4][session])


# ------------------------------------------------------------------------------------------ stand-ins
class NoReplicas:
    """The rollout replicas' side of verl's checkpoint manager: nothing to sleep or sync."""

    def sleep_replicas(self):
        return None

    def update_weights(self, global_steps=None):
        return None


class ScriptedRollout:
    """verl's ``AgentLoopManagerTQ`` for a scripted rollout: every session's outputs go into the
    TransferQueue through verl's own ``AgentLoopWorkerTQ._agent_loop_postprocess``, in order."""

    def __init__(self, config: Any, tokenizer: Any, scenario: str):
        from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

        cls = AgentLoopWorkerTQ.__ray_metadata__.modified_class
        self.worker = object.__new__(cls)
        self.worker.config, self.worker.tokenizer, self.worker.processor = config, tokenizer, None
        self.worker.reward_loop_worker_handles, self.worker.distillation_enabled = None, False
        self.worker.mm_processor_kwargs = {}
        self.config, self.tokenizer, self.scenario = config, tokenizer, scenario
        self.loop = asyncio.new_event_loop()
        self.uid_index: dict[str, int] = {}

    def generate_sequences(self, batch) -> None:
        import transfer_queue as tq
        from tensordict import NonTensorData, NonTensorStack

        validate = bool(batch["validate"]) if "validate" in batch.keys() else False
        partition = "val" if validate else "train"
        rollout = self.config.actor_rollout_ref.rollout
        n = rollout.val_kwargs.n if validate else rollout.n
        for i in range(len(batch)):
            prompt = {}
            for k, v in batch.items():
                if k == "validate":
                    continue
                prompt[k] = v[i] if not isinstance(v, (NonTensorStack, NonTensorData)) else (
                    v[i].data if isinstance(v, NonTensorStack) else v.data)
            index = int(prompt["extra_info"]["index"])
            uid = prompt["uid"]
            self.uid_index[uid] = index
            tq.kv_put(key=uid, partition_id=partition, tag={"status": "running"})
            kwargs = {k: v for k, v in prompt.items() if k not in ("agent_name", "__rollout_n__", "__do_sample__")}
            for session in range(n):
                outputs = self.outputs(prompt, index, session)
                self.loop.run_until_complete(self.worker._agent_loop_postprocess(
                    outputs if len(outputs) > 1 else outputs[0], validate, session_id=session, **kwargs))
            tq.kv_put(key=uid, partition_id=partition, tag={"status": "finished"})

    def outputs(self, prompt: dict, index: int, session: int) -> list:
        from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

        tok = self.tokenizer
        prompt_ids = tok.apply_chat_template(list(prompt["raw_prompt"]), add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        score = score_of(index, session)
        version = int(prompt["global_steps"]) - 1  # sync: the rollout holds the previous step's weights
        refined = self.scenario in ("refine", "rft") and (index % 4, session) in REFINED and score == 0.0
        reflected = self.scenario in ("zero", "refine", "rft") and score == 0.0
        log_probs = self.config.actor_rollout_ref.rollout.calculate_log_probs

        def output(ids: list[int], extra: dict, logp: float, reward: float | None) -> AgentLoopOutput:
            fields = {"global_steps": version, "min_global_steps": version, "max_global_steps": version,
                      "turn_scores": [], "tool_rewards": [], **extra}
            out = AgentLoopOutput(prompt_ids=prompt_ids, response_ids=ids, response_mask=[1] * len(ids),
                                  response_logprobs=[logp - 0.01 * t for t in range(len(ids))] if log_probs else None,
                                  num_turns=2, metrics={}, extra_fields=fields)
            if reward is not None:  # what the reward loop puts on a session's last output
                out.reward_score = reward
                out.extra_fields["reward_extra_info"] = {"score": reward, "acc": reward}
            return out

        vocab, eos = len(tok), tok.eos_token_id
        policy_ids = response_ids(index, session, vocab, eos)
        if self.config.actor_rollout_ref.rollout.agent.default_agent_loop != "mathse_reflect":
            return [output(policy_ids, {}, POLICY_LOG_PROB, score)]
        extra = mathse_fields(score, reflected, refined)
        policy = output(policy_ids, extra, POLICY_LOG_PROB, score)
        if not refined or prompt.get(VALIDATE_FIELD):  # validation: the policy's answer (agent_loop.run)
            return [policy]
        refinement = output(response_ids(index, session, vocab, eos, refinement=True),
                            dict(extra, accepted=1.0, mathse_role="refinement", mathse_counts={}),
                            REFLECT_LOG_PROB, None)
        return [refinement, policy]


VALIDATE_FIELD = "mathse_validate"  # fields.VALIDATE_FIELD, which the mathse trainer puts on validation batches


def mathse_fields(score: float, reflected: bool, verified: bool) -> dict:
    """The extra fields ``mathse_reflect`` writes on the policy's output (agent_loop._extra_fields)."""
    from mathse_rl.integrations.verl.agent_loop import _extra_fields
    from mathse_rl.step import PathVerdict, ReflectItem, ReflectOutcome, StepCounters
    from mathse_rl.types import Problem

    counters = StepCounters()
    source = "conformance"
    counters.add("paths", source=source)
    counters.add("correct" if score else "wrong", source=source)
    if score:
        counters.add("accepted", source=source)
    outcome = None
    if reflected:
        counters.add("reflected", source=source)
        counters.add("refine_verified" if verified else "refine_rejected", source=source)
        if verified:
            counters.add("accepted", source=source)
        outcome = ReflectOutcome(ReflectItem(Problem(id="p", question="q", gold="0"), "wrong"),
                                 "verified" if verified else "rejected", attempts=1)
    fields = _extra_fields(PathVerdict(bool(score), "correct" if score else "wrong"), outcome, counters)
    fields["is_refined"] = verified
    return fields


class Workers:
    """Two FSDP2 actor ranks on CPU, shared by every run (see the module docstring)."""

    def __init__(self, config: Any, root: Path):
        import ray
        from verl.single_controller.ray import RayClassWithInitArgs, RayWorkerGroup, ResourcePoolManager
        from verl.single_controller.ray import create_colocated_worker_cls
        from verl.trainer.ppo.utils import Role
        from verl.workers.engine_workers import ActorRolloutRefWorker

        self.pool = ResourcePoolManager(resource_pool_spec={"global_pool": [DP]}, mapping={Role.Actor: "global_pool"})
        self.pool.create_resource_pool()
        cls = RayClassWithInitArgs(cls=ray.remote(ActorRolloutRefWorker), config=config.actor_rollout_ref,
                                   role="actor")
        group = RayWorkerGroup(resource_pool=self.pool.get_resource_pool(Role.Actor),
                               ray_cls_with_init=create_colocated_worker_cls(class_dict={"actor": cls}),
                               device_name="cpu")
        self.group = group.spawn(prefix_set=["actor"])["actor"]
        self.group.init_model()
        self.initial = str(root / "initial")
        self.group.save_checkpoint(self.initial, None, 0)

    def for_run(self, config: Any, record: dict) -> "RunGroup":
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.utils.losses import ppo_loss

        self.group.load_checkpoint(self.initial)
        actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
        self.group.set_loss_fn(partial(ppo_loss, config=actor))
        return RunGroup(self.group, config, record)


class RunGroup:
    """The worker group as one run's trainer sees it: the run's micro-batching switches (what the
    engine would have been built with), and a record of what each pass was sent."""

    def __init__(self, group: Any, config: Any, record: dict):
        self._group, self._record = group, record
        ref = config.actor_rollout_ref
        dyn = bool(ref.actor.use_dynamic_bsz)
        self._train = {"use_dynamic_bsz": dyn, "micro_batch_size_per_gpu": ref.actor.ppo_micro_batch_size_per_gpu,
                       "max_token_len_per_gpu": ref.actor.ppo_max_token_len_per_gpu}
        self._infer = {"use_dynamic_bsz": dyn, "micro_batch_size_per_gpu": ref.rollout.log_prob_micro_batch_size_per_gpu,
                       "max_token_len_per_gpu": ref.rollout.log_prob_max_token_len_per_gpu}

    def compute_log_prob(self, batch):
        self._record.setdefault("log_prob_passes", []).append(list(batch.keys))
        batch.extra_info.update(self._infer)
        return self._group.compute_log_prob(batch)

    def update_actor(self, batch):
        self._record.setdefault("updates", []).append({
            "keys": list(batch.keys), "padding": [bool(t.get("is_padding", False)) for t in batch.tags],
            **{k: batch.extra_info.get(k) for k in ("mini_batch_size", "global_batch_size", "epochs", "seed",
                                                  "dataloader_kwargs")}})
        batch.extra_info.update(self._train)
        return self._group.update_actor(batch)

    def __getattr__(self, name):
        return getattr(self._group, name)


def steps_of(update: dict) -> list[list[int]]:
    """The rows (batch positions) of each optimizer step of an ``update_actor`` call, as verl's
    dispatch (contiguous share per rank) and ``make_iterator`` (per-rank seeded order) deal them."""
    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    n = len(update["keys"])
    share, per_rank = n // DP, update["mini_batch_size"] // DP
    ranks = []
    for rank in range(DP):
        idx = TensorDict({"i": torch.arange(rank * share, (rank + 1) * share)}, batch_size=[share])
        it = tu.make_iterator(idx, mini_batch_size=per_rank, epochs=update["epochs"], seed=update["seed"] + rank,
                              dataloader_kwargs=dict(update["dataloader_kwargs"] or {}))
        ranks.append([b["i"].tolist() for b in it])
    return [sum((r[j] for r in ranks), []) for j in range(len(ranks[0]))]


# ------------------------------------------------------------------------------------------ one run
def row_id(key: str, uid_index: dict[str, int]) -> str:
    uid, session, index = key.rsplit("_", 2)
    return f"{uid_index[uid]}_{session}_{index}" if uid in uid_index else key


def run_one(name: str, run: Run, model: str, data: str, tokenizer: Any, workers: Workers, out: Path) -> dict:
    import torch
    import transfer_queue as tq
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from mathse_rl.integrations.verl.trainer import MathSETrainer

    run_dir = out / name.replace("/", "__")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if run.resume_from is not None:  # the other run's checkpoint at step 1, as a resumed run finds it
        src = out / run.resume_from.replace("/", "__") / "ckpt"
        shutil.copytree(src / "global_step_1", run_dir / "ckpt" / "global_step_1")
        (run_dir / "ckpt" / "latest_checkpointed_iteration.txt").write_text("1")
    config = compose(verl_overrides(run, model, data, run_dir))
    record: dict = {}
    trainer = (MathSETrainer if run.trainer == "mathse" else PPOTrainerSync)(config)
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer._init_dump_executor()
    trainer.resource_pool_manager, trainer.ref_in_actor = workers.pool, False
    trainer.actor_rollout_wg = workers.for_run(config, record)
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=["scripted"])
    trainer.checkpoint_manager = NoReplicas()
    trainer.teacher_model_manager = trainer.distillation_config = None
    trainer._load_checkpoint()
    trainer.on_init_end()
    rollout = ScriptedRollout(config, tokenizer, run.scenario)

    update = trainer._update_actor
    rows: dict[str, dict] = {}

    def snapshot(batch, metrics):
        fields = ["advantages", "old_log_probs", "response_mask"] + (
            ["rollout_is_weights"] if config.algorithm.rollout_correction.rollout_is else [])
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        for i, key in enumerate(batch.keys):
            if not batch.tags[i].get("is_padding", False):
                rows[row_id(key, rollout.uid_index)] = {f: data[f][i].clone() for f in fields}
        return update(batch, metrics)

    trainer._update_actor = snapshot
    metrics_path = run_dir / "metrics.jsonl"
    os.environ["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    t0 = time.perf_counter()
    trainer.fit(rollout)
    seconds = time.perf_counter() - t0
    logged = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    step_dir = run_dir / "ckpt" / f"global_step_{run.steps}"
    weights = {}
    for rank in range(DP):
        shard = torch.load(step_dir / "actor" / f"model_world_size_{DP}_rank_{rank}.pt", weights_only=False,
                           map_location="cpu")
        for k, v in shard.items():
            weights.setdefault(k, []).append(getattr(v, "_local_tensor", v).clone())
    result = {
        "metrics": {row["step"]: row["data"] for row in logged},
        "weights": {k: torch.cat(v) for k, v in weights.items()},
        "rows": rows,
        "updates": [dict(u, keys=[row_id(k, rollout.uid_index) for k in u["keys"]], steps=steps_of(u))
                    for u in record.get("updates", [])],
        "log_prob_passes": [[row_id(k, rollout.uid_index) for k in p] for p in record.get("log_prob_passes", [])],
        "checkpoint_files": sorted(p.name for p in step_dir.iterdir()),
        "seconds": seconds,
    }
    torch.save(result, out / f"{name.replace('/', '__')}.pt")
    shutil.rmtree(run_dir / "ckpt" / "global_step_1" / "actor" / "huggingface", ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    args = parser.parse_args(argv)
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    import ray
    import transfer_queue as tq

    from mathse_rl.models.tiny import build_tiny, load_processor, tokenizer_of

    model = build_tiny(out / "lm-xs", kind="lm", size="XS")
    tokenizer = tokenizer_of(load_processor(model))
    data = write_data(out / "train.parquet", tokenizer)
    base = compose(verl_overrides(Run("stock", "plain"), model, data, out / "base"))
    ray.init(num_cpus=4 * DP + 4, num_gpus=DP, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**{k: os.environ[k] for k in ("VERL_PLATFORM", "HF_HUB_OFFLINE",
                                                                     "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS")},
                                       "TRANSFER_QUEUE_ENABLE": "1"}})
    try:
        tq.init(base.transfer_queue)
        t0 = time.perf_counter()
        workers = Workers(base, out)
        print(f"[conformance] workers: {time.perf_counter() - t0:.1f}s", flush=True)
        names = args.only or list(RUNS)
        for name in names:
            if RUNS[name].resume_from is not None and RUNS[name].resume_from not in names:
                names.insert(names.index(name), RUNS[name].resume_from)
        done = []
        for name in dict.fromkeys(names):
            result = run_one(name, RUNS[name], model, data, tokenizer, workers, out)
            done.append(name)
            print(f"[conformance] {name}: {result['seconds']:.1f}s", flush=True)
        (out / "done.json").write_text(json.dumps(done))
    finally:
        tq.close()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
