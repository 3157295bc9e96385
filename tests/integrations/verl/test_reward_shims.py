"""The top-level `rewards/*.py` path shims, loaded the way verl loads a custom reward file."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_path_shims_load_like_verl_loads_them():
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object(module_path=os.path.join(REPO, "rewards", "verifier.py"), object_name="compute_score")
    assert fn("d", "The answer to this problem is 5.", "5")["score"] == 1.0
    assert fn("d", "The answer to this problem is 4.", "5")["score"] == 0.0
    # reward_kwargs from the config still win over the file's default
    assert fn("d", "The answer to this problem is 4.", "5", reward="format")["score"] == 1.0


def test_orm_shim_is_a_coroutine_verl_awaits():
    import asyncio
    import inspect

    from verl.utils.import_utils import load_extern_object

    orm = load_extern_object(module_path=os.path.join(REPO, "rewards", "orm.py"), object_name="compute_score")
    assert inspect.iscoroutinefunction(orm)  # verl's test for awaiting instead of a thread
    # the ORM's rule-verifier backend needs no model
    result = asyncio.run(orm("d", "The answer to this problem is 5.", "5", reward_options={"backend": "verifier"}))
    assert result["score"] == 1.0 and {"status", "source"} <= set(result)


def test_shims_also_give_trl_reward_functions_by_dotted_path(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(REPO)  # what `trl grpo` does with the working directory
    module = importlib.import_module("rewards.verifier")
    f = module.verifier
    assert f.__name__ == "verifier"
    assert f(prompts=["q"], completions=["The answer to this problem is 5."], solution=["5"]) == [1.0]
