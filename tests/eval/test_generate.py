"""``mathse-rl eval --model``: a tiny model answers every benchmark's miniature release through the
loop's own generator (transformers here; vLLM is the same interface); a killed run resumes to the
same files as a run that was never stopped."""

from __future__ import annotations

import json

import pytest

from mathse_rl.cli import main
from mathse_rl.eval import get_benchmark, load_benchmark
from mathse_rl.eval.run import EvalInputError, EvalSettings, make_generator, run_eval



@pytest.mark.parametrize("name", ["mathvista", "mathverse", "mathvision", "gsm8k", "math500"])
def test_a_tiny_model_answers_each_benchmark(name, releases, tiny_vlm_path, tiny_lm_path, tmp_path, capsys):
    model = tiny_lm_path if name in ("gsm8k", "math500") else tiny_vlm_path
    out = tmp_path / "out"
    code = main(["eval", "-b", name, "-d", str(releases[name]), "-m", model, "-o", str(out), "--backend", "hf",
                 "--max-new-tokens", "3", "--batch-size", "4", "--no-progress"])
    assert code == 0
    _, problems, _ = load_benchmark(name, releases[name])
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [r["id"] for r in responses] == [p.id for p in problems]
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["total"] == len(problems) and results["model"] == model
    assert results["missing_responses"] == [] and "overall:" in capsys.readouterr().out


class Recording:
    """The real generator, recording what it is asked; ``fail_on`` makes one call die like a kill."""

    def __init__(self, inner, fail_on: int | None = None):
        self.inner, self.fail_on, self.calls = inner, fail_on, []

    def generate(self, messages, images, **kw):
        self.calls.append((messages, images, kw))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt("killed")
        return self.inner.generate(messages, images, **kw)


@pytest.fixture(scope="module")
def vlm_generator(tiny_vlm_path):
    return make_generator(EvalSettings(benchmark="mathvista", data="", model=tiny_vlm_path, backend="hf",
                                       batch_size=2))


def settings(releases, out, model, **kw) -> EvalSettings:
    return EvalSettings(benchmark="mathvista", data=str(releases["mathvista"]), model=model, out=str(out),
                        max_new_tokens=6, batch_size=2, progress=False, **kw)


def test_official_prompt_and_images_reach_the_model(releases, tiny_vlm_path, vlm_generator, tmp_path):
    gen = Recording(vlm_generator)
    run_eval(settings(releases, tmp_path / "o", tiny_vlm_path), generator=gen, printer=lambda _: None)
    bench = get_benchmark("mathvista")
    _, problems, _ = load_benchmark(bench, releases["mathvista"], need_images=True)
    asked = [m for messages, _, _ in gen.calls for m in messages]
    assert len(gen.calls) == 3 and all(kw["temperature"] == 0.0 for _, _, kw in gen.calls)
    for chat, problem in zip(asked, problems):
        parts = chat[0]["content"]
        assert parts[0] == {"type": "image"} and parts[-1]["text"] == bench.prompt(problem, "official")
    assert gen.calls[0][1][0][0].endswith("images/1.jpg")


def test_a_killed_eval_resumes_to_the_same_files(releases, tiny_vlm_path, vlm_generator, tmp_path):
    whole = tmp_path / "whole"
    run_eval(settings(releases, whole, tiny_vlm_path), generator=vlm_generator, printer=lambda _: None)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # killed while generating the second of three batches
        run_eval(settings(releases, cut, tiny_vlm_path), generator=Recording(vlm_generator, fail_on=2),
                 printer=lambda _: None)
    assert len((cut / "responses.jsonl").read_text().splitlines()) == 2 and not (cut / "results.json").exists()
    third = (whole / "responses.jsonl").read_text().splitlines()[2]
    with open(cut / "responses.jsonl", "a") as f:  # a write the kill cut short: problem 3 whole, 4 in part
        f.write(third + '\n{"id": "4", "respo')
    again = Recording(vlm_generator)
    run_eval(settings(releases, cut, tiny_vlm_path), generator=again, printer=lambda _: None)
    # Only the unfinished batches run again, each as it was first formed ([3, 4], then [5]): a batched
    # engine's greedy output may depend on what else is in the batch.
    assert [[imgs[0].rsplit("/", 1)[1] for imgs in call[1]] for call in again.calls] == [["3.jpg", "4.jpg"], ["5.jpg"]]
    files = sorted(p.name for p in whole.iterdir())
    assert files == sorted(p.name for p in cut.iterdir())
    assert {"responses.jsonl", "predictions.jsonl", "results.json", "results.md", "output_vlm-xs.json"} <= set(files)
    for name in files:
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name


def test_resuming_with_other_settings_is_refused(releases, tiny_vlm_path, vlm_generator, tmp_path):
    run_eval(settings(releases, tmp_path, tiny_vlm_path, limit=1), generator=vlm_generator, printer=lambda _: None)
    with pytest.raises(EvalInputError, match="other settings.*max_new_tokens"):
        run_eval(EvalSettings(**{**settings(releases, tmp_path, tiny_vlm_path, limit=1).__dict__,
                                 "max_new_tokens": 7}), generator=vlm_generator, printer=lambda _: None)


def test_wandb_table_holds_images_responses_and_verdicts(releases, tmp_path, monkeypatch, capsys):
    from .conftest import FIXTURES

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert main(["eval", "-b", "mathvista", "-d", str(releases["mathvista"]), "-r",
                 str(FIXTURES / "mathvista_output.json"), "-o", str(out), "--report-to", "wandb",
                 "--no-progress"]) == 0
    (run,) = (out / "wandb").glob("offline-run-*")
    (table,) = run.glob("files/media/table/eval/mathvista/testmini_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:4] == ["id", "image", "question", "response"]
    first = dict(zip(data["columns"], data["data"][0]))
    assert first["image"]["_type"] == "image-file" and first["correct"] is True and first["prediction"] == "1.2"
    assert len(data["data"]) == 5


def test_vllm_backend_is_the_loops_engine_split_with_tensor_and_data_parallel(releases, tmp_path, monkeypatch):
    """``--backend vllm`` builds the offline loop's VLLMGenerator: 2 engines x tensor parallel 2 on
    four visible GPUs, the prompts split between the engines and the answers back in problem order,
    images passed as vLLM's multi_modal_data. vLLM itself is not installed here: a stand-in with
    ``vllm.LLM``'s offline interface (``tests/evolve/fake_vllm.py``) answers."""
    from pathlib import Path

    from mathse_rl.integrations.trl.backends import VLLMGenerator

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "evolve"))
    monkeypatch.setattr(VLLMGenerator, "engine", "fake_vllm:FakeLLM")
    monkeypatch.setattr(VLLMGenerator, "sampling", "fake_vllm:FakeParams")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "out"
    run_eval(EvalSettings(benchmark="mathvista", data=str(releases["mathvista"]), model=str(model), out=str(out),
                          backend="vllm", tensor_parallel_size=2, data_parallel_size=2, batch_size=5,
                          engine_options={"gpu_memory_utilization": 0.85}, progress=False), printer=lambda _: None)
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [r["id"] for r in responses] == ["1", "2", "3", "4", "5"]
    assert [r["response"].split()[0] for r in responses] == ["gpus=4,5"] * 3 + ["gpus=6,7"] * 2
    assert all(" tp=2 " in r["response"] and " images=1 " in r["response"] for r in responses)
    assert responses[1]["response"].endswith("(D) 122")  # the official prompt reached the engine
