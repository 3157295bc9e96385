"""A checkpoint's processor comes through ``AutoProcessor`` with the checkpoint's own chat template.

The checkpoint here has Qwen2.5-VL-7B-Instruct's real ``config.json``, ``preprocessor_config.json`` and
``chat_template.json`` (shipped in ``mathse_rl/plan/models``, copied from the hub) and a small local
tokenizer in place of the real 151k-token one (which is not available offline).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mathse_rl.integrations.trl.backends import load_processing, save_processing
from mathse_rl.models.tiny import CHAT_TEMPLATE, build_tokenizer

REAL = Path(__file__).resolve().parents[2] / "mathse_rl" / "plan" / "models" / "Qwen2.5-VL-7B-Instruct"
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "2+3?"}]}]


def _checkpoint(tmp_path: Path, *, processor_template: bool) -> Path:
    path = tmp_path / "qwen2_5_vl_7b_like"
    shutil.copytree(REAL, path)
    if not processor_template:
        (path / "chat_template.json").unlink()
    tok = build_tokenizer()
    tok.chat_template = None  # as in a checkpoint whose tokenizer_config carries no template
    tok.save_pretrained(path)
    return path


def test_a_real_checkpoint_loads_with_its_own_chat_template_and_image_settings(tmp_path):
    path = _checkpoint(tmp_path, processor_template=True)
    proc = load_processing(str(path))
    real = json.loads((REAL / "chat_template.json").read_text())["chat_template"]
    assert proc.chat_template != CHAT_TEMPLATE and proc.chat_template == real
    assert type(proc).__name__ == "Qwen2_5_VLProcessor"  # the class AutoProcessor picks for this config
    text = proc.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>2+3?" in text
    # min_pixels / max_pixels of the real preprocessor config, not the tiny models' 28x28..112x112
    assert (proc.image_processor.size.shortest_edge, proc.image_processor.size.longest_edge) == (3136, 12845056)
    # what a stage saves loads back with the same template
    save_processing(proc, tmp_path / "saved")
    shutil.copy(path / "config.json", tmp_path / "saved" / "config.json")
    assert load_processing(str(tmp_path / "saved")).chat_template == real


def test_a_checkpoint_without_a_chat_template_is_an_error_not_the_tiny_template(tmp_path):
    path = _checkpoint(tmp_path, processor_template=False)
    with pytest.raises(ValueError, match="has no chat template"):
        load_processing(str(path))


def test_the_tiny_models_keep_their_template(tiny_vlm_path, tiny_lm_path):
    assert load_processing(tiny_vlm_path).chat_template == CHAT_TEMPLATE
    assert load_processing(tiny_lm_path).chat_template == CHAT_TEMPLATE
