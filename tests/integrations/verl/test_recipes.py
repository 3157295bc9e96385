"""Every verl recipe composes against verl's installed Hydra config, with no unknown keys
and no legacy top-level reward keys, and names only things our plugin registers.

The overrides the launch scripts (and ``scripts/gpu_smoke.sh``) pass are read from the
scripts themselves and applied the way Hydra applies a command line (struct mode: an
unknown key without ``+`` is an error). Keys the recipe files add are checked against
verl's own ``ppo_trainer`` config; the only keys allowed to be new are our option sections.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "recipes" / "verl"
SCRIPTS = sorted(RECIPES.glob("*.sh")) + [ROOT / "scripts" / "gpu_smoke.sh"]
VERL_CONFIG = Path(verl.__file__).parent / "trainer" / "config"

# Keys a recipe may add to verl's config: our own option sections.
EXTENSIONS = (
    "algorithm.mathse_rft",  # mathse_rft estimator options (algos.RFTConfig)
    "mathse",  # the MathSE step's options (step.StepConfig) and the agent loop's (agent_loop.VerlOptions)
    "reward.custom_reward_function.reward_kwargs",  # reward name for compute_score / the mathse manager
    "reward.reward_kwargs",  # the same, read by the mathse reward manager
)
# verl's legacy top-level reward sections: ignored by the reward loop, so never set them.
LEGACY = ("custom_reward_function", "reward_model")


def primary_recipes() -> list[Path]:
    return sorted(p for p in RECIPES.glob("*.yaml") if "searchpath" in (yaml.safe_load(p.read_text()) or {}).get("hydra", {}))


def invocations(script: Path) -> list[tuple[str, list[str]]]:
    """(config name, overrides) of every ``verl.trainer.main_ppo`` call in a launch script,
    with ``$VAR`` replaced by the ``VAR="${VAR:-default}"`` defaults the script sets."""
    text = script.read_text()
    defaults = dict(re.findall(r'^\s*(?:export\s+)?(\w+)="\$\{\1:-([^}]*)\}"', text, flags=re.M))
    defaults.setdefault("HERE", str(RECIPES))
    calls = []
    for chunk in text.split("verl.trainer.main_ppo")[1:]:
        lines = []
        for line in chunk.splitlines():
            lines.append(line.rstrip().rstrip("\\"))
            if not line.rstrip().endswith("\\"):
                break
        command = " ".join(lines)
        for _ in range(3):  # defaults may refer to other variables ($HOME inside DATA_DIR's)
            command = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), os.environ.get(m.group(1), "x")), command)
        tokens = [t for t in shlex.split(command) if t != "$@"]
        name = next(t.split("=", 1)[1] for t in tokens if t.startswith("--config-name="))
        overrides = [t for t in tokens if not t.startswith("--") and "=" in t]
        calls.append((name, overrides))
    return calls


def has_key(cfg, dotted: str) -> bool:
    """Whether ``dotted`` names a key of ``cfg`` (even one whose value is ``???``)."""
    node = cfg
    for part in dotted.split("."):
        if not OmegaConf.is_dict(node) or part not in node.keys():  # `in node` is False for ???
            return False
        node = node._get_node(part)
    return True


def leaf_paths(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


@pytest.fixture(scope="module")
def base():
    with initialize_config_dir(config_dir=str(VERL_CONFIG), version_base=None):
        return compose("ppo_trainer")


def compose_recipe(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return compose(name, overrides=overrides)


CASES = [(s.name, name, ov) for s in SCRIPTS for name, ov in invocations(s)] + [
    (p.name, p.stem, []) for p in primary_recipes()
]


def test_every_recipe_is_launched_and_every_script_is_read():
    launched = {name for _, name, ov in CASES if ov}
    assert {p.stem for p in primary_recipes()} == {"mathse_rft_geo3k", "grpo_reflect_geo3k"}
    assert {p.stem for p in primary_recipes()} <= launched
    assert all(invocations(s) for s in SCRIPTS), "a launch script without a main_ppo call"


@pytest.mark.parametrize("source,name,overrides", CASES, ids=[f"{s}:{n}" for s, n, _ in CASES])
def test_recipe_composes_with_known_keys_only(base, source, name, overrides):
    cfg = compose_recipe(name, overrides)  # unknown command-line keys fail here (struct mode)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

    # Keys the recipe files add must exist in verl's config, except our option sections.
    for path in RECIPES.glob("*.yaml"):
        body = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("defaults", "hydra")}
        for key in leaf_paths(body):
            if key.startswith(EXTENSIONS):
                continue
            assert has_key(base, key), f"{path.name}: unknown key {key}"
    for override in overrides:
        assert not override.lstrip("+~").startswith(LEGACY), f"{source}: legacy reward key {override}"
        if override.startswith("+"):
            assert override[1:].startswith(EXTENSIONS), f"{source}: adds a key verl does not know: {override}"
    for section in LEGACY:  # untouched: still verl's all-null defaults
        assert OmegaConf.to_container(cfg[section]) == OmegaConf.to_container(base[section])

    # The settings the recipes promise.
    assert cfg.data.image_key == "images"
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2" and cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "mathse_reflect"
    assert cfg.reward.reward_manager.name == "mathse"
    assert cfg.reward.custom_reward_function.path == "pkg://mathse_rl.integrations.verl"
    assert cfg.reward.custom_reward_function.reward_kwargs.reward
    if name.startswith("mathse_rft"):
        assert cfg.algorithm.adv_estimator == "mathse_rft"
        assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "mathse_rft"
    else:
        assert cfg.algorithm.adv_estimator == "grpo"

    # verl's typed configs accept the sections it converts to dataclasses.
    from verl.utils.config import omega_conf_to_dataclass

    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)

    # Every name the recipe uses resolves in verl's registries, and our sections parse.
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    from verl.trainer.ppo.v1 import get_trainer_cls

    from mathse_rl.integrations.verl.agent_loop import resolve_options
    from mathse_rl.integrations.verl.algos import RFTConfig

    get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    get_policy_loss_fn(cfg.actor_rollout_ref.actor.policy_loss.loss_mode)
    get_reward_manager_cls(cfg.reward.reward_manager.name)
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop in _agent_loop_registry
    assert get_trainer_cls(cfg.trainer.v1.trainer_mode).__name__ == "MathSETrainer"
    RFTConfig.from_algorithm(cfg.algorithm)
    from mathse_rl.integrations.verl.wiring import check_wiring

    check_wiring(cfg)  # the start-up check main_ppo runs passes
    step, options = resolve_options(cfg)
    assert step.reflect.enabled and step.reflect.attempts == 1 and options.reflect_mode == "add"


def test_a_typo_is_caught(base):
    # The check above can fail: a misspelt command-line key is rejected by the composition.
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_recipe("mathse_rft_geo3k", ["actor_rollout_ref.rollout.tensor_parallel_size=1"])
    assert not has_key(base, "actor_rollout_ref.rollout.tensor_parallel_size")
    assert has_key(base, "actor_rollout_ref.rollout.name")  # a key whose value is ??? still counts
