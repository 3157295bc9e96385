"""The reward registry: names, composites, lazy names, entry points, errors that list names."""

from __future__ import annotations

import sys
import types

import pytest

from mathse_rl.rewards import Reward, get_reward, list_rewards, register_reward, unregister_reward
from mathse_rl.rewards import registry
from mathse_rl.types import RewardInput, RewardOutput


class Echo(Reward):
    """Scores the response as a float (a throwaway reward for tests)."""

    extras_keys = ("raw",)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def score(self, samples):
        return [RewardOutput(None if s.response == "skip" else float(s.response) * self.scale,
                             {"raw": s.response}) for s in samples]


@pytest.fixture
def echo():
    register_reward("echo")(Echo)
    yield
    unregister_reward("echo")


def batch(*responses: str) -> list[RewardInput]:
    return [RewardInput(question="q", response=r, gold="1") for r in responses]


def test_registered_name_builds_with_options(echo):
    reward = get_reward("echo", scale=2.0)
    assert isinstance(reward, Echo) and reward.name == "echo"
    assert [o.score for o in reward(batch("1", "0.5"))] == [2.0, 1.0]
    assert "echo" in list_rewards()


def test_builtins_are_listed():
    assert {"verifier", "format"} <= set(list_rewards())


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError) as err:
        get_reward("no-such-reward")
    assert "no-such-reward" in str(err.value) and "format" in str(err.value)
    with pytest.raises(KeyError, match="known rewards"):
        get_reward("format+no-such-reward")


def test_equal_weight_composite(echo):
    reward = get_reward("echo+format")
    assert reward.name == "echo+format"
    outs = reward(batch("1", "0", "skip"))
    assert [o.score for o in outs] == [1.0, 0.0, None]  # format scores 0 on these; a None part gives None
    assert list(outs[0].extras) == ["echo/score", "echo/raw", "format/score", "format/form", "format/pred"]


def test_weighted_composite_from_mapping_and_string(echo):
    samples = [RewardInput(question="q", response="The answer to this problem is 3.", gold="3")]
    from_map = get_reward({"echo": 0.0, "format": 0.1})
    from_str = get_reward("0*echo+0.1*format")
    assert from_map.name == from_str.name == "0*echo+0.1*format"
    # a zero-weight part may be None without sinking the sample
    assert from_map(samples)[0].score == pytest.approx(0.1)


def test_composite_routes_options(echo):
    reward = get_reward("echo+format", echo={"scale": 3.0})
    assert reward(batch("1"))[0].extras["echo/score"] == 3.0
    shared = get_reward("echo+format", scale=5.0)  # only echo accepts `scale`
    assert shared(batch("1"))[0].extras["echo/score"] == 5.0
    with pytest.raises(TypeError, match="accepts options"):
        get_reward("echo+format", nonsense=1)


def test_every_output_has_the_declared_extras_keys():
    class Sloppy(Reward):
        name = "sloppy"
        extras_keys = ("a", "b")

        def score(self, samples):
            return [RewardOutput(1, {"a": 1}), RewardOutput(0, {"b": 2, "c": 3})]

    outs = Sloppy()(batch("x", "y"))
    assert [dict(o.extras) for o in outs] == [{"a": 1, "b": None}, {"a": None, "b": 2}]
    assert [o.score for o in outs] == [1.0, 0.0]


def test_a_failing_sample_scores_none_and_the_batch_goes_on(echo):
    outs = get_reward("echo")(batch("1", "not-a-number", "2"))
    assert [o.score for o in outs] == [1.0, None, 2.0]


def test_lazy_name_is_absent_until_its_module_imports(monkeypatch):
    register_reward("lazy-test", "mathse_test_lazy_reward:Lazy")
    try:
        assert "lazy-test" not in list_rewards()
        with pytest.raises(KeyError, match="failed to import"):
            get_reward("lazy-test")
        module = types.ModuleType("mathse_test_lazy_reward")
        module.Lazy = Echo
        monkeypatch.setitem(sys.modules, "mathse_test_lazy_reward", module)
        assert "lazy-test" in list_rewards()
        assert isinstance(get_reward("lazy-test"), Echo)
    finally:
        unregister_reward("lazy-test")


def test_orm_is_listed_only_when_its_module_imports():
    import importlib.util

    present = importlib.util.find_spec("mathse_rl.orm.reward") is not None
    assert ("orm" in list_rewards()) == present


def test_entry_point_group_adds_names(monkeypatch):
    class FakeEP:
        name, value = "from-plugin", "mathse_test_ep_reward:Plugin"

    module = types.ModuleType("mathse_test_ep_reward")
    module.Plugin = Echo
    monkeypatch.setitem(sys.modules, "mathse_test_ep_reward", module)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [FakeEP()] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert "from-plugin" in list_rewards()
        assert get_reward("from-plugin").name == "from-plugin"
    finally:
        unregister_reward("from-plugin")


def test_rewards_package_imports_no_framework():
    import subprocess

    code = ("import sys, mathse_rl.rewards as r; r.get_reward('format'); r.list_rewards();"
            "print([m for m in ('trl','verl','ray','vllm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verifier_plus_orm_names_the_gated_reward_not_a_sum():
    pytest.importorskip("mathse_rl.orm.reward")
    reward = get_reward("verifier+orm", backend="verifier")  # the ORM's model-free backend
    assert type(reward).__name__ == "GatedORMReward" and reward.name == "verifier+orm"
    wrong = RewardInput(question="q", response="The answer to this problem is 4.", gold="5")
    right = RewardInput(question="q", response="The answer to this problem is 5.", gold="5")
    assert [o.score for o in reward([wrong, right])] == [0.0, 1.0]
