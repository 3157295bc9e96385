"""The synthetic world's teacher behind an OpenAI-compatible endpoint (``reflect.refiner=openai``).

In the paper a strong model (GPT-4o) writes the reflections; here the bar-chart world's
programmatic teacher takes that role, behind the same protocol, so the loop and the trainers
reach it exactly as they would reach GPT-4o: ``reflect.refiner=openai
reflect.openai.base_url=<url>/v1 reflect.openai.model=bars-teacher``.

The teacher knows only what a request carries. It reads the question (and its options) from
the prompt text and the bar heights from the chart's pixels, then:

- for a **reflection** prompt (``mathse_rl.prompts.REFLECT_TEMPLATES``) it reads the previous
  solution and the critique's error step, keeps the steps before that step and redoes the rest
  (:func:`mathse_rl.data.teacher.teacher_reflect`): a critique that names the wrong step gives a
  refinement that keeps the real mistake, which the re-judge has to catch;
- for a **solve** prompt it writes the canonical step-by-step solution;
- for anything else it answers that it cannot read the problem (which no judge accepts).

The HTTP side is :mod:`mathse_rl.orm.serve` (request checks, batching, token caps, client
disconnects, SIGTERM); this module only supplies the "model".

    handle = serve_teacher()                                  # a thread on 127.0.0.1, free port
    handle.url + "/v1"                                        # reflect.openai.base_url
    handle.stop()

    python -m mathse_rl.data.teacher_server --port 8000       # the same, in the foreground
"""

from __future__ import annotations

import re
import threading
from typing import Any, Sequence

from mathse_rl.chat import OPTION_LETTERS
from mathse_rl.data import synthetic, teacher
from mathse_rl.prompts import REFLECT_TEMPLATES, SOLVE_TEMPLATES
from mathse_rl.types import Judgment, Problem

MODEL_NAME = "bars-teacher"
UNREADABLE = "I cannot read this problem."
_TOLERANCE = 40  # per-channel distance at which a pixel counts as a bar colour (charts are drawn exactly)


# --------------------------------------------------------------------------- reading the request
def read_chart(image: Any, cfg: synthetic.WorldConfig | None = None) -> dict[str, int]:
    """Bar heights by colour, read off the chart's pixels (the rows a bar covers / pixels per unit).

    >>> read_chart(synthetic.render_chart([7, 3], ["red", "blue"], synthetic.WorldConfig()))
    {'red': 7, 'blue': 3}
    """
    cfg = cfg or synthetic.WorldConfig()
    img = image.convert("RGB")
    width, height = img.size
    px = img.load()
    rows: dict[str, set[int]] = {c: set() for c in synthetic.COLOURS}
    for y in range(height):
        for x in range(width):
            r, g, b = px[x, y]
            for name, (cr, cg, cb) in synthetic.COLOURS.items():
                if abs(r - cr) < _TOLERANCE and abs(g - cg) < _TOLERANCE and abs(b - cb) < _TOLERANCE:
                    rows[name].add(y)
    return {name: round(len(ys) / cfg.unit_px) for name, ys in rows.items() if ys}


