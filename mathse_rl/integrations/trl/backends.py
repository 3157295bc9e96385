"""Generator and trainer backends of the evolve loop, on transformers and trl.

``HFGenerator`` (registry names ``hf`` / ``transformers``) batches chat prompts with their
images through ``model.generate``; ``VLLMGenerator`` (``vllm``) does the same with vLLM when it
is installed (GPU nodes); ``SFTBackend`` (``sft``) fine-tunes with trl's ``SFTTrainer`` on
conversational prompt/completion rows with images.

    >>> from mathse_rl.evolve import load_config
    >>> gen = HFGenerator(load_config(), "path/to/model")                             # doctest: +SKIP
    >>> gen.generate([[{"role": "user", "content": "2+3?"}]], [()], n=2, temperature=0.7,
    ...              max_new_tokens=32)                                                # doctest: +SKIP
    [['...', '...']]
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import weakref
from pathlib import Path
from typing import Any, Sequence

from mathse_rl.integrations.trl.policy import lora_config, policy_dtype, save_full_model, stage_reporting
from mathse_rl.models.tiny import encode_batch
from mathse_rl.pipes import requests

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- loading and saving
def _is_vlm(path: str) -> bool:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path), "vision_config", None) is not None


def load_policy(path: str, *, dtype: str = "float32", device: str | None = None):
    """The model and its processor (VLM) or tokenizer (LM), ready for generation or training."""
    return load_model(path, dtype=dtype, device=device), load_processing(path)


def load_model(path: str, *, dtype: str = "float32", device: str | None = None):
    """The model alone (a trainer checkpoint holds no processor)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if _is_vlm(path) else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    if device is not None:
        model.to(device)
    return model


def load_processing(path: str):
    """Processor (VLM) or tokenizer (LM) saved next to a model, with left padding for generation.

    Through ``AutoProcessor`` with the checkpoint's own chat template (images-only where the video processor
    would need torchvision; a checkpoint without a chat template is an error): see
    :func:`mathse_rl.models.tiny.load_processor`.
    """
    from mathse_rl.models.tiny import load_processor

    proc = load_processor(path)
    if getattr(proc, "tokenizer", None) is not None and getattr(proc, "video_processor", None) is None:
        # trainer.save_model and trl's checkpoints call processing_class.save_pretrained; without a video
        # processor, save the parts that load back (tokenizer with the chat template, image processor).
        proc.save_pretrained = lambda save_directory, **_: save_processing(proc, save_directory)
    tok = getattr(proc, "tokenizer", proc)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return proc


