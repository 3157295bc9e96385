"""build-data → train → eval on CPU: the tiny VLM learns the judgment format and is measured."""

from __future__ import annotations

import json

from mathse_rl.cli import main
from mathse_rl.orm import evaluate_judge, format_table, load_judge
from mathse_rl.orm.data import load_orm_split


def test_build_data_is_balanced_split_and_in_trl_format(orm_dataset):
    ds = orm_dataset
    assert ds.stats["kept/CORRECT"] == ds.stats["kept/WRONG"] == 20
    assert (len(ds.train), len(ds.test)) == (32, 8)
    assert sum(r["label"] == "WRONG" for r in ds.test) == 4  # the test split is stratified
    row = next(r for r in ds.train if r["label"] == "WRONG")
    assert row["prompt"][0]["content"][0] == {"type": "image"} and len(row["images"]) == 1
    target = json.loads(row["completion"][0]["content"])
    assert target["status"] == "WRONG" and target["error_step"] == row["error_step"] and target["error_analysis"]


def test_round_trip_build_train_eval(trained_judge, toy_items, tiny_vlm_path, orm_dataset):
    path, summary = trained_judge
    assert summary["steps"] == summary["config"]["max_steps"] > 0
    losses = summary["losses"]
    assert losses[-1] < 0.5 * losses[0]
    items, labels = toy_items
    after = evaluate_judge(load_judge({"backend": "local", "model": path, "max_new_tokens": 48}), items, labels)
    table = format_table(after)
    print(table)
    # Free decoding (no status constraint): random weights never write a judgment.
    free = {"backend": "local", "max_new_tokens": 48, "constrain_status": False}
    before_free = evaluate_judge(load_judge({**free, "model": tiny_vlm_path}), items, labels)
    assert before_free["parse_failure_rate"] == 1.0
    # What fine-tuning must do on paths it never saw: make the right judgment text far more
    # likely. (Whether a judge this small already writes whole judgments greedily after a few
    # dozen CPU steps depends on float details, so the test measures likelihood instead.)
    held_out = orm_dataset.test
    assert _judgment_nll(path, held_out) < 0.5 * _judgment_nll(tiny_vlm_path, held_out)
    assert after["parse_failure_rate"] == 0.0  # a constrained status always parses
    for key in ("positive_accuracy", "negative_accuracy", "overall_accuracy", "first_error_step_accuracy",
                "processbench_f1"):
        assert after[key] is not None and 0.0 <= after[key] <= 1.0
    assert after["n_positive"] == after["n_negative"] == 4 and after["n_step_labelled"] == 4
    assert "| overall accuracy |" in table and "ProcessBench-style F1" in table


def test_cli_build_data_train_and_eval(tmp_path, capsys, tiny_vlm_path):
    out = tmp_path / "data"
    assert main(["orm", "build-data", "--toy", "12", "--out", str(out), "--test-fraction", "0.5"]) == 0
    rows = load_orm_split(out / "test.jsonl")
    assert len(rows) == 6 and rows[0]["images"][0].size == (56, 56)
    report_path = tmp_path / "report.json"
    assert main(["orm", "eval", "--backend", "verifier", "--data", str(out / "test.jsonl"),
                 "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    # the toy rows carry reference steps, so the rule judge locates every first error
    assert report["overall_accuracy"] == 1.0 and report["first_error_step_accuracy"] == 1.0
    assert "| overall accuracy | 100.00% |" in printed
    # train one step from the files build-data wrote, then evaluate the saved judge
    judge_dir = tmp_path / "judge"
    assert main(["orm", "train", "--model", tiny_vlm_path, "--data", str(out / "train.jsonl"),
                 "--output", str(judge_dir), "--max-steps", "1", "--batch-size", "2", "--use-cpu"]) == 0
    assert json.loads((judge_dir / "orm_train.json").read_text())["steps"] == 1
    assert main(["orm", "eval", "--backend", "local", "--model", str(judge_dir), "--data", str(out / "test.jsonl"),
                 "--max-new-tokens", "12", "--limit", "2"]) == 0
    assert "ORM evaluation (local, n=2" in capsys.readouterr().out


def _judgment_nll(model_path, rows) -> float:
    """Mean per-token negative log-likelihood of the reference judgments (completions) of ``rows``."""
    import torch

    from mathse_rl.models.tiny import load_tiny

    model, processor = load_tiny(model_path)
    total, count = 0.0, 0
    for row in rows:
        prompt = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        enc = processor(text=[full], images=row["images"], return_tensors="pt")
        n_prompt = processor(text=[prompt], images=row["images"], return_tensors="pt")["input_ids"].shape[1]
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = -100
        with torch.no_grad():
            loss = model(**enc, labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * n, count + n
    return total / count
