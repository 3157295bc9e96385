"""Fixtures for the verl integration tests: the tiny VLM behind verl's rollout-server interface.

``TinyVLMServer`` stands in for verl's server manager (``LLMServerClient``) in process:
the same ``generate(request_id, *, prompt_ids, sampling_params, image_data, ...)`` call,
answered by the tiny Qwen2.5-VL with ``transformers`` ``generate``. Every call is recorded
and checked: the prompt's image placeholder count must match the images sent with it.
A ``script`` maps a marker found in the decoded prompt to a fixed answer, so a test can
decide which answers are right; unscripted prompts get the model's own (random) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch


@dataclass
class Call:
    prompt_ids: list[int]
    prompt_text: str
    n_images: int
    response_ids: list[int]
    scripted: bool
    sampling_params: dict
    granted: int
    request_id: str = ""
    kwargs: dict | None = None  # everything else the loop sent (audio_data, mm_processor_output, priority, ...)


class TinyVLMServer:
    # A plain class, not a dataclass: hydra.utils.instantiate would turn a dataclass into a config.
    def __init__(self, model: Any, processor: Any, script: dict[str, str] | None = None, max_new_tokens: int = 8,
                 budget: dict[str, Any] | None = None):
        self.model, self.processor = model, processor
        self.script = dict(script or {})
        self.max_new_tokens = max_new_tokens
        # The engine's token-budget rule (integrations/verl/budget.py): rule, prompt_length,
        # response_length, max_model_len. Answers (scripted ones too) are cut to the grant.
        self.budget = dict(budget or {})
        self.calls: list[Call] = []
        self.fail_on: str | None = None  # a marker: prompts containing it raise, like a dead server
        self.routed_experts = False  # answer with per-token router choices, as an MoE engine with router replay

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None,
                       audio_data=None, mm_processor_kwargs=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        tokenizer = self.processor.tokenizer
        text = tokenizer.decode(prompt_ids)
        inputs: dict[str, Any] = {}
        n_pad = sum(1 for t in prompt_ids if t == self.model.config.image_token_id)
        if image_data:
            vision = self.processor.image_processor(images=list(image_data), return_tensors="pt")
            merge = self.processor.image_processor.merge_size ** 2
            assert n_pad == int(vision["image_grid_thw"].prod(dim=-1).sum()) // merge, "image tokens != images"
            inputs = {"pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}
        else:
            assert n_pad == 0, "image tokens in the prompt but no images sent"
        if self.fail_on is not None and self.fail_on in text:
            raise ConnectionError("rollout server unreachable")
        granted = None  # no budget rule: scripted answers whole, the model's own up to max_new_tokens
        if self.budget:
            from mathse_rl.integrations.verl.budget import granted_tokens

            budget = dict(self.budget)
            granted = granted_tokens(budget.pop("rule", "vllm"), len(prompt_ids), sampling_params.get("max_tokens"),
                                     **budget)
        answer = next((v for k, v in self.script.items() if k in text), None)
        if answer is not None:
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
            ids = ids[:granted] if granted is not None else ids
        else:
            ids_in = torch.tensor([prompt_ids])
            with torch.no_grad():
                out = self.model.generate(input_ids=ids_in, attention_mask=torch.ones_like(ids_in), do_sample=False,
                                          max_new_tokens=min(self.max_new_tokens, granted or self.max_new_tokens), **inputs)
            ids = out[0, ids_in.shape[1]:].tolist()
        self.calls.append(Call(list(prompt_ids), text, len(image_data or []), ids, answer is not None,
                               dict(sampling_params), granted, request_id,
                               dict(kwargs, audio_data=audio_data, video_data=video_data,
                                    mm_processor_kwargs=mm_processor_kwargs)))
        experts = [[t % 4, (t + 1) % 4] for t in range(len(prompt_ids) + len(ids))] if self.routed_experts else None
        return TokenOutput(token_ids=ids, stop_reason="completed", routed_experts=experts)


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_path):
    """The tiny VLM and its processor, loaded once."""
    from mathse_rl.models.tiny import load_tiny

    model, processor = load_tiny(tiny_vlm_path)
    model.eval()
    bind_rope_index(processor, model.config)
    return model, processor


def bind_rope_index(processor: Any, config: Any) -> None:
    """What verl's ``hf_processor`` does to a Qwen2.5-VL processor: the model's M-RoPE index
    function bound to the processor, so the agent loop can compute position ids."""
    import types

    from transformers.models.qwen2_5_vl import Qwen2_5_VLModel

    processor.config = config
    processor.get_rope_index = types.MethodType(Qwen2_5_VLModel.get_rope_index, processor)
    if hasattr(Qwen2_5_VLModel, "get_vision_position_ids"):
        processor.get_vision_position_ids = types.MethodType(Qwen2_5_VLModel.get_vision_position_ids, processor)


@pytest.fixture
def make_server(tiny_vlm):
    def make(script: dict[str, str] | None = None, **kwargs: Any) -> TinyVLMServer:
        model, processor = tiny_vlm
        return TinyVLMServer(model, processor, dict(script or {}), **kwargs)

    return make


# A tiny model whose answers end: the random model almost never samples its end token within a
# 16-token budget, so every refinement would be cut (and by the step's rule never verified). This
# copy points the end token's (tied) embedding along the mean direction of the model's last
# hidden states over a chat-formatted question and reflection prompt. Measured on those prompts
# (48 samples each, 16 new tokens, temperature 1): at scale 1.0, 44/48 answers and 48/48
# refinements end, 22/48 and 29/48 with an even number of characters (what length_parity accepts).
ENDING_SCALE = 1.0
QUESTION = "What is the sum of the red bar and the blue bar?"


def _chat_prompts(tokenizer) -> list[str]:
    from mathse_rl.prompts import build_reflect_messages
    from mathse_rl.types import Judgment, Problem

    def text(messages):
        flat = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                 " ".join(p.get("text", "") for p in m["content"] if p.get("type") == "text")} for m in messages]
        return tokenizer.apply_chat_template(flat, add_generation_prompt=True, tokenize=False)

    wrong = Judgment(status="incorrect", error_step=1, error_step_text="3 + 4 = 12", error_analysis="3 + 4 is 7.")
    return [text([{"role": "user", "content": QUESTION}]),
            text(build_reflect_messages(Problem(id="0", question=QUESTION, gold="7"), "3 + 4 = 12", wrong))]


@pytest.fixture(scope="session")
def ending_vlm_path(tiny_vlm_path, tmp_path_factory) -> str:
    """The tiny Qwen2.5-VL of ``tiny_vlm_path``, changed so that its answers end early."""
    import shutil

    from transformers import AutoModelForImageTextToText, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-ending") / "vlm-xs-ending"
    shutil.copytree(tiny_vlm_path, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    with torch.no_grad():
        hidden = torch.cat([model(input_ids=tokenizer(t, return_tensors="pt").input_ids,
                                  output_hidden_states=True).hidden_states[-1][0] for t in _chat_prompts(tokenizer)])
        direction = hidden.mean(0)
        model.get_input_embeddings().weight[eos] = ENDING_SCALE * direction / direction.norm()
    model.save_pretrained(out)
    return str(out)
