"""Reading the releases' files in their own forms; every unusable row listed with its reason."""

from __future__ import annotations

import io
import json

import pytest

from mathse_rl.eval import get_benchmark, load_benchmark, parse_ref
from mathse_rl.eval.responses import read_responses

from .conftest import FIXTURES


def _png(colour=(1, 2, 3)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (12, 9), colour).save(buf, format="PNG")
    return buf.getvalue()


def hf_rows() -> list[dict]:
    """The fixture rows as the Hugging Face dataset stores them: the image inside ``decoded_image``,
    ``precision`` a float, ``metadata`` a struct, and the prompt in ``query``."""
    rows = []
    for pid, row in json.loads((FIXTURES / "mathvista_testmini.json").read_text()).items():
        rows.append({**row, "precision": None if row["precision"] is None else float(row["precision"]),
                     "decoded_image": {"bytes": _png((int(pid), 0, 0)), "path": f"{pid}.jpg"},
                     "query": f"as released {pid}"})
    return rows


def test_mathvista_repository_json_keyed_by_pid(releases):
    bench, problems, bad = load_benchmark("mathvista", releases["mathvista"], need_images=True)
    assert bad == [] and [p.id for p in problems] == ["1", "2", "3", "4", "5"]
    assert problems[0].images[0].endswith("data/images/1.jpg") and problems[0].meta["precision"] == 1
    assert problems[1].choices == ("97", "102", "107", "122") and problems[1].gold == "102"


def test_mathvista_hugging_face_parquet_shards_with_images_inside(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder = tmp_path / "AI4Math-MathVista" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(hf_rows()), folder / "testmini-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(hf_rows()[:1]), folder / "test-00000-of-00001.parquet")  # another split
    bench, problems, bad = load_benchmark("mathvista", folder.parent, "testmini", need_images=True)
    assert bad == [] and len(problems) == 5
    assert isinstance(problems[2].images[0], Image.Image) and problems[2].images[0].getpixel((0, 0)) == (3, 0, 0)
    assert problems[0].meta["precision"] == 1 and bench.prompt(problems[0]) == "as released 1"
    assert bench.categories(problems[0])["skills"] == ["scientific reasoning", "arithmetic reasoning"]


def test_datasets_save_to_disk_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"testmini": Dataset.from_list(hf_rows())}).save_to_disk(str(tmp_path / "mv"))
    _, problems, bad = load_benchmark("mathvista", tmp_path / "mv", "testmini", need_images=True)
    assert bad == [] and len(problems) == 5


def test_bad_rows_are_listed_with_their_reason(tmp_path, releases):
    rows = json.loads(releases["mathvista"].read_text())
    rows["2"]["answer"] = "103"  # not one of the choices
    del rows["3"]["question_type"]
    rows["4"]["image"] = "images/gone.jpg"
    rows["6"] = rows["5"] | {"pid": "5"}  # the same pid again
    path = releases["mathvista"].with_name("broken.json")
    path.write_text(json.dumps(rows))
    _, problems, bad = load_benchmark("mathvista", path, need_images=True)
    reasons = {b.id: b.reason for b in bad}
    assert [p.id for p in problems] == ["1", "5"]
    assert "not one of the choices" in reasons["2"]
    assert "missing field question_type" in reasons["3"]
    assert reasons["4"].startswith("missing image:") and "gone.jpg" in reasons["4"]
    assert reasons["5"] == "duplicate id"
    # Scoring existing responses needs no image: the row with the missing image is kept.
    _, kept, bad = load_benchmark("mathvista", path, need_images=False)
    assert "4" in [p.id for p in kept] and "4" not in {b.id for b in bad}


def test_malformed_json_lines_are_bad_rows(tmp_path):
    path = tmp_path / "test.jsonl"
    lines = (FIXTURES / "mathvision_test.jsonl").read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", '["a list"]', lines[1]]) + "\n")
    _, problems, bad = load_benchmark("mathvision", path)
    assert [p.id for p in problems] == ["1", "2"]
    assert [b.reason.split(":")[0] for b in bad] == ["malformed row", "malformed row"]
    assert "line 2 is not valid JSON" in bad[0].reason


def test_unknown_benchmark_and_split():
    with pytest.raises(KeyError, match="unknown benchmark 'mathvist'.*did you mean 'mathvista'"):
        get_benchmark("mathvist")
    with pytest.raises(ValueError, match="mathvista has no split 'val'"):
        get_benchmark("mathvista").check_split("val")
    assert parse_ref("mathvista:testmini:/data/testmini.json") == ("mathvista", "testmini", "/data/testmini.json")
    assert parse_ref("hf:AI4Math/MathVista:testmini") is None and parse_ref("heldout.jsonl") is None
    with pytest.raises(KeyError, match="unknown benchmark 'mathvsta'"):
        parse_ref("mathvsta:testmini:x.json")


def test_responses_in_the_releases_own_formats():
    vista = get_benchmark("mathvista")
    got, bad = read_responses(FIXTURES / "mathvista_output.json", vista)
    assert bad == [] and got["2"].endswith("**(B) 102**.")
    got, bad = read_responses(FIXTURES / "mathvision_output.jsonl", get_benchmark("mathvision"))
    assert bad == [] and got["2"] == "Kite C has the most segments. \\boxed{C}"
    template = [{**r, "model_answer": f"answer {r['sample_index']}"}
                for r in json.loads((FIXTURES / "mathverse_testmini.json").read_text())]
    assert get_benchmark("mathverse").outputs(template)["15"] == "answer 15"


def test_program_of_thought_outputs_are_read_by_what_the_program_printed(tmp_path):
    path = tmp_path / "output_gpt4_2shot_code.json"
    path.write_text(json.dumps({"7": {"pid": "7", "response": "print(2 + 5)", "execution": "7", "error": "None"}}))
    got, _ = read_responses(path, get_benchmark("mathvista"))
    assert got == {"7": "7"}  # the program is never run here


def test_jsonl_of_id_and_response_with_bad_lines(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join([json.dumps({"id": "1", "response": "60"}), "oops",
                               json.dumps({"response": "no id"}), json.dumps({"id": "2", "response": None}),
                               json.dumps({"id": "1", "response": "again"}), json.dumps({"pid": "3", "response": "x"})]))
    got, bad = read_responses(path, get_benchmark("mathvision"))
    assert got == {"1": "60", "3": "x"}
    assert [b.id for b in bad] == ["line2", "line3", "2", "1"]
    assert "duplicate" in bad[-1].reason
