"""The pieces of the CPU backend that ``main_ppo`` runs on, checked one by one (fast, no Ray).

The end-to-end runs are in ``test_main_ppo.py``; here: the backend is opt-in and pinned to
verl 0.9.1, the ``hf_cpu`` rollout server batches concurrent image requests and takes new
weights, the images-only processor and ``qwen_vl_utils`` stand-in work without torchvision,
and M-RoPE position ids are repaired in both layouts they arrive in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow  # a fresh interpreter importing verl
def test_backend_is_off_unless_asked():
    result = run_python("""
        import verl
        from verl.plugin.platform import PlatformRegistry
        from verl.workers.rollout.base import _ROLLOUT_REGISTRY
        from verl.workers.rollout.replica import RolloutReplicaRegistry
        print("cpu" in PlatformRegistry.registered_names(), ("hf_cpu", "async") in _ROLLOUT_REGISTRY,
              "hf_cpu" in RolloutReplicaRegistry._registry)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "False"]


@pytest.mark.slow  # a fresh interpreter importing verl
def test_verl_platform_cpu_enables_platform_rollout_processor_and_images(tiny_vlm_path):
    result = run_python(f"""
        import verl
        from verl.plugin.platform import get_platform
        from verl.workers.rollout.base import get_rollout_class
        from verl.workers.rollout.replica import RolloutReplicaRegistry
        from verl.utils.tokenizer.tokenizer import hf_processor
        from verl.utils.dataset.vision_utils import process_image
        from PIL import Image
        p = get_platform()
        print(p.device_name, p.communication_backend_name(), p.device_module.current_device(),
              p.device_module.memory_allocated())
        print(get_rollout_class("hf_cpu").__name__, RolloutReplicaRegistry.get("hf_cpu").__name__)
        proc = hf_processor({tiny_vlm_path!r})
        image = process_image({{"image": Image.new("RGB", (70, 50), "red")}})
        out = proc(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[image], return_tensors="pt")
        print(type(proc).__name__, hasattr(proc, "get_rope_index"), image.size,
              tuple(out["image_grid_thw"][0].tolist()))
    """, VERL_PLATFORM="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().split("\n")
    assert lines[0] == "cpu gloo cpu 0"
    assert lines[1] == "HFServerAdapter HFRolloutReplica"
    # verl gets a Qwen2.5-VL processor (it dispatches on the class name to bind get_rope_index);
    # the image is resized to multiples of 28 and becomes a 4x4 patch grid
    assert lines[2] == "Qwen2_5_VLProcessor True (56, 56) (1, 4, 4)"


def test_the_images_only_processor_is_saved_with_a_checkpoint_and_loads_back(tiny_vlm_path, tmp_path):
    """verl's FSDP checkpoint saves the processor (``save_pretrained``) beside the actor."""
    from mathse_rl.integrations.verl.cpu.processor import load_images_only_processor

    import shutil

    proc = load_images_only_processor(tiny_vlm_path)
    proc.save_pretrained(tmp_path / "huggingface")
    shutil.copy(f"{tiny_vlm_path}/config.json", tmp_path / "huggingface")  # verl saves the model config beside it
    back = load_images_only_processor(tmp_path / "huggingface")
    assert back.tokenizer.get_vocab() == proc.tokenizer.get_vocab() and back.video_processor is None
    assert back.image_processor.to_dict() == proc.image_processor.to_dict()
    assert "video_processor" in proc.get_attributes()  # outside a save, the stock processor's attributes


def test_other_verl_versions_get_a_clear_error(monkeypatch):
    import verl
    from verl.plugin.platform import PlatformRegistry

    from mathse_rl.integrations.verl import cpu

    monkeypatch.setattr(verl, "__version__", "0.8.0")
    monkeypatch.setattr(cpu, "_ENABLED", False)
    monkeypatch.setattr(PlatformRegistry, "_platforms", dict(PlatformRegistry._platforms))  # restored after
    assert cpu.enable() is False
    with pytest.raises(cpu.UnsupportedVerlVersion, match=r"supports verl==0\.9\.1 only; found verl==0\.8\.0"):
        PlatformRegistry.get("cpu")()


def test_fetch_image_sizes_are_multiples_of_the_merged_patch():
    from mathse_rl.integrations.verl.cpu.vision import fetch_image, process_vision_info

    image = fetch_image({"image": Image.new("RGBA", (300, 100), (0, 0, 0, 0))})
    assert image.mode == "RGB" and image.size == (308, 112)
    small = fetch_image({"image": Image.new("RGB", (10, 10))})
    assert small.size == (56, 56)  # at least 4 merged tokens
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (56, 56))},
                                             {"type": "text", "text": "q"}]}]
    images, videos = process_vision_info(messages)
    assert len(images) == 1 and videos is None