def save_policy(model: Any, processing: Any, path: str | Path) -> str:
    """Save a model and its processor parts atomically (write next to it, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_processing(processing, tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return str(path)


def save_processing(processing: Any, path: str | Path) -> None:
    """The tokenizer and image processor of ``processing``, which :func:`load_processing` reassembles.

    The processor's own ``save_pretrained`` needs every sub-processor (video, torchvision);
    the parts that images need are saved instead.
    """
    tok = getattr(processing, "tokenizer", processing)
    tok.save_pretrained(path)
    image_processor = getattr(processing, "image_processor", None)
    if image_processor is not None:
        image_processor.save_pretrained(path)


def _open_images(images: Sequence[Any]) -> list[Any]:
    from PIL import Image

    out = []
    for img in images:
        if isinstance(img, Image.Image):
            out.append(img.convert("RGB"))
        else:
            with Image.open(str(img)) as im:
                out.append(im.convert("RGB"))
    return out


# ----------------------------------------------------------------------------- generation
class HFGenerator:
    """Batched ``model.generate`` on chat prompts with images (transformers, as trl's own non-vLLM path)."""

    def __init__(self, config: Any, model_path: str):
        import torch

        g = config.generate
        self.batch_size = g.batch_size
        self.top_p = g.top_p
        self.use_cpu = config.train.use_cpu or not torch.cuda.is_available()
        self.dtype = "bfloat16" if (config.train.bf16 and not self.use_cpu) else "float32"
        self.model = None
        self.processing = None
        self.model_path: str | None = None
        self.load(model_path)

    def load(self, model_path: str) -> None:
        if model_path == self.model_path and self.model is not None:
            return
        self.model, self.processing = load_policy(model_path, dtype=self.dtype,
                                                  device="cpu" if self.use_cpu else "cuda")
        self.model.eval()
        self.model_path = model_path

    def release(self) -> None:
        """Free the model before a fine-tune (it is reloaded from the new checkpoint afterwards)."""
        import gc

        import torch

        self.model, self.processing, self.model_path = None, None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, messages, images, *, n, temperature, max_new_tokens) -> list[list[str]]:
        if self.model is None:
            raise RuntimeError("generator released; call load(model_path) first")
        out: list[list[str]] = []
        for start in range(0, len(messages), self.batch_size):
            out.extend(self._batch(messages[start:start + self.batch_size], images[start:start + self.batch_size],
                                   n, temperature, max_new_tokens))
        return out

    def _batch(self, messages, images, n, temperature, max_new_tokens) -> list[list[str]]:
        import torch

        proc = self.processing
        tok = getattr(proc, "tokenizer", proc)
        texts = [proc.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
        flat = _open_images([img for imgs in images for img in imgs])
        inputs = encode_batch(proc, texts, flat).to(self.model.device)
        sample = temperature is not None and temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_return_sequences": n,
                                  "do_sample": sample, "pad_token_id": tok.pad_token_id}
        if sample:
            kwargs.update(temperature=temperature, top_p=self.top_p, top_k=0)
        elif n > 1:
            raise ValueError("greedy decoding with n > 1 would repeat one path; set temperature > 0")
        with torch.no_grad():
            ids = self.model.generate(**inputs, **kwargs)
        completions = tok.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [completions[i * n:(i + 1) * n] for i in range(len(messages))]


class VLLMGenerator:
    """Offline-loop generation with vLLM (GPU nodes).

    ``generate.tensor_parallel_size`` GPUs per engine (vLLM's own tensor parallelism) and
    ``generate.data_parallel_size`` engines: with more than one, each engine runs in its own
    process on its own slice of the visible GPUs, the prompts are split into contiguous shards
    (one per engine) and the answers come back in prompt order. ``generate.options`` go to
    ``vllm.LLM`` (``gpu_memory_utilization``, ``max_model_len``, ...). ``release()`` ends the
    engine processes, which returns their GPU memory before a fine-tune.
    """

    engine = "vllm:LLM"  # import paths of the engine and its sampling parameters (tests swap them)
    sampling = "vllm:SamplingParams"

    def __init__(self, config: Any, model_path: str):
        g = config.generate
        self.options = dict(g.options)
        self.tp, self.dp = g.tensor_parallel_size, g.data_parallel_size
        self.top_p = g.top_p
        self.llm = None
        self.workers: list[tuple[Any, Any]] = []
        self.model_path: str | None = None
        self.load(model_path)

    def _engine_options(self) -> dict[str, Any]:
        return {**self.options, "tensor_parallel_size": self.tp}

    def load(self, model_path: str) -> None:
        if model_path == self.model_path and (self.llm is not None or self.workers):
            return
        self.release()
        if self.dp == 1:
            self.llm = _resolve(self.engine)(model=model_path, **self._engine_options())
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # CUDA and vLLM do not survive fork
            for devices in engine_devices(self.dp, self.tp):
                parent, child = ctx.Pipe()
                # Not a daemon: vLLM V1 starts its EngineCore as a child process, which a daemon may not have.
                # The engine exits when released, when its pipe closes (this process died) or at exit (atexit).
                proc = ctx.Process(target=_engine_worker, daemon=False, args=(
                    child, model_path, self._engine_options(), devices, self.engine, self.sampling))
                proc.start()
                child.close()
                self.workers.append((proc, parent))
            _LIVE_GENERATORS.add(self)
            for proc, conn in self.workers:  # wait until every engine is up (or report why not)
                status = conn.recv()
                if status != "ready":
                    self.release()
                    raise RuntimeError(f"a vLLM engine failed to start: {status}")
        self.model_path = model_path

    def release(self) -> None:
        """Tear the engines down so the fine-tune gets the GPU memory back."""
        for proc, conn in self.workers:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc, conn in self.workers:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            conn.close()
        self.workers = []
        _LIVE_GENERATORS.discard(self)
        if self.llm is None:
            self.model_path = None
            return
        import gc

        import torch

        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # older/newer vLLM layouts: deleting the engine is the fallback
            logger.debug("vLLM teardown: %s", exc)
        self.llm, self.model_path = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, messages, images, *, n, temperature, max_new_tokens) -> list[list[str]]:
        params = {"n": n, "temperature": max(temperature, 0.0), "top_p": self.top_p if temperature > 0 else 1.0,
                  "max_tokens": max_new_tokens}
        if self.llm is not None:
            return _vllm_generate(self.llm, _resolve(self.sampling), messages, images, params)
        if not self.workers:
            raise RuntimeError("generator released; call load(model_path) first")
        shards = split_even(len(messages), len(self.workers))
        for (_, conn), (a, b) in zip(self.workers, shards):
            conn.send((list(messages[a:b]), [list(i) for i in images[a:b]], params))
        out: list[list[str]] = []
        for proc, conn in self.workers:
            reply = conn.recv()
            if isinstance(reply, BaseException):
                raise RuntimeError(f"a vLLM engine failed: {reply!r}")
            out.extend(reply)
        return out


