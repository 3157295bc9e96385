"""Tiny offline models behave like the real Qwen2 / Qwen2.5-VL family, and trl trains them on CPU."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mathse_rl.models.tiny import CHAT_TEMPLATE, build_tokenizer, load_tiny, tokenizer_of


def _image(color=(200, 30, 30), size=56):
    return Image.new("RGB", (size, size), color)


def test_tokenizer_has_qwen_specials_and_chat_template():
    tok = build_tokenizer()
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>",
                    "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"):
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, special
    text = tok.apply_chat_template([{"role": "user", "content": "2+3?"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.chat_template == CHAT_TEMPLATE
    # Numbers survive a round trip digit by digit.
    assert tok.decode(tok("The answer to this problem is 1234.")["input_ids"]) == "The answer to this problem is 1234."


def test_tiny_vlm_forward_and_generate_with_an_image(tiny_vlm_path):
    model, processor = load_tiny(tiny_vlm_path)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the sum?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text, text], images=[_image(), _image((0, 0, 200))], return_tensors="pt", padding=True)
    n_image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4  # merge 2x2
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= inputs["input_ids"].shape[1] + 5


def test_tiny_lm_loads_with_tokenizer(tiny_lm_path):
    model, tok = load_tiny(tiny_lm_path)
    assert type(model).__name__ == "Qwen2ForCausalLM" and tokenizer_of(tok) is tok
    ids = tok("Step 1: 5 + 7 = 12.", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 3


def _vision_rows(n: int):
    # Two colours, each with its own short answer: memorisable from the image alone.
    rows = []
    for i in range(n):
        red = i % 2 == 0
        rows.append({
            "images": [_image((220, 20, 20) if red else (20, 20, 220))],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]}],
            "completion": [{"role": "assistant", "content": "red" if red else "blue"}],
        })
    return rows


@pytest.mark.slow
def test_trl_sft_trainer_lowers_loss_on_tiny_vlm(tiny_vlm_path, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, processor = load_tiny(tiny_vlm_path)
    args = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=4, max_steps=20, learning_rate=3e-3, logging_steps=1, lr_scheduler_type="constant",
        save_strategy="no", max_length=None, dataloader_num_workers=0, seed=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(_vision_rows(8)),
                         processing_class=processor)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


@pytest.mark.slow
def test_trl_grpo_trainer_runs_two_steps_on_tiny_vlm(tiny_vlm_path, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, processor = load_tiny(tiny_vlm_path)
    calls = []

    def length_reward(completions, **kwargs):
        calls.append(len(completions))
        return [float(len(c[0]["content"]) % 3) for c in completions]

    rows = [{"images": r["images"], "prompt": r["prompt"]} for r in _vision_rows(4)]
    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=4, num_generations=2, max_completion_length=8, max_steps=2,
        logging_steps=1, save_strategy="no", learning_rate=1e-3, seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=processor)
    trainer.train()
    assert trainer.state.global_step == 2 and calls == [4, 4]
    assert any("rewards/length_reward/mean" in h for h in trainer.state.log_history)
