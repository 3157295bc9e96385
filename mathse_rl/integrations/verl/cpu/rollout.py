"""A CPU rollout for verl: transformers ``generate`` behind verl's rollout-server interface.

verl's agent loops talk to a rollout server through one Ray actor method,
``generate(request_id, prompt_ids, sampling_params, image_data, ...) -> TokenOutput``,
and its trainer workers push new weights through a rollout adapter's ``update_weights``.
Three small pieces give verl exactly that on CPU, under the rollout name ``hf_cpu``:

- :class:`HFRolloutServer` (Ray actor): holds a transformers model; requests that arrive
  together are collected for a short window and generated as one left-padded batch
  (images included: Qwen2.5-VL ``pixel_values``/``image_grid_thw`` are computed from
  ``image_data``); returns sampled tokens and their log-probabilities.
- :class:`HFRolloutReplica`: starts one server per replica (verl's ``RolloutReplicaRegistry``).
- :class:`HFServerAdapter`: lives in the trainer worker; ``update_weights`` gathers the
  actor's full tensors and loads them into the server (``load_state_dict``), so every step
  samples from the weights being trained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from mathse_rl.integrations.verl.budget import RULES, granted_tokens, rule_for
from mathse_rl.integrations.verl.cpu.rollout_registry import ROLLOUT_NAME  # noqa: F401  (re-export)

logger = logging.getLogger(__name__)

# How long the server waits for more concurrent requests before generating a batch.
BATCH_WINDOW_S = 0.05
# Largest number of requests generated together.
MAX_BATCH = 64
# What a server prints after each weight sync; tests and users grep for it.
SYNC_LOG_PREFIX = "mathse-cpu-rollout: weights synced"


_VISION_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def server_actor_name(replica_rank: int, node_rank: int = 0) -> str:
    return f"mathse_hf_cpu_server_{replica_rank}_{node_rank}"


@dataclass
class _Request:
    prompt_ids: list[int]
    images: list[Any]
    params: dict[str, Any]
    future: asyncio.Future = field(repr=False)


def _sampling_key(params: dict[str, Any]) -> tuple:
    """Requests with equal keys can share one ``generate`` call."""
    return (float(params.get("temperature", 1.0)), float(params.get("top_p", 1.0)),
            int(params.get("top_k", -1) or -1), float(params.get("repetition_penalty", 1.0) or 1.0),
            int(params["max_tokens"]), bool(params.get("logprobs")))


class HFRolloutServer:
    """A transformers model answering verl's token-in/token-out ``generate`` calls."""

    def __init__(self, model_path: str, response_length: int, max_model_len: Optional[int] = None,
                 trust_remote_code: bool = False, replica_rank: int = 0, threads: int = 0,
                 prompt_length: Optional[int] = None, budget_rule: str = "vllm",
                 stats_path: Optional[str] = None) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

        from mathse_rl.integrations.verl.cpu.processor import load_images_only_processor

        if threads > 0:
            torch.set_num_threads(threads)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.is_vlm = getattr(config, "vision_config", None) is not None
        auto = AutoModelForImageTextToText if self.is_vlm else AutoModelForCausalLM
        self.model = auto.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa",
                                          trust_remote_code=trust_remote_code).eval()
        self.processor = load_images_only_processor(model_path) if self.is_vlm else None
        # Vision markers belong to prompts only. A random tiny model would otherwise emit them and
        # verl's M-RoPE position ids (which count image markers in prompt + response) would break.
        self.suppress_ids = sorted({i for i in (getattr(config, name, None) for name in _VISION_TOKEN_FIELDS)
                                    if isinstance(i, int)})
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else min(self.eos_ids, default=0)
        self.response_length = response_length
        # The real servers' budget rule (see integrations/verl/budget.py); like them, an unset
        # max_model_len means the model's max_position_embeddings.
        self.max_model_len = max_model_len or int(config.get_text_config().max_position_embeddings)
        # rollout.prompt_length (None: whatever the context leaves beside a full response)
        self.prompt_length = prompt_length if prompt_length is not None else self.max_model_len - response_length
        if budget_rule not in RULES:
            raise ValueError(f"hf_cpu budget_rule must be one of {list(RULES)}, got {budget_rule!r}")
        self.budget_rule = budget_rule
        self.replica_rank = replica_rank
        self.global_steps: Optional[int] = None
        self._pending: list[_Request] = []
        self._batcher: Optional[asyncio.Task] = None
        self._lock = asyncio.Lock()
        # long_*: requests whose prompt exceeds rollout.prompt_length, and the fewest new tokens one was granted
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0, "weight_syncs": 0, "long_prompts": 0,
                      "long_granted_min": -1}
        # engine_kwargs.hf_cpu.stats_path: each weight sync's report also appended there as a JSON line
        # (written before the sync returns, unlike printed lines Ray forwards to the driver later)
        self.stats_path = stats_path

    # -- verl's server interface -------------------------------------------------------
    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data: Optional[list[Any]] = None, video_data: Optional[list[Any]] = None,
                       **_kwargs: Any) -> TokenOutput:
        if video_data:
            raise NotImplementedError("the hf_cpu rollout supports images, not videos")
        if image_data and not self.is_vlm:
            raise ValueError("image_data given to a text-only model")
        params = dict(sampling_params)
        requested = params.pop("max_tokens", params.pop("max_new_tokens", None))
        params["max_tokens"] = granted_tokens(self.budget_rule, len(prompt_ids), requested,
                                              prompt_length=self.prompt_length,
                                              response_length=self.response_length,
                                              max_model_len=self.max_model_len)
        if len(prompt_ids) > self.prompt_length:  # longer than a dataset prompt: a reflection
            self.stats["long_prompts"] += 1
            low = self.stats["long_granted_min"]
            self.stats["long_granted_min"] = params["max_tokens"] if low < 0 else min(low, params["max_tokens"])
        if params["max_tokens"] == 0:  # SGLang's rule allows an empty budget: nothing is generated
            self.stats["requests"] += 1
            return TokenOutput(token_ids=[], log_probs=[] if params.get("logprobs") else None,
                               stop_reason="length", extra_fields={"global_steps": self.global_steps})
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(prompt_ids), list(image_data or []), params, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        token_ids, log_probs = await future
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason="completed",
                           extra_fields={"global_steps": self.global_steps})

    async def load_weights(self, weights: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> dict:
        """Load the actor's weights (full tensors by parameter name) into the served model."""
        async with self._lock:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or {})
        missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
        self.global_steps = global_steps
        self.stats["weight_syncs"] += 1
        report = {"tensors": len(weights), "missing": len(missing), "unexpected": len(unexpected),
                  "global_steps": global_steps}
        # Request counts so far say what the agent loops asked for (e.g. reflections) and how
        # well concurrent requests were batched.
        print(f"{SYNC_LOG_PREFIX} replica={self.replica_rank} step={global_steps} tensors={len(weights)} "
              f"missing={len(missing)} unexpected={len(unexpected)} requests={self.stats['requests']} "
              f"batches={self.stats['batches']} max_batch={self.stats['max_batch']} "
              f"long_prompts={self.stats['long_prompts']} long_granted_min={self.stats['long_granted_min']}",
              flush=True)
        if self.stats_path:
            import json

            with open(self.stats_path, "a") as f:
                f.write(json.dumps({"replica": self.replica_rank, "step": global_steps, "tensors": len(weights),
                                    "missing": len(missing), "unexpected": len(unexpected),
                                    **{k: v for k, v in self.stats.items() if k != "weight_syncs"}}) + "\n")
        if missing or unexpected:
            logger.warning("weight sync mismatch: missing %s unexpected %s", missing[:5], list(unexpected)[:5])
        return report

    def get_stats(self) -> dict:
        return dict(self.stats)

    # Lifecycle calls verl makes on every rollout server; weights stay resident on CPU.
    async def wake_up(self): return None
    async def sleep(self): return None
    async def abort_all_requests(self, reject_request: bool = False): return None
    async def resume_generation(self): return None
    async def clear_kv_cache(self): return None
    async def release_kv_cache(self): return None
    async def resume_kv_cache(self): return None
    async def start_profile(self, **_kwargs): return None
    async def stop_profile(self): return None

    # -- batching ------------------------------------------------------------------------
    async def _run_batches(self) -> None:
        while self._pending:
            await asyncio.sleep(BATCH_WINDOW_S)  # let concurrent requests gather
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            groups: dict[tuple, list[_Request]] = {}
            for req in batch:
                groups.setdefault(_sampling_key(req.params), []).append(req)
            for key, reqs in groups.items():
                try:
                    async with self._lock:
                        results = await asyncio.to_thread(self._generate_batch, key, reqs)
                    for req, res in zip(reqs, results):
                        req.future.set_result(res)
                except Exception as exc:  # a failed batch fails its requests, not the server
                    logger.exception("hf_cpu generate failed for a batch of %d", len(reqs))
                    for req in reqs:
                        if not req.future.done():
                            req.future.set_exception(exc)

    @torch.no_grad()
    def _generate_batch(self, key: tuple, reqs: list[_Request]) -> list[tuple[list[int], Optional[list[float]]]]:
        temperature, top_p, top_k, repetition_penalty, max_tokens, want_logprobs = key
        width = max(len(r.prompt_ids) for r in reqs)
        input_ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding, as generation expects
            input_ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attention_mask[i, width - len(r.prompt_ids):] = 1
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        images = [img for r in reqs for img in r.images]
        if images:
            vision = self.processor.image_processor(images=images, return_tensors="pt")
            inputs["pixel_values"] = vision["pixel_values"]
            inputs["image_grid_thw"] = vision["image_grid_thw"]
        do_sample = temperature > 0
        sampling = dict(do_sample=do_sample)
        if do_sample:
            sampling.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else None)
        out = self.model.generate(**inputs, **sampling, max_new_tokens=max_tokens,
                                  repetition_penalty=repetition_penalty, eos_token_id=sorted(self.eos_ids),
                                  pad_token_id=self.pad_id, return_dict_in_generate=True,
                                  suppress_tokens=self.suppress_ids or None,
                                  output_logits=want_logprobs)
        new_tokens = out.sequences[:, width:]
        logprobs = None
        if want_logprobs:
            # Same quantity verl's actor computes: log-softmax of the logits at the sampling temperature.
            logits = torch.stack(out.logits, dim=1).float()
            if do_sample and temperature != 1.0:
                logits = logits / temperature
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        self.stats["requests"] += len(reqs)
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(reqs))
        results = []
        for i in range(len(reqs)):
            row = new_tokens[i].tolist()
            length = len(row)
            for j, tok in enumerate(row):
                if tok in self.eos_ids:
                    length = j + 1
                    break
            lp = logprobs[i, :length].tolist() if logprobs is not None else None
            results.append((row[:length], lp))
        return results