def _template_regex(template: str, fields: dict[str, str]) -> re.Pattern[str]:
    """A template's format string as a regex with one named group per field."""
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for i, part in enumerate(parts):
        out.append(fields[part] if i % 2 else re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


_OPTIONS = r"(?P<options>(?:\nOptions: [^\n]*)?)"
# The policy's previous solution is hostile text: it is matched greedily, so the critique read is the
# last "Error step" / "Error analysis" pair, the one the template itself wrote after it.
_REFLECT = [_template_regex(t, {"question": r"(?P<question>[^\n]*)", "options": _OPTIONS,
                                "wrong_solution": r"(?P<wrong>.*)", "error_step": r"(?P<step>[^\n]*)",
                                "error_analysis": r"(?P<analysis>.*)"})
            for t in REFLECT_TEMPLATES.values()]
_SOLVE = [_template_regex(t, {"question": r"(?P<question>[^\n]*)", "options": _OPTIONS})
          for t in SOLVE_TEMPLATES.values()]
_QUESTIONS = {lv.question: n for n, lv in synthetic.LEVELS.items()}


def _options(text: str) -> tuple[str, ...] | None:
    """``"\\nOptions: A. 3  B. 4"`` -> ``("3", "4")``."""
    if not text.strip():
        return None
    body = text.strip()[len("Options:"):]
    found = re.findall(r"(?:^|\s)([A-Z])\. (\S+)", body)
    return tuple(v for _, v in found) or None


def rebuild_problem(question: str, options: tuple[str, ...] | None, image: Any,
                    cfg: synthetic.WorldConfig | None = None) -> Problem | None:
    """The world's problem from what a prompt shows: its question, its options and its chart."""
    level = _QUESTIONS.get(question.strip())
    if level is None or image is None:
        return None
    spec = synthetic.LEVELS[level]
    seen = read_chart(image, cfg)
    if any(c not in seen for c in spec.bars):
        return None
    heights = [seen[c] for c in spec.bars]
    partials = synthetic.evaluate(heights, spec.ops)
    value = partials[-1]
    letter = None
    if options:
        letter = OPTION_LETTERS[options.index(str(value))] if str(value) in options else None
        if letter is None:
            return None  # none of the options is the value the chart shows
    meta = {"level": level, "bars": list(spec.bars), "heights": heights, "ops": list(spec.ops),
            "partials": partials, "value": value, "letter": letter}
    return Problem(id="request", question=question.strip(), gold=letter or str(value), images=(image,),
                   choices=options, data_source=synthetic.DATA_SOURCE, meta=meta)


def teacher_reply(text: str, images: Sequence[Any]) -> str:
    """What the teacher writes for one prompt (the text of its user turn and its images)."""
    image = images[0] if images else None
    for rx in _REFLECT:
        if m := rx.match(text):
            problem = rebuild_problem(m["question"], _options(m["options"]), image)
            if problem is None:
                return UNREADABLE
            step = re.search(r"\d+", m["step"])
            critique = Judgment(status="WRONG", error_step=int(step.group()) if step else None,
                                error_analysis=m["analysis"].strip())
            return teacher.teacher_reflect(problem, m["wrong"], critique)
    for rx in _SOLVE:
        if m := rx.match(text):
            problem = rebuild_problem(m["question"], _options(m["options"]), image)
            return teacher.teacher_solution(problem) if problem is not None else UNREADABLE
    return UNREADABLE


# --------------------------------------------------------------------------- the served "model"
class TeacherModel:
    """The chat model :func:`mathse_rl.orm.serve.make_app` serves: the teacher instead of a network.

    ``count_tokens(text) -> list[int]`` (default: the policy's tokenizer when given, else words)
    sets what ``max_tokens`` means: a reply longer than it is cut there and its finish reason is
    ``length``, as an engine's would be.
    """

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer
        self.requests = 0
        self._lock = threading.Lock()

    def render(self, request: Any) -> tuple[str, list[Any]]:
        user = [m for m in request.messages if m["role"] == "user"]
        content = user[-1]["content"] if user else ""
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content
                                                                if p.get("type") == "text")
        return text, list(request.images)

    def _cut(self, reply: str, max_tokens: int) -> tuple[str, int]:
        if self.tokenizer is None:
            words = reply.split(" ")
            return (reply, len(words)) if len(words) <= max_tokens else (" ".join(words[:max_tokens]), max_tokens)
        ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return reply, len(ids)
        return self.tokenizer.decode(ids[:max_tokens]), max_tokens

    def generate_rendered(self, rendered: Sequence[tuple[str, list[Any]]], max_tokens: Sequence[int],
                          min_tokens: Sequence[int] | None = None, stop: Sequence[Any] | None = None
                          ) -> list[tuple[str, int]]:
        with self._lock:
            self.requests += len(rendered)
        return [self._cut(teacher_reply(text, images), n) for (text, images), n in zip(rendered, max_tokens)]


def serve_teacher(tokenizer: Any = None, host: str = "127.0.0.1", port: int = 0):
    """Start the teacher endpoint in a background thread; returns the server handle (``.url``, ``.stop()``)."""
    from mathse_rl.orm.serve import ServeConfig, make_app, serve_in_thread

    model = TeacherModel(tokenizer)
    app = make_app(model, MODEL_NAME, config=ServeConfig(max_batch=32, max_wait_ms=2.0, max_tokens_cap=4096))
    app.state.teacher = model
    return serve_in_thread(app, host=host, port=port)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from mathse_rl.orm.serve import ServeConfig, make_app, run_server

    ap = argparse.ArgumentParser(description="the bar-chart world's teacher as an OpenAI-compatible endpoint")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    print(f"serving {MODEL_NAME} on http://{args.host}:{args.port}/v1")
    run_server(make_app(TeacherModel(), MODEL_NAME, config=ServeConfig(max_tokens_cap=4096)), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
