"""``mathse-rl eval --responses``: existing outputs scored, tables printed, results written; bad input
is a clear error before any work."""

from __future__ import annotations

import json

from mathse_rl.cli import main

from .conftest import FIXTURES


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["eval", "--no-progress", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mathvista_outputs_scored_with_tables_and_the_release_files(tmp_path, releases, capsys):
    out = tmp_path / "out"
    code, printed, _ = run(capsys, "--benchmark", "mathvista", "--data", releases["mathvista"],
                           "--responses", FIXTURES / "mathvista_output.json", "--out", out)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    # 1 (1.2), 2 ((B) 102), 3 (14.3 -> int 14) right; 4 ([2013, 2016]) wrong; 5 names no option: by the
    # release's rule it gets the option most similar to what stands for its extraction (the response: "Yes").
    assert results["overall"] == {"correct": 3, "total": 5, "accuracy": 60.0}
    assert list(results["categories"]) == ["question_type", "answer_type", "language", "source", "category",
                                           "task", "context", "grade", "skills"]
    assert results["categories"]["answer_type"]["list"] == {"correct": 0, "total": 1, "accuracy": 0.0}
    assert results["categories"]["skills"]["statistical reasoning"]["total"] == 3
    assert results["reasons"]["nearest_option"] == 1 and results["reasons"]["precision"] == 1
    assert "no LLM call" in results["scorer"] and "CC BY-SA 4.0" in results["license"]
    assert "overall: 60.00% (3/5)" in printed and "| multi_choice | 1 | 2 | 50.00 |" in printed
    assert (out / "results.md").read_text() in printed
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["1", "2", "3", "4", "5"]
    assert preds[1]["prediction"] == "102" and preds[2]["prediction"] == "14"
    assert (preds[4]["prediction"], preds[4]["reason"]) == ("Yes", "nearest_option")
    # The release's own layout: its calculate_score.py reads output_<model>.json, its scores file beside it.
    release = json.loads((out / "output_mathvista_output.json").read_text())
    assert release["2"]["true_false"] is True and release["2"]["prediction"] == "102"
    assert release["2"]["metadata"]["task"] == "geometry problem solving"
    scores = json.loads((out / "scores_mathvista_output.json").read_text())
    assert scores["average"] == {"accuracy": 0.6, "correct": 3, "total": 5}


def test_missing_and_unknown_responses_are_listed_never_dropped(tmp_path, releases, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"id": "1", "response": "60"}, {"id": "3", "response": "60"},
                                                      {"id": "99", "response": "x"}, {"id": "2"}]))
    out = tmp_path / "out"
    code, printed, _ = run(capsys, "-b", "mathvision", "-d", releases["mathvision"], "-r", path, "-o", out)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["overall"] == {"correct": 1, "total": 4, "accuracy": 25.0}  # 2 and 4 have no response: wrong
    assert results["missing_responses"] == ["2", "4"]
    assert {r["id"] for r in results["extra_responses"]} == {"99", "2"}
    assert "2 problems without a response (counted wrong)" in printed
    assert results["categories"]["level"]["level2"] == {"correct": 1, "total": 2, "accuracy": 50.0}


def test_unknown_benchmark_is_a_clear_error(tmp_path, releases, capsys):
    code, _, err = run(capsys, "-b", "mathvist", "-d", releases["mathvista"], "-r", releases["mathvista"],
                       "-o", tmp_path)
    assert code == 2 and "unknown benchmark 'mathvist'" in err and "mathvista" in err


def test_malformed_rows_stop_the_run_and_are_listed_unless_skipped(tmp_path, releases, capsys):
    rows = json.loads(releases["mathvista"].read_text())
    del rows["3"]["answer_type"]
    rows["4"]["choices"] = "not a list"
    broken = releases["mathvista"].with_name("broken.json")
    broken.write_text(json.dumps(rows))
    code, _, err = run(capsys, "-b", "mathvista", "-d", broken, "-r", FIXTURES / "mathvista_output.json",
                       "-o", tmp_path / "a")
    assert code == 2 and "2 of 5 rows" in err and "3: malformed row: missing field answer_type" in err
    assert "4: malformed row: choices" in err and not (tmp_path / "a" / "results.json").exists()
    code, _, _ = run(capsys, "-b", "mathvista", "-d", broken, "-r", FIXTURES / "mathvista_output.json",
                     "-o", tmp_path / "b", "--skip-bad-rows")
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert code == 0 and results["overall"]["total"] == 3 and [b["id"] for b in results["bad_rows"]] == ["3", "4"]


def test_missing_image_is_an_error_when_a_model_must_see_it(tmp_path, releases, capsys):
    (releases["mathvista"].parent / "images" / "2.jpg").unlink()
    code, _, err = run(capsys, "-b", "mathvista", "-d", releases["mathvista"], "-m", tmp_path / "no-model",
                       "-o", tmp_path / "out")
    assert code == 2 and "2: missing image:" in err and "--image-root" in err


def test_test_split_writes_the_submission_file(tmp_path, releases, capsys):
    rows = json.loads(releases["mathvista"].read_text())
    test = {pid: {**row, "answer": None, "metadata": {**row["metadata"], "split": "test"}} for pid, row in rows.items()}
    path = releases["mathvista"].with_name("test.json")
    path.write_text(json.dumps(test))
    out = tmp_path / "out"
    code, printed, _ = run(capsys, "-b", "mathvista", "-d", path, "--split", "test", "-r",
                           FIXTURES / "mathvista_output.json", "-o", out)
    assert code == 0 and "not scored (test answers are not public)" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["accuracy"] is None and results["categories"] == {}
    submission = json.loads((out / "output_test_mathvista_output.json").read_text())
    assert submission["2"]["prediction"] == "102" and "true_false" not in submission["2"]
    assert submission["3"]["prediction"] == "14" and submission["3"]["response"].startswith("Counting")


def test_list_prints_every_benchmark_with_its_source(capsys):
    code, printed, _ = run(capsys, "--list")
    assert code == 0
    for name in ("mathvista", "mathverse", "mathvision", "gsm8k", "math500"):
        assert name in printed
    assert "lupantech/MathVista" in printed and "licence" in printed