def _field(config: Any, key: str, default: Any = None) -> Any:
    """A key of a dataclass or DictConfig model config (verl passes either)."""
    if hasattr(config, "get"):
        return config.get(key, default)
    return getattr(config, key, default)


def _engine_kwargs(config: Any) -> dict:
    """``rollout.engine_kwargs`` as a plain dict (a dict in verl's dataclass, a DictConfig in Hydra's)."""
    value = _field(config, "engine_kwargs", None) or {}
    if hasattr(value, "_metadata"):
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True)
    return dict(value)


class HFRolloutReplica(RolloutReplica):
    """One ``hf_cpu`` rollout server per replica, started next to the trainer workers."""

    def get_ray_class_with_init_args(self):
        raise NotImplementedError("the hf_cpu rollout runs in hybrid mode only (actor_rollout_ref.hybrid_engine=True)")

    async def launch_servers(self) -> None:
        cfg = self.config
        name = server_actor_name(self.replica_rank)
        # num_cpus=0: the server shares the CPU slots of the trainer worker it stands next to.
        server = ray.remote(HFRolloutServer).options(
            name=name, num_cpus=0, max_concurrency=self.max_concurrency,
        ).remote(str(_field(self.model_config, "path")), int(cfg.response_length),
                 getattr(cfg, "max_model_len", None) or None,
                 bool(_field(self.model_config, "trust_remote_code", False)), self.replica_rank,
                 prompt_length=int(cfg.prompt_length),
                 budget_rule=rule_for(ROLLOUT_NAME, _engine_kwargs(cfg)),
                 stats_path=(_engine_kwargs(cfg).get(ROLLOUT_NAME) or {}).get("stats_path"))
        await server.get_stats.remote()  # surface start-up errors here, not at the first request
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-cpu://{name}"


class HFServerAdapter(BaseRollout):
    """Trainer-side end of the ``hf_cpu`` rollout: forwards weight updates to the server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, **_kwargs: Any) -> None:
        import os

        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                 * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_leader = rank % world == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs: Any):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf_cpu rollout takes full named tensors, not {wire_format!r}")
        started = time.perf_counter()
        # Every rank walks the generator (it may gather shards collectively); the leader sends.
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self.is_leader:
            await self._server_handle().load_weights.remote(state, kwargs.get("global_steps"))
        logger.info("hf_cpu weight sync: %d tensors in %.2fs", len(state), time.perf_counter() - started)
