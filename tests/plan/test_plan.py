"""``mathse-rl plan`` on every shipped recipe at its real shape, and its numbers against published estimators.

The 7B recipes are planned with Qwen2.5-VL-7B-Instruct's public config (shipped in ``mathse_rl/plan/models``,
built on the meta device): 8,292,166,656 parameters. A recipe must fit an 80 GB GPU with MARGIN_GB to spare
in every phase, and every launch line must parse with its launcher's own parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mathse_rl.plan import Assumptions, plan_recipe
from mathse_rl.plan.memory import GB
from mathse_rl.plan.shapes import model_shape

ROOT = Path(__file__).resolve().parents[2]
SEVEN_B = "Qwen/Qwen2.5-VL-7B-Instruct"
MARGIN_GB = 8.0  # 10% of an 80 GB GPU left in every phase of every shipped 7B recipe
RECIPES = sorted(p for d in ("recipes/trl", "recipes/orm") for p in (ROOT / d).glob("*.yaml"))
TINY = {"tiny_cpu.yaml", "mathse_grpo_tiny_cpu.yaml"}


@pytest.fixture(scope="module")
def seven_b():
    return model_shape(SEVEN_B)


def test_the_7b_model_is_built_from_its_public_config_on_the_meta_device(seven_b):
    assert seven_b.params == 8_292_166_656  # the 8.29 B
    assert seven_b.vision_params == 676_550_144 and seven_b.largest_module_params == 152064 * 3584
    assert (seven_b.hidden, seven_b.layers, seven_b.vocab, seven_b.kv_heads) == (3584, 28, 152064, 4)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_fits_80gb_gpus_and_its_launch_lines_parse(recipe, tiny_vlm_path):
    plan = plan_recipe(recipe, model=tiny_vlm_path if recipe.name in TINY else None)
    print(plan.render())
    assert plan.fits, plan.problems
    for table in plan.tables:
        assert table.left >= MARGIN_GB * GB, f"{table.title}: only {table.left / GB:.1f} GB left"
    assert all(c.error is None for c in plan.commands)
    if recipe.name in TINY:
        assert plan.kind == "cpu"
    elif plan.kind in ("evolve", "online"):
        assert plan.model.params == 8_292_166_656 and plan.tables and plan.commands


def test_the_online_7b_recipe_shards_with_fp32_master_weights(seven_b):
    plan = plan_recipe(ROOT / "recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml")
    (table,) = plan.tables
    lines = {line.name: line.bytes for line in table.lines}
    assert lines["master weights (fp32 shards)"] == seven_b.params * 4 // 8
    assert lines["optimizer states (AdamW shards)"] == seven_b.params * 8 // 8
    launch = plan.commands[0].argv
    assert launch[:3] == ["accelerate", "launch", "--config_file"] and launch[4:6] == ["--num_processes", "8"]
    # The same recipe launched as plain DDP (what the recipe said before) does not fit, and says by how much.
    ddp = plan_recipe(ROOT / "recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml", ["launch_config=null"])
    assert not ddp.fits and "GB over" in ddp.problems[0]


def test_zero3_model_states_match_deepspeeds_estimator(seven_b):
    """DeepSpeed's ``estimate_zero3_model_states_mem_needs`` (deepspeed/runtime/zero/stage3.py, read at commit
    007cca6): per GPU without offload ``4 * largest_layer_params + 18 * total_params / total_gpus``; with the
    optimizer offloaded ``4 * largest_layer_params + 2 * total_params / total_gpus``. Its inputs come from its
    ``model_to_params``: parameters counted once, the largest module's own parameters (recomputed here)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mathse_rl.plan.shapes import resolve_config_dir

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(resolve_config_dir(SEVEN_B))))
    total = sum({id(p): p.numel() for p in model.parameters()}.values())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    for offload, formula in ((False, 4 * largest + int(18 * total / 8)), (True, 4 * largest + int(2 * total / 8))):
        plan = plan_recipe(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml", [
            f"launch.config_file={ROOT / 'recipes/trl/accelerate/zero3.yaml'}"])
        sft = next(t for t in plan.tables if t.title.startswith("SFT"))
        if offload:
            from mathse_rl.plan.memory import TrainSpec, training_lines

            lines = training_lines(seven_b, TrainSpec(processes=8, sharding="zero3", offload_optimizer=True))
        else:
            lines = sft.lines
        states = sum(line.bytes for line in lines if line.kind == "model")
        assert abs(states - formula) <= 8, (states, formula)  # integer division per term
    print(f"ZeRO-3, 8 GPUs: {formula / GB:.2f} GB per GPU of model states (DeepSpeed's formula and ours)")