def split_even(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` shards, sizes differing by at most one.

    >>> split_even(5, 2)
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + base + (i < extra)
        bounds.append((start, end))
        start = end
    return bounds


def engine_devices(dp: int, tp: int, visible: str | None = None) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each engine: consecutive groups of ``tp`` visible GPUs.

    >>> engine_devices(2, 2, "0,1,2,3")
    ['0,1', '2,3']
    """
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(dp * tp)]
    if len(ids) < dp * tp:
        raise ValueError(f"generate.data_parallel_size={dp} x tensor_parallel_size={tp} needs {dp * tp} GPUs, "
                         f"{len(ids)} visible")
    return [",".join(ids[i * tp:(i + 1) * tp]) for i in range(dp)]


def _resolve(target: str) -> Any:
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _vllm_generate(llm: Any, sampling_cls: Any, messages, images, params) -> list[list[str]]:
    tok = llm.get_tokenizer()
    requests = []
    for m, imgs in zip(messages, images):
        req: dict[str, Any] = {"prompt": tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False)}
        if imgs:
            opened = _open_images(imgs)
            req["multi_modal_data"] = {"image": opened if len(opened) > 1 else opened[0]}
        requests.append(req)
    outs = llm.generate(requests, sampling_cls(**params), use_tqdm=False)
    return [[o.text for o in out.outputs] for out in outs]


# Generators with engine processes, released at interpreter exit: the engines are not daemons, and
# multiprocessing's own exit handler would otherwise wait for them while they wait for requests.
_LIVE_GENERATORS: "weakref.WeakSet[VLLMGenerator]" = weakref.WeakSet()


@atexit.register
def _release_engines() -> None:
    for gen in list(_LIVE_GENERATORS):
        gen.release()


def _engine_worker(conn, model_path: str, options: dict[str, Any], devices: str, engine: str, sampling: str) -> None:
    """One engine process: its own GPUs, requests in, answers out, until ``None`` or the loop's end of the
    pipe closes (the loop exited or was killed); the engine is shut down before the process exits."""
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before the engine initialises CUDA
    try:
        llm = _resolve(engine)(model=model_path, **options)
        sampling_cls = _resolve(sampling)
    except Exception as exc:
        conn.send(repr(exc))
        return
    conn.send("ready")
    try:
        for msg in requests(conn):
            try:
                conn.send(_vllm_generate(llm, sampling_cls, *msg))
            except Exception as exc:
                conn.send(RuntimeError(repr(exc)))
    finally:
        shutdown = getattr(llm, "shutdown", None) or getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()  # ends the engine's own core process(es)
            except Exception as exc:  # the process is exiting anyway
                logger.debug("vLLM shutdown: %s", exc)


# ----------------------------------------------------------------------------- training
def rows_to_dataset(rows: Sequence[Any]):
    """trl's conversational prompt/completion format; images decode lazily from their paths; text-only and
    image rows may be mixed (:func:`mathse_rl.integrations.trl.conversational.conversational_dataset`)."""
    from mathse_rl.integrations.trl.conversational import conversational_dataset

    data: dict[str, list[Any]] = {
        "prompt": [r.messages for r in rows],
        "completion": [[{"role": "assistant", "content": r.response}] for r in rows],
    }
    return conversational_dataset(data, [list(r.images) for r in rows])


class CachedCollator:
    """trl's collator, with each distinct example encoded once per stage.

    trl's vision collator renders the chat template, tokenises and processes the images of every
    example each time a batch is drawn. A stage that sees its rows many times (a small pool for
    many steps, as on a CPU: the demo's M0 reads each of 128 rows ~37 times) pays that again and
    again (``benchmarks/demo_trainer_speed.py``: 1.09x less CPU per step with the cache, same
    losses). Here each example is collated alone once (trl's own code, so the encoding is
    trl's), kept, and batches are assembled by right-padding the kept rows exactly as trl's
    ``flush_left`` leaves them; ``tests/integrations/trl/test_sft_speed.py`` checks the batches
    are identical to trl's. Only the fields of that layout are cached (``input_ids``,
    ``attention_mask``, ``labels``, ``token_type_ids``, ``mm_token_type_ids`` per token;
    ``pixel_values``, ``image_grid_thw`` per image); an example with other fields, or past the
    memory budget, goes through trl's collator each time.

        >>> collate = CachedCollator(trainer.data_collator, pad_token_id=0, budget_mb=512)  # doctest: +SKIP
    """

    PAD = {"input_ids": None, "attention_mask": 0, "labels": -100, "token_type_ids": 0, "mm_token_type_ids": 0}
    PER_IMAGE = ("pixel_values", "image_grid_thw")

    def __init__(self, inner: Any, pad_token_id: int, budget_mb: float = 512.0):
        self.inner = inner
        self.pad_token_id = pad_token_id
        self.budget = int(budget_mb * (1 << 20))
        self.used = 0
        self.cache: dict[str, dict[str, Any] | None] = {}  # None: this example cannot be cached
        self.hits = self.misses = 0

    @staticmethod
    def key(example: dict[str, Any]) -> str:
        """What the encoding depends on: the messages and the images' pixels."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps({k: v for k, v in example.items() if k not in ("images", "image")},
                            sort_keys=True, default=str).encode())
        images = example.get("images") or ([example["image"]] if example.get("image") is not None else [])
        for img in images:
            if hasattr(img, "tobytes"):
                h.update(f"{img.mode}{img.size}".encode())
                h.update(img.tobytes())
            else:
                h.update(str(img).encode())
        return h.hexdigest()

    def _encode(self, example: dict[str, Any]) -> dict[str, Any] | None:
        import copy

        out = self.inner([copy.deepcopy(example)])  # trl's collator rewrites the example's messages in place
        if not set(out) <= set(self.PAD) | set(self.PER_IMAGE) or out["input_ids"].size(0) != 1:
            return None
        return {k: v for k, v in out.items()}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for ex in examples:
            k = self.key(ex)
            if k not in self.cache:
                self.misses += 1
                row = self._encode(ex)
                size = sum(v.numel() * v.element_size() for v in row.values()) if row is not None else 0
                if row is None or self.used + size > self.budget:
                    return self.inner(examples)  # not cacheable (or no room): trl's collator as it is
                self.cache[k] = row
                self.used += size
            else:
                self.hits += 1
            row = self.cache[k]
            if row is None:
                return self.inner(examples)
            rows.append(row)
        return self.batch(rows)

    def batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad the per-token fields to the longest row, concatenate the per-image ones."""
        import torch
        from transformers import BatchFeature

        width = max(r["input_ids"].size(1) for r in rows)
        out: dict[str, Any] = {}
        for key in rows[0]:
            if key in self.PER_IMAGE:
                out[key] = torch.cat([r[key] for r in rows])
                continue
            pad = self.pad_token_id if self.PAD[key] is None else self.PAD[key]
            out[key] = torch.cat([torch.nn.functional.pad(r[key], (0, width - r[key].size(1)), value=pad)
                                  for r in rows])
        return BatchFeature(out)


class SFTBackend:
    """Fine-tunes with trl's ``SFTTrainer`` (plain next-token loss on the completion, images included).

    Runs the same in the loop's process and in each process of a launched stage
    (:mod:`mathse_rl.evolve.launch`): trl/accelerate read the world size from the launcher.
    Checkpoints every ``train.save_steps`` optimiser steps go to ``<output_dir>.trainer/<key>``,
    where ``key`` fingerprints the init model, the rows and the settings; a rerun of the same
    stage (``--resume``) continues from the newest complete one with the same step count and
    data order (trl's ``resume_from_checkpoint`` restores optimiser, scheduler, RNG and the
    position in the epoch). The final model is written through ``trainer.save_model`` (the
    path that gathers FSDP / ZeRO-3 shards) and moved into place by the main process.
    """

    def __init__(self, config: Any):
        self.cfg = config.train
        self.tracking = getattr(config, "tracking", None)  # SFT stages log to the run's trackers (wandb)
        self.last_log_history: list[dict[str, Any]] = []

    def train(self, rows, init_model: str, output_dir: str) -> str:
        import torch
        from trl import SFTConfig, SFTTrainer

        t = self.cfg
        use_cpu = t.use_cpu or not torch.cuda.is_available()
        work = Path(output_dir).with_name(Path(output_dir).name + ".trainer") / _stage_key(rows, init_model, t)
        kwargs: dict[str, Any] = dict(
            output_dir=str(work), use_cpu=use_cpu, bf16=t.bf16 and not use_cpu,
            gradient_checkpointing=t.gradient_checkpointing, **stage_reporting(self.tracking, output_dir),
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler_type, warmup_steps=0, weight_decay=t.weight_decay,
            num_train_epochs=t.num_train_epochs, max_steps=t.max_steps, max_length=t.max_length,
            logging_steps=1, dataloader_num_workers=0, seed=t.seed, disable_tqdm=True, save_strategy="no")
        if t.save_steps > 0:
            kwargs.update(save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit)
        kwargs.update(t.options)
        args = SFTConfig(**kwargs)  # before the model: a DeepSpeed config here makes from_pretrained load sharded
        last = last_checkpoint(work)
        processing = load_processing(init_model)
        # Resuming, the weights come from the checkpoint through from_pretrained: the trainer's own
        # reload (load_state_dict, strict=False) matches no key of a Qwen2.5-VL saved in the hub
        # layout and would silently go on from the init weights (measured: step-3 loss back at step 1's).
        # (A sharded FSDP checkpoint or a LoRA one holds no loadable model: the trainer restores those itself.)
        lora = dict(getattr(t, "lora", None) or {})
        if lora and _sharded_launch():
            raise ValueError("train.lora runs unsharded (its merged save needs the whole model in one process): "
                             "launch the stage without an FSDP/DeepSpeed config (launch.config_file=null)")
        loadable = last is not None and (last / "config.json").exists()
        model = load_model(str(last) if loadable else init_model, dtype=policy_dtype(t.bf16 and not use_cpu, bool(lora)))
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows_to_dataset(rows), processing_class=processing,
                             peft_config=lora_config(lora) if lora else None)
        total = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
        if t.cache_mb > 0 and total * global_rows(args, trainer) > len(rows):
            # The stage reads its rows more than once: encode each once (see CachedCollator).
            trainer.data_collator = CachedCollator(trainer.data_collator, _pad_id(processing), t.cache_mb)
        # trl/transformers read a float warmup below 1 as a ratio rounded *up*: a one-step stage
        # would warm up for its only step at learning rate 0. Whole steps, rounded down.
        if "warmup_steps" not in t.options:
            trainer.args.warmup_steps = int(t.warmup_ratio * total)
        if last is not None:
            logger.info("resuming the fine-tune from %s", last)
            _optimizer_state_on_cpu(trainer)
        trainer.train(resume_from_checkpoint=str(last) if last else None)
        self.last_log_history = list(trainer.state.log_history)
        path = _save_final(trainer, output_dir, {
            "init": init_model, "rows": len(rows), "steps": trainer.state.global_step, "total_steps": total,
            "warmup_steps": trainer.args.warmup_steps, "world_size": trainer.accelerator.num_processes,
            "resumed_from": last.name if last else None,
            "resumed_at_step": int(last.name.split("-")[-1]) if last else 0,
            "logged_steps": [h["step"] for h in self.last_log_history if "loss" in h],
            "losses": [h["loss"] for h in self.last_log_history if "loss" in h],
            "collate_cache": ({"hits": trainer.data_collator.hits, "misses": trainer.data_collator.misses}
                              if isinstance(trainer.data_collator, CachedCollator) else None)})
        del trainer, model
        return path


def _sharded_launch() -> bool:
    """Whether this process runs under accelerate's FSDP or DeepSpeed (the variables its launcher sets)."""
    import os

    return any(os.environ.get(v, "").lower() == "true" for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def global_rows(args: Any, trainer: Any) -> int:
    """Rows one optimiser step reads over all processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * trainer.accelerator.num_processes


def _pad_id(processing: Any) -> int:
    tok = getattr(processing, "tokenizer", processing)
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def _optimizer_state_on_cpu(trainer: Any) -> None:
    """Multi-process CPU runs (gloo) only: transformers maps the saved optimiser state to
    ``args.device``, which is ``cpu:0`` there, and ``torch.load`` cannot restore to ``cpu:0``;
    map it to ``cpu`` while the trainer loads it. GPU runs (``cuda:N``) are left as they are."""
    import torch

    if trainer.args.world_size <= 1 or trainer.args.device.type != "cpu":
        return
    load_state = trainer._load_optimizer_and_scheduler

    def load_on_cpu(checkpoint):
        torch_load = torch.load
        torch.load = lambda *a, **kw: torch_load(*a, **{**kw, "map_location": "cpu"})
        try:
            return load_state(checkpoint)
        finally:
            torch.load = torch_load

    trainer._load_optimizer_and_scheduler = load_on_cpu


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``work`` (its trainer state is written last)."""
    done = [p for p in work.glob("checkpoint-*") if (p / "trainer_state.json").exists()
            and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def _stage_key(rows: Sequence[Any], init_model: str, train_cfg: Any) -> str:
    """Fingerprint of what a fine-tune does: checkpoints of another stage's rows are never resumed."""
    import dataclasses
    import hashlib

    settings = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in ("save_steps", "save_total_limit")}
    h = hashlib.sha256(json.dumps([init_model, settings], sort_keys=True, default=str).encode())
    for r in rows:
        h.update(json.dumps([r.problem_id, r.response, r.source, [str(i) for i in r.images]]).encode())
    return h.hexdigest()[:16]


def _save_final(trainer: Any, output_dir: str, info: dict[str, Any]) -> str:
    """``trainer.save_model`` on every process (it gathers sharded weights); the main process
    adds a summary and renames the folder into place."""
    path = Path(output_dir)
    tmp = path.with_name(path.name + ".partial")
    acc = trainer.accelerator
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    save_full_model(trainer, str(tmp))  # whole (FSDP shards gathered, LoRA merged), with the processor parts
    if acc.is_main_process:
        losses = info.get("losses") or []
        (tmp / "mathse_train.json").write_text(json.dumps({
            **info, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        shutil.rmtree(path.with_name(path.name + ".trainer"), ignore_errors=True)
    acc.wait_for_everyone()
    return str(path)
