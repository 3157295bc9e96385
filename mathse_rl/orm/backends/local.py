"""The local judge: any transformers causal LM or VLM, batched, with P(CORRECT) from logits.

Prompts are rendered with the model's chat template, left-padded into batches of
``batch_size`` (images go through the processor), and primed with ``{"status": "`` so the
first generated token is the status. P(CORRECT) is the softmax over the two logits of the
first tokens of ``CORRECT`` and ``WRONG`` at that position; when the tokenizer does not
split them cleanly the score is 1.0/0.0 from the parsed status instead. With
``constrain_status`` (default) the status is decoded as exactly one of the two words (the
likelier, or a sample), as a server's guided JSON decoding would; the rest is free text.

    judge = load_judge({"backend": "local", "model": "path/to/judge", "batch_size": 16})
"""

from __future__ import annotations

from typing import Any, Sequence

from mathse_rl.models.tiny import encode_batch
from mathse_rl.orm.config import JudgeConfig
from mathse_rl.orm.images import to_pil
from mathse_rl.orm.judge import Judge, Reply, register_backend
from mathse_rl.orm.prompts import STATUS_PREFIX, build_judge_messages
from mathse_rl.types import RewardInput

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def load_judge_model(path: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(model, processor or tokenizer) for a checkpoint path, on ``device``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif dtype in _DTYPES:
        torch_dtype = getattr(torch, _DTYPES[dtype])
    else:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    config = AutoConfig.from_pretrained(path)
    is_vlm = getattr(config, "vision_config", None) is not None
    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch_dtype).to(device)
    if not is_vlm or config.model_type in ("qwen2_vl", "qwen2_5_vl"):
        # Qwen VL processors are rebuilt from their parts so no video processor is needed.
        from mathse_rl.models.tiny import load_processor

        processor = load_processor(path)
    else:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path)
    return model, processor


@register_backend("local")
class LocalJudge(Judge):
    """Judge with a transformers model held in this process."""

    def __init__(self, config: JudgeConfig, model: Any = None, processor: Any = None) -> None:
        super().__init__(config)
        if model is None:
            if not config.model:
                raise ValueError("judge backend 'local' needs `model`: a checkpoint path")
            model, processor = load_judge_model(config.model, config.device, config.dtype)
        if processor is None:
            raise ValueError("judge backend 'local' needs the model's processor or tokenizer")
        from mathse_rl.models.tiny import tokenizer_of

        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.tokenizer.padding_side = "left"
        self.is_vlm = hasattr(processor, "image_processor")
        self.status_words = self._status_words()
        self.status_token_ids = None
        if config.score_from_logits and self.status_words is not None:
            self.status_token_ids = (self.status_words[0][0], self.status_words[1][0])

    def _status_words(self) -> tuple[list[int], list[int]] | None:
        """Token ids of ``CORRECT"`` and ``WRONG"`` after the status prefix (None if not separable).

        The closing quote is part of the word so a constrained status always ends cleanly.
        """
        base = self.tokenizer(STATUS_PREFIX, add_special_tokens=False)["input_ids"]
        words = []
        for word in ('CORRECT"', 'WRONG"'):
            full = self.tokenizer(STATUS_PREFIX + word, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) == len(base):
                return None
            words.append(full[len(base):])
        return (words[0], words[1]) if words[0][0] != words[1][0] else None

    def _prompt(self, item: RewardInput) -> tuple[str, list[Any]]:
        images = [to_pil(x) for x in item.images] if self.is_vlm else []
        if item.images and not self.is_vlm:
            self.counters.add("images_dropped", len(item.images))
        messages = build_judge_messages(item.question, item.response, item.gold, item.choices, len(images),
                                        template=self.config.prompt_template)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + STATUS_PREFIX, images

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        out: list[Reply | None] = [None] * len(items)
        prompts: list[tuple[str, list[Any]] | None] = []
        for i, item in enumerate(items):
            try:
                prompts.append(self._prompt(item))
            except Exception as exc:  # an unreadable image fails its own item only
                prompts.append(None)
                out[i] = Reply(error=f"bad_input:{type(exc).__name__}")
        # Batches of similar lengths waste less on padding (and often need no padding mask).
        order = sorted((i for i, p in enumerate(prompts) if p is not None), key=lambda i: len(prompts[i][0]))
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            try:
                replies = self._generate([prompts[i] for i in idx])  # type: ignore[misc]
            except Exception as exc:  # one failed batch is counted per item; the others go on
                replies = [Reply(error=f"exception:{type(exc).__name__}") for _ in idx]
            for i, r in zip(idx, replies):
                out[i] = r
        return out  # type: ignore[return-value]

    def _generate(self, prompts: Sequence[tuple[str, list[Any]]]) -> list[Reply]:
        import torch

        texts = [t for t, _ in prompts]
        images = [img for _, imgs in prompts for img in imgs]
        inputs = encode_batch(self.processor, texts, images).to(self.model.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if self.config.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.config.temperature}
        if self.config.cache_implementation:
            sampling["cache_implementation"] = self.config.cache_implementation
        if self.config.constrain_status and self.status_words is not None:
            sampling["logits_processor"] = _status_constraint(inputs["input_ids"].shape[1], self.status_words)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, output_logits=True,
                return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new_tokens = out.sequences[:, inputs["input_ids"].shape[1]:]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        p_correct: list[float | None] = [None] * len(prompts)
        if self.status_token_ids is not None and out.logits:
            pair = out.logits[0][:, list(self.status_token_ids)].float()
            p_correct = torch.softmax(pair, dim=-1)[:, 0].tolist()
        forced = "logits_processor" in sampling  # the status word was decoded under the constraint
        return [Reply(text=STATUS_PREFIX + d, p_correct=p, forced_status=forced) for d, p in zip(decoded, p_correct)]


def _status_constraint(prompt_len: int, words: Sequence[Sequence[int]]):
    """A logits processor that lets the first generated tokens spell exactly one of ``words``."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class StatusConstraint(LogitsProcessor):
        def __call__(self, input_ids, scores):
            n = input_ids.shape[1] - prompt_len
            if n >= max(len(w) for w in words):
                return scores
            for b in range(input_ids.shape[0]):
                done = input_ids[b, prompt_len:].tolist()
                allowed = {w[n] for w in words if len(w) > n and list(w[:n]) == done}
                if allowed:
                    keep = torch.full_like(scores[b], float("-inf"))
                    idx = torch.tensor(sorted(allowed), device=scores.device)
                    keep[idx] = scores[b, idx]
                    scores[b] = keep
            return scores

    return LogitsProcessorList([StatusConstraint()])