def test_position_ids_are_repaired_in_both_layouts():
    from verl.utils.tensordict_utils import index_select_tensor_dict, nested_tensor_from_tensor_list
    from tensordict import TensorDict

    from mathse_rl.integrations.verl.cpu.platform import canonical_3d_position_ids

    blocks = [torch.arange(4 * n).reshape(4, n) + i for i, n in enumerate((5, 5, 5))]
    rows_first = torch.nested.as_nested_tensor(blocks, layout=torch.jagged)  # equal lengths: ragged on dim 1
    lost_attr = nested_tensor_from_tensor_list(blocks, ragged_idx=2)
    lost_attr._ragged_idx = 1  # what pickling across Ray leaves behind
    for pos in (rows_first, lost_attr):
        td = TensorDict({"position_ids": pos}, batch_size=3)
        canonical_3d_position_ids(td)
        picked = index_select_tensor_dict(td, [2, 0])["position_ids"].unbind()
        assert torch.equal(picked[0], blocks[2]) and torch.equal(picked[1], blocks[0])


@pytest.fixture(scope="module")
def server(tiny_vlm_path):
    from mathse_rl.integrations.verl.cpu.rollout import HFRolloutServer

    torch.set_num_threads(1)
    return HFRolloutServer(tiny_vlm_path, response_length=6)


def _prompt(processor, n_images: int, text: str) -> tuple[list[int], list[Image.Image]]:
    images = [Image.new("RGB", (56, 56), c) for c in ("red", "blue")[:n_images]]
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    ids = processor(text=[chat], images=images or None, return_tensors="pt")["input_ids"][0].tolist()
    return ids, images


def test_rollout_server_batches_concurrent_image_requests(server):
    prompts = [_prompt(server.processor, k % 3, f"What is {k} + 1?") for k in range(5)]
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}

    async def ask_all():
        return await asyncio.gather(*[
            server.generate(f"r{k}", prompt_ids=ids, sampling_params=dict(params), image_data=images or None)
            for k, (ids, images) in enumerate(prompts)])

    before = dict(server.stats)
    outs = asyncio.run(ask_all())
    assert server.stats["requests"] - before["requests"] == 5
    assert server.stats["batches"] - before["batches"] == 1  # all five in one generate call
    vision_ids = set(server.suppress_ids)
    for out in outs:
        assert 1 <= len(out.token_ids) <= 6 and len(out.log_probs) == len(out.token_ids)
        assert all(lp <= 0 for lp in out.log_probs)
        assert not vision_ids & set(out.token_ids)


