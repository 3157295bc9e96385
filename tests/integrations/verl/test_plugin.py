"""A fresh ``import verl`` registers all of mathse-rl's names, through the ``verl.plugins``
entry point alone (each check runs in a new interpreter that imports nothing of ours),
and verl's FSDP model patching works although trl 1.16 (our ``trl`` extra) is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import importlib, json, sys
if len(sys.argv) > 2:  # a module of ours imported first, as a user's script may
    importlib.import_module(sys.argv[2])
import verl  # otherwise the only import: verl loads our plugin from the entry point
from hydra.utils import get_class
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

def resolve(fn, *args):
    try:
        obj = fn(*args)
        if isinstance(obj, str):
            return obj
        return getattr(obj, "__module__", "") + "." + getattr(obj, "__qualname__", type(obj).__name__)
    except Exception as exc:
        return "ERROR " + type(exc).__name__ + ": " + str(exc)[:200]

out = {
    "reward_manager": resolve(get_reward_manager_cls, "mathse"),
    "adv_estimator": resolve(get_adv_estimator_fn, "mathse_rft"),
    "policy_loss": resolve(get_policy_loss_fn, "mathse_rft"),
    "agent_loop": resolve(lambda n: get_class(_agent_loop_registry[n]["_target_"]), "mathse_reflect"),
    "trainer": resolve(get_trainer_cls, "mathse"),
}
def patch_model(path):
    # What verl's FSDP engine does to every actor model; it imports trl's value-head class.
    from transformers import AutoModelForCausalLM
    from verl.models.transformers.monkey_patch import apply_monkey_patch
    apply_monkey_patch(AutoModelForCausalLM.from_pretrained(path))
    return "patched"

out["model_patch"] = resolve(patch_model, sys.argv[1])
plugin = sys.modules.get("mathse_rl.integrations.verl.plugin")
out["plugin_loaded"] = plugin is not None
out["errors"] = {} if plugin is None else {
    k: v for k, v in {**plugin.COMPAT_STATUS, **plugin.REGISTRATION_STATUS}.items() if v}
print("PROBE" + json.dumps(out))
"""


def probe(plugins: str, model_path: str, first: str | None = None) -> dict:
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS=plugins)
    argv = [sys.executable, "-c", PROBE, str(model_path)] + ([first] if first else [])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


def test_fresh_import_verl_resolves_every_mathse_name(tiny_lm_path):
    out = probe("auto", tiny_lm_path)
    assert out["plugin_loaded"] and out["errors"] == {}
    assert out["reward_manager"].startswith("mathse_rl.integrations.verl.reward_manager.")
    assert out["adv_estimator"] == "mathse_rl.integrations.verl.algos.compute_mathse_rft_advantage"
    assert out["policy_loss"] == "mathse_rl.integrations.verl.algos.compute_mathse_rft_loss"
    assert out["agent_loop"] == "mathse_rl.integrations.verl.agent_loop.MathSEReflectAgentLoop"
    assert out["trainer"] == "mathse_rl.integrations.verl.trainer.MathSETrainer"
    assert out["model_patch"] == "patched"  # the trl shim let verl patch the model


def test_importing_our_agent_loop_first_still_registers_every_name(tiny_lm_path):
    # Importing the agent loop imports verl, whose plugin imports our trainer, which must not
    # need the half-imported agent loop (it once did, and the ``mathse`` trainer went missing).
    out = probe("auto", tiny_lm_path, first="mathse_rl.integrations.verl.agent_loop")
    assert out["errors"] == {}, out["errors"]
    assert out["trainer"] == "mathse_rl.integrations.verl.trainer.MathSETrainer"
    assert out["agent_loop"] == "mathse_rl.integrations.verl.agent_loop.MathSEReflectAgentLoop"


def test_without_the_plugin_verl_knows_none_of_them_and_hits_the_trl_clash(tiny_lm_path):
    # The probe can fail: with verl's plugin discovery off, every lookup misses...
    out = probe("none", tiny_lm_path)
    assert not out["plugin_loaded"]
    for key in ("reward_manager", "adv_estimator", "policy_loss", "agent_loop", "trainer"):
        assert out[key].startswith("ERROR"), (key, out[key])
    # ...and, with trl 1.16 installed, verl's model patching dies on the missing trl class.
    from mathse_rl.integrations.verl.compat import trl_value_head_available

    if not trl_value_head_available():
        assert out["model_patch"].startswith("ERROR ImportError") and "AutoModelForCausalLMWithValueHead" in out["model_patch"]