def test_ddp_model_states_match_accelerates_estimate_memory(seven_b):
    """accelerate's ``estimate-memory`` (accelerate/commands/estimate.py, installed): a model of ``bytes`` fp32
    needs ``bytes`` for the model, ``bytes`` for gradients and ``2 x bytes`` for Adam; its size comes from
    ``calculate_maximum_sizes`` on an empty fp32 model. Ours for DDP with fp32 weights: the same three terms."""
    import torch
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mathse_rl.plan.memory import TrainSpec, training_lines
    from mathse_rl.plan.shapes import resolve_config_dir

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(
            AutoConfig.from_pretrained(str(resolve_config_dir(SEVEN_B))), dtype=torch.float32)
    size, _ = calculate_maximum_sizes(model)
    theirs = estimate_training_usage(size, "float32")
    ours = {line.name: line.bytes for line in training_lines(seven_b, TrainSpec(mixed_precision=True))}
    # accelerate's size also counts the model's buffers (rotary inv_freq, a few hundred bytes): 1e-6 relative
    assert ours["master weights (fp32)"] == seven_b.params * 4 == pytest.approx(theirs["model"], rel=1e-6)
    assert ours["gradients"] == pytest.approx(theirs["gradients"], rel=1e-6)
    assert ours["optimizer states (AdamW, 2 per parameter)"] == pytest.approx(theirs["optimizer"], rel=1e-6)


def test_bf16_adamw_at_lr_1e6_leaves_most_weights_unchanged():
    """Why a full fine-tune keeps fp32 master weights (``policy_dtype``): one AdamW step at lr 1e-6 on
    bf16 weights of a 7B model's scale (std 0.02) rounds almost every update away."""
    import torch

    from mathse_rl.integrations.trl.policy import policy_dtype

    torch.manual_seed(0)
    w32 = torch.nn.Parameter(torch.randn(1 << 18) * 0.02)
    w16 = torch.nn.Parameter(w32.detach().to(torch.bfloat16).clone())
    for w in (w32, w16):
        w.grad = torch.randn_like(w)
        torch.optim.AdamW([w], lr=1e-6, weight_decay=0.0).step()
    before16 = w32.detach().to(torch.bfloat16)
    changed16 = (w16.detach() != before16).float().mean().item()
    assert changed16 < 0.05 and policy_dtype(bf16=True, lora=False) == "float32"
    print(f"bf16 weights changed by one step: {100 * changed16:.2f}%")


def test_a_local_orm_beside_vllm_engine_0_is_refused_with_the_numbers():
    plan = plan_recipe(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml",
                       ["judge=orm", "critic.backend=local", f"critic.model={SEVEN_B}"])
    assert not plan.fits
    assert any(p.startswith("generation + judging, GPU 0") and "GB over" in p for p in plan.problems)
    served = plan_recipe(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml",
                         ["judge=orm", "critic.backend=openai", "critic.endpoint=http://127.0.0.1:8000/v1"])
    assert served.fits, served.problems


def test_the_cli_prints_the_table_and_exits_1_when_it_does_not_fit(capsys):
    from mathse_rl.cli import main

    assert main(["plan", str(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml")]) == 0
    out = capsys.readouterr().out
    assert "SFT stage (fsdp, 8 process(es) on 1 node(s)), each GPU" in out and "fits: yes" in out
    assert main(["plan", str(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml"), "--gpu-gb", "40"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_the_check_at_start_refuses_a_run_that_does_not_fit():
    from mathse_rl.evolve.config import load_config
    from mathse_rl.plan import PlanError, preflight_evolve, preflight_online
    from mathse_rl.plan.run import _load_yaml

    cfg = load_config(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml")
    assert preflight_evolve(cfg, gpu=80).fits
    with pytest.raises(PlanError, match=r"SFT stage .* needs \d+\.\d GB of a 24 GB GPU"):
        preflight_evolve(cfg, gpu=24)
    assert preflight_evolve(load_config(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml", ["launch.check_memory=false"]),
                            gpu=24) is None
    online = _load_yaml(ROOT / "recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml")
    fsdp = {"ACCELERATE_USE_FSDP": "true", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "WORLD_SIZE": "8"}
    assert preflight_online(online, SEVEN_B, env=fsdp, gpu=80).fits
    with pytest.raises(PlanError, match=r"under ddp on 8 process\(es\).*GB over"):
        preflight_online(online, SEVEN_B, env={"WORLD_SIZE": "8"}, gpu=80)  # launched without --config_file


def test_assumptions_are_stated_with_the_plan():
    text = plan_recipe(ROOT / "recipes/trl/qwen2_5_vl_7b.yaml", assumptions=Assumptions(image_tokens=2048)).render()
    assert "assumed: 80 GB per GPU" in text and "2048 tokens" in text and " ~ " in text