def test_rollout_server_generates_with_the_weights_it_is_sent(server, tiny_vlm, tmp_path):
    from mathse_rl.models.tiny import build_tiny, load_tiny

    other_path = build_tiny(tmp_path / "other", kind="vlm", size="XS", seed=7)
    other, _ = load_tiny(other_path)
    ids, images = _prompt(server.processor, 1, "What is 2 + 3?")
    greedy = {"temperature": 0.0}

    def answer():
        return asyncio.run(server.generate("g", prompt_ids=ids, sampling_params=dict(greedy),
                                           image_data=images)).token_ids

    original = {k: v.clone() for k, v in server.model.state_dict().items()}
    try:
        report = asyncio.run(server.load_weights(dict(other.state_dict()), global_steps=3))
        assert report["missing"] == 0 and report["unexpected"] == 0 and report["global_steps"] == 3
        with torch.no_grad():
            pixel = server.processor.image_processor(images=images, return_tensors="pt")
            expected = other.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      pixel_values=pixel["pixel_values"], image_grid_thw=pixel["image_grid_thw"],
                                      do_sample=False, max_new_tokens=6, suppress_tokens=server.suppress_ids)
        got = answer()
        assert got == expected[0, len(ids):len(ids) + len(got)].tolist()
    finally:
        asyncio.run(server.load_weights(original, global_steps=None))


def test_rollout_server_serves_a_text_only_model(tiny_lm_path):
    from mathse_rl.integrations.verl.cpu.rollout import HFRolloutServer
    from mathse_rl.models.tiny import load_processor

    server = HFRolloutServer(tiny_lm_path, response_length=4)
    tokenizer = load_processor(tiny_lm_path)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in ("What is 1 + 1?", "What is 12 - 3?")]
    prompts = [tokenizer.encode(chat, add_special_tokens=False) for chat in chats]

    async def ask():
        return await asyncio.gather(*[server.generate(str(i), prompt_ids=ids, sampling_params={"max_tokens": 3})
                                      for i, ids in enumerate(prompts)])

    outs = asyncio.run(ask())
    assert server.stats["max_batch"] == 2
    assert all(1 <= len(o.token_ids) <= 3 and o.log_probs is None for o in outs)
    with pytest.raises(ValueError, match="text-only"):
        asyncio.run(server.generate("x", prompt_ids=prompts[0], sampling_params={},
                                    image_data=[Image.new("RGB", (56, 56))]))


@pytest.mark.parametrize("rule, explicit, expected", [
    ("vllm", None, 2),      # min(response_length, prompt_length + response_length - len(prompt)) = 8 + 6 - 12
    ("vllm", 6, 6),         # an explicit max_tokens is granted while the context has room
    ("sglang", None, 2),
    ("sglang", 6, 6),
])
def test_rollout_server_grants_the_real_engines_token_budget(tiny_vlm_path, monkeypatch, rule, explicit, expected):
    """A prompt longer than rollout.prompt_length (a reflection) gets what vLLM/SGLang would grant it."""
    from mathse_rl.integrations.verl.cpu.rollout import HFRolloutServer

    server = HFRolloutServer(tiny_vlm_path, response_length=6, max_model_len=64, prompt_length=8, budget_rule=rule)
    granted = []
    monkeypatch.setattr(server, "_generate_batch", lambda key, reqs: granted.append(key[4]) or [([1], None)] * len(reqs))
    ids = server.processor.tokenizer.encode("What is 12 + 30 plus seven?")[:12]
    assert len(ids) == 12
    params = {"temperature": 0.0} if explicit is None else {"temperature": 0.0, "max_tokens": explicit}
    asyncio.run(server.generate("b", prompt_ids=ids, sampling_params=params))
    assert granted == [expected]


def test_rollout_server_refuses_a_prompt_with_no_room_like_the_engines(tiny_vlm_path):
    from mathse_rl.integrations.verl.cpu.rollout import HFRolloutServer

    for rule in ("vllm", "sglang"):
        server = HFRolloutServer(tiny_vlm_path, response_length=6, max_model_len=64, prompt_length=8, budget_rule=rule)
        with pytest.raises(ValueError, match="no room"):
            asyncio.run(server.generate("x", prompt_ids=[5] * 64, sampling_params={"max_tokens": 4}))
    # one token short of the context: vLLM still grants 1 token, SGLang grants 0 (an empty answer)
    out = asyncio.run(server.generate("y", prompt_ids=[5] * 63, sampling_params={"max_tokens": 4}))
    assert out.token_ids == []
