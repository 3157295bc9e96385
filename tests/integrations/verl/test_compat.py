"""The trl clash: verl's FSDP model patching must work with trl 1.16 installed.

Each case runs in a fresh interpreter so that ``import verl`` (and with it our plugin)
happens exactly as in a verl worker.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PATCH_MODEL = """
import verl
from transformers import AutoModelForCausalLM
from verl.models.transformers.monkey_patch import apply_monkey_patch
apply_monkey_patch(AutoModelForCausalLM.from_pretrained({path!r}))
print("PATCHED")
"""


def run_fresh(code: str, plugins: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS=plugins)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trl_lacks_value_head():
    from mathse_rl.integrations.verl.compat import trl_value_head_available

    if trl_value_head_available():
        pytest.skip("the installed trl still has AutoModelForCausalLMWithValueHead: no clash to fix")


def test_verl_model_patching_fails_without_our_plugin(tiny_lm_path, trl_lacks_value_head):
    # The clash is real: with plugins disabled verl crashes while patching the actor model.
    proc = run_fresh(PATCH_MODEL.format(path=str(tiny_lm_path)), plugins="none")
    assert proc.returncode != 0
    assert "AutoModelForCausalLMWithValueHead" in proc.stderr


def test_verl_model_patching_works_with_our_plugin(tiny_lm_path, trl_lacks_value_head):
    proc = run_fresh(PATCH_MODEL.format(path=str(tiny_lm_path)), plugins="auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PATCHED" in proc.stdout


def test_shim_only_changes_the_answer_when_trl_lacks_the_class(trl_lacks_value_head):
    import verl  # noqa: F401  (loads the plugin, which installs the shim)
    import verl.utils.import_utils as import_utils

    from mathse_rl.integrations.verl import compat

    assert compat.shim_installed()
    original = import_utils.is_trl_available.__wrapped__
    assert original() is True  # trl is installed...
    assert import_utils.is_trl_available() is False  # ...but unusable for verl's value head
    assert compat.install_trl_shim() is False  # idempotent: a second install does nothing
    assert import_utils.is_trl_available.__wrapped__ is original
