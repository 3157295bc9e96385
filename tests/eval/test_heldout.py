"""A benchmark as the offline loop's held-out set (``data.eval=mathvista:testmini:PATH``): read from
the release, asked with its prompt, scored by its rules, reported with its categories."""

from __future__ import annotations

import json

import pytest

from mathse_rl.eval import get_benchmark, load_eval_set
from mathse_rl.evolve.config import ConfigError, check_paths, load_config
from mathse_rl.evolve.evaluate import evaluate
from mathse_rl.step import Judge
from mathse_rl.types import Problem


class Scripted:
    """A policy with fixed answers per question text; records the prompts it is given."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.prompts = answers, []

    def generate(self, messages, images, *, n, temperature, max_new_tokens):
        out = []
        for m in messages:
            content = m[-1]["content"]
            text = content if isinstance(content, str) else content[-1]["text"]
            self.prompts.append(text)
            out.append([next((a for q, a in self.answers.items() if q in text), "no idea")] * n)
        return out

    def load(self, model_path):
        pass


def test_benchmark_ref_passes_the_config_check_and_a_typo_fails_it(releases, tmp_path):
    ok = load_config(overrides=[f"data.eval=mathvista:testmini:{releases['mathvista']}"])
    check_paths(ok, model=False)
    with pytest.raises(ConfigError, match="data.eval: unknown benchmark 'mathvsta'"):
        check_paths(load_config(overrides=[f"data.eval=mathvsta:testmini:{releases['mathvista']}"]), model=False)
    with pytest.raises(ConfigError, match="data.eval not found"):
        check_paths(load_config(overrides=[f"data.eval=mathvista:testmini:{tmp_path}/none.json"]), model=False)


def test_heldout_benchmark_problems_use_its_prompt_rules_and_categories(releases):
    problems, bad = load_eval_set(f"mathvista:testmini:{releases['mathvista']}")
    assert bad == [] and problems[0].id == "mathvista/testmini/1"  # never collides with training ids
    plain = Problem(id="p1", question="What is 2 + 3?", gold="5")
    gen = Scripted({"angle H": "The answer is (B) 102.", "bars have a value": "about 14.3",
                    "block slides": "no idea", "two years": "[2014, 2016]", "red bar": "(A) Yes",
                    "2 + 3": "The answer to this problem is 5."})
    res = evaluate(gen, Judge("verifier"), problems + [plain], batch_size=4)
    # 2 (option B), 3 (14.3 truncated to 14: the release's integer rule, which the verifier alone rejects),
    # 4 (the list) and the plain problem are right; 1 and 5 are wrong.
    assert res["accuracy"] == pytest.approx(4 / 6)
    assert [e["correct"] for e in res["examples"]] == [False, True, True, True, False, True]
    table = res["benchmarks"]["mathvista:testmini"]
    assert (table["correct"], table["total"]) == (3, 5)
    assert table["categories"]["question_type"]["multi_choice"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    bench = get_benchmark("mathvista")
    assert gen.prompts[1] == bench.prompt(problems[1]) and gen.prompts[1].startswith("Hint:")
    assert "The answer to this problem is" in gen.prompts[5]  # the plain problem keeps the solve prompt
    assert Judge("verifier").judge([problems[2]], ["about 14.3"])[0].correct is False


def test_the_evolve_command_reads_a_benchmark_as_its_heldout_set(releases, tmp_path, tiny_lm_path, monkeypatch):
    import mathse_rl.evolve.loop as loop
    from mathse_rl.evolve.cli import _run

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "1", "question": "What is 1 + 1?", "answer": "2"}) + "\n")
    seen = {}

    def fake_run_evolve(cfg, train_problems, heldout, **kw):
        seen["heldout"] = heldout
        raise SystemExit(0)

    monkeypatch.setattr(loop, "run_evolve", fake_run_evolve)

    class Args:
        config, resume, print_config = None, False, False
        overrides = [f"model={tiny_lm_path}", f"data.train={train}",
                     f"data.eval=mathvista:testmini:{releases['mathvista']}", f"output_dir={tmp_path / 'run'}"]

    with pytest.raises(SystemExit):
        _run(Args())
    assert [p.id for p in seen["heldout"]][:2] == ["mathvista/testmini/1", "mathvista/testmini/2"]
    assert seen["heldout"][1].meta["benchmark"] == "mathvista"
