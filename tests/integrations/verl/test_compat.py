"""The trl clash: verl's FSDP model patching must work with trl 1.16 installed.

The end-to-end evidence (a fresh interpreter patches a model through verl with our plugin,
and fails without it) is in test_plugin.py; here, the shim's own behaviour.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def trl_lacks_value_head():
    from mathse_rl.integrations.verl.compat import trl_value_head_available

    if trl_value_head_available():
        pytest.skip("the installed trl still has AutoModelForCausalLMWithValueHead: no clash to fix")


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
