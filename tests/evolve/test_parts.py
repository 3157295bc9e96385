"""The loop's parts: config, durable pool and stage log, data loaders, pass@k, the openai refiner."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image

from mathse_rl.data.loaders import load_problems, load_seed_attempts
from mathse_rl.evolve import Pool, StageLog, load_config, pass_at_k
from mathse_rl.evolve.components import get_refiner, list_components
from mathse_rl.evolve.pool import atomic_write_text, normalise
from mathse_rl.types import Attempt, Judgment, Problem, Verdict

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- config
def test_defaults_are_the_papers_choices():
    cfg = load_config()
    assert cfg.rounds == 2 and cfg.reflect.when == "after" and cfg.reflect.template == "paper"
    # The paper reflects with a teacher (GPT-4o): auto reflects only when one is configured.
    assert cfg.pool.accumulate and cfg.reflect.refiner == "auto" and cfg.judge == "verifier"
    t = cfg.train
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_ratio, t.weight_decay) == (1e-5, "cosine", 0.1, 0.05)
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 128


@pytest.mark.parametrize("recipe", ["tiny_cpu.yaml", "qwen2_5_vl_7b.yaml", "qwen2_5_vl_7b_2nodes.yaml"])
def test_recipes_load_and_take_overrides(recipe):
    cfg = load_config(ROOT / "recipes" / "trl" / recipe, ["judge=orm", "critic.backend=local", "reflect.refiner=openai"])
    assert cfg.judge == "orm" and cfg.critic["backend"] == "local" and cfg.reflect.refiner == "openai"


def test_an_orm_judge_shares_the_critics_orm_unless_told_otherwise():
    from mathse_rl.evolve.config import judge_options

    cfg = load_config(overrides=["judge=orm", "critic.backend=local", "critic.model=/ckpt/orm"])
    assert judge_options(cfg) == {"backend": "local", "model": "/ckpt/orm"}
    cfg = load_config(overrides=["judge=verifier+orm", "judge_options.backend=openai", "critic.backend=local"])
    assert judge_options(cfg) == {"backend": "openai"}
    assert judge_options(load_config()) == {}


@pytest.mark.parametrize("recipe,processes", [("qwen2_5_vl_7b.yaml", 8), ("qwen2_5_vl_7b_2nodes.yaml", 16)])
def test_qwen_recipe_uses_vllm_and_the_papers_sft_settings(recipe, processes):
    from mathse_rl.evolve.config import global_batch, world_size

    cfg = load_config(ROOT / "recipes" / "trl" / recipe)
    assert cfg.generate.backend == "vllm" and cfg.train.bf16
    assert (cfg.train.learning_rate, cfg.train.warmup_ratio, cfg.train.weight_decay) == (1e-5, 0.1, 0.05)
    assert world_size(cfg) == processes and global_batch(cfg) == cfg.train.global_batch_size == 128
    # the launcher config is found next to the recipe, whatever the working directory
    assert Path(cfg.launch.config_file).is_file() and cfg.launch.launcher == "accelerate"


@pytest.mark.parametrize("override,match", [("rounds=-1", "rounds"), ("reflect.when=sometimes", "reflect.when"),
                                            ("generate.n=0", "generate.n"), ("no_such_key=1", "no_such_key")])
def test_bad_config_fails_before_work(override, match):
    with pytest.raises(Exception, match=match):
        load_config(overrides=[override])


def test_components_are_chosen_by_name():
    names = list_components()
    assert {"hf", "vllm"} <= set(names["generator"]) and "sft" in names["trainer"]
    assert {"policy", "openai"} <= set(names["refiner"])
    with pytest.raises(KeyError, match="known"):
        get_refiner("nope", load_config(), None)


# ----------------------------------------------------------------------------- pool and stage log
def test_pool_dedups_by_normalised_text_caps_per_question_and_persists(tmp_path):
    pool = Pool(tmp_path / "pool.jsonl", max_per_question=2)
    a = Attempt("q", "Step 1: 2 + 2 = 4.\nThe answer to this problem is 4.", "sampled", round=1,
                verdict=Verdict(True, "4", "exact"), judgment=Judgment("CORRECT", score=1.0))
    assert pool.add([a, Attempt("q", "step 1: 2 + 2 = 4. the answer to this problem is 4. ", "reflected")]) == 1
    assert pool.add([Attempt("q", "Another path. The answer to this problem is 4.", "sampled"),
                     Attempt("q", "A third path. The answer to this problem is 4.", "sampled")]) == 1
    assert pool.rejected_duplicate == 1 and pool.rejected_cap == 1
    again = Pool(tmp_path / "pool.jsonl", max_per_question=2)
    assert [x.response for x in again] == [x.response for x in pool]
    assert again.attempts[0].verdict == a.verdict and again.attempts[0].judgment == a.judgment
    assert again.solved() == {"q"} and again.counts_by_source()["sampled"] == 2
    assert normalise("  A\n b ") == "a b"


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.jsonl"
    atomic_write_text(path, "old\n")

    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # type: ignore[arg-type]
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["state.jsonl"]


def test_stage_log_records_survive_a_restart(tmp_path):
    log = StageLog(tmp_path / "stages.jsonl")
    log.complete("r1.generate", paths=4)
    again = StageLog(tmp_path / "stages.jsonl")
    assert again.done("r1.generate") and not again.done("r1.judge") and again.get("r1.generate")["paths"] == 4


def test_pass_at_k():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- loaders
def test_jsonl_loader_reports_bad_rows_with_ids_and_skips_them(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [{"id": "a", "question": "What is 1 + 1?", "answer": "2", "images": ["ok.png"]},
            {"id": "b", "question": "What is 2 + 2?"},
            {"id": "c", "question": "Pick one", "answer": "B", "image": "broken.png", "choices": ["1", "2"]},
            {"id": "a", "question": "dup", "answer": "1"},
            {"pid": 7, "problem": "Pick", "solution": "A", "options": ["x", "y"]}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n"
    (tmp_path / "train.jsonl").write_text(text)
    problems, bad = load_problems(tmp_path / "train.jsonl")
    assert [p.id for p in problems] == ["a", "7"]
    assert problems[0].images == (str(tmp_path / "ok.png"),) and problems[1].choices == ("x", "y")
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons["b"] == "missing answer" and reasons["c"].startswith("unreadable image")
    assert reasons["a"] == "duplicate id" and reasons["line6"].startswith("line 6: invalid JSON")


def test_hf_dataset_directory_with_embedded_images(tmp_path):
    from datasets import Dataset, Image as HFImage

    ds = Dataset.from_dict({"id": ["x", "y"], "question": ["What is 3 + 4?", "What is 1 + 2?"], "answer": ["7", "3"],
                            "image": [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8))]})
    ds = ds.cast_column("image", HFImage())
    ds.save_to_disk(str(tmp_path / "ds"))
    problems, bad = load_problems(tmp_path / "ds")
    assert bad == [] and [p.gold for p in problems] == ["7", "3"]
    assert all(isinstance(p.images[0], Image.Image) for p in problems)


def test_seed_loader(tmp_path):
    (tmp_path / "seed.jsonl").write_text(json.dumps({"problem_id": "a", "response": "... is 2."}) + "\n"
                                         + json.dumps({"problem_id": "b"}) + "\n")
    seed, bad = load_seed_attempts(tmp_path / "seed.jsonl")
    assert [(s.problem_id, s.source) for s in seed] == [("a", "distilled")] and bad[0]["id"] == "b"


# ----------------------------------------------------------------------------- openai refiner
class _Teacher(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Teacher.bodies.append((self.path, self.headers.get("Authorization"), body))
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else content[-1]["text"]
        if "FAIL" in text:
            self.send_response(500)
            self.end_headers()
            return
        # the second choice ran out of tokens, as an endpoint reports it
        reply = {"choices": [{"message": {"role": "assistant", "content": f"Fixed. The answer to this problem is {i}."},
                              "finish_reason": "length" if i else "stop"} for i in range(body["n"])]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_refiner_sends_the_reflection_prompt_with_images(tmp_path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    try:
        cfg = load_config(overrides=[f"reflect.openai.base_url=http://127.0.0.1:{server.server_port}/v1",
                                     "reflect.openai.api_key_env=TEACHER_KEY", "reflect.openai.model=teacher"])
        refiner = get_refiner("openai", cfg, None)
        img = Image.new("RGB", (8, 8), (0, 255, 0))
        problems = [Problem("p1", "What is 2 + 3?", "5", images=(img,)), Problem("p2", "FAIL", "1")]
        outs = refiner.refine(problems, ["... is 6.", "... is 0."],
                              [Judgment("WRONG", 2, error_analysis="2 + 3 is not 6."), None],
                              n=2, temperature=0.7, max_new_tokens=64, template="paper")
    finally:
        server.shutdown()
    assert [g.text for g in outs[0]] == ["Fixed. The answer to this problem is 0.",
                                         "Fixed. The answer to this problem is 1."]
    assert [g.finish_reason for g in outs[0]] == ["stop", "length"]  # the step never accepts the cut one
    assert [g.text for g in outs[1]] == ["", ""] and refiner.failures == 1
    path, auth, body = next(b for b in _Teacher.bodies if isinstance(b[2]["messages"][-1]["content"], list))
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "teacher"
    parts = body["messages"][-1]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "2 + 3 is not 6." in parts[-1]["text"] and "certainly wrong" in parts[-1]["text"]
