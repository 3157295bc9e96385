"""How many new tokens verl's rollout servers grant a request: one rule, used by the CPU
stand-in (to behave like the real engines) and by ``mathse_reflect`` (to check a reflection
prompt before sending it).

The rules, read from verl 0.9.1:

- vLLM, ``verl/workers/rollout/vllm_rollout/vllm_async_server.py:vLLMHttpServer.generate``:
  room = ``max_model_len - len(prompt)``; a prompt with room < 1 is an error; the request's
  ``max_tokens`` (or ``max_new_tokens``) if given, else
  ``min(response_length, prompt_length + response_length - len(prompt))``; clamped to
  ``[1, room]``. An explicit ``max_tokens`` is *not* capped by ``response_length``.
- SGLang, ``verl/workers/rollout/sglang_rollout/async_sglang_server.py:SGLangHttpServer.generate``:
  room = ``max_model_len - len(prompt) - 1``; room < 0 is an error; same default; clamped to
  ``[0, room]``.

So a request without ``max_tokens`` whose prompt is longer than the dataset prompt (a
reflection: question + wrong solution + critique) gets a budget shrunk by the excess,
down to 1 token (vLLM) or 0 (SGLang).

>>> granted_tokens("vllm", 300, None, prompt_length=256, response_length=48, max_model_len=1024)
4
>>> granted_tokens("vllm", 300, 48, prompt_length=256, response_length=48, max_model_len=1024)
48
>>> granted_tokens("sglang", 400, None, prompt_length=256, response_length=48, max_model_len=1024)
0
"""

from __future__ import annotations

from mathse_rl.step import granted_tokens as _granted

# Engines whose rule is known; the CPU stand-in applies one of them.
RULES = ("vllm", "sglang")


def granted_tokens(rule: str, prompt_len: int, requested: int | None, *, prompt_length: int,
                   response_length: int, max_model_len: int) -> int:
    """New tokens the engine ``rule`` grants a prompt of ``prompt_len`` tokens asking ``requested``
    (None = no ``max_tokens`` in the request). Raises ``ValueError`` where the engine does.

    The explicit-``max_tokens`` part is :func:`mathse_rl.step.granted_tokens` (what the step
    checks a reflection against); this adds the server's default and its refusal.
    """
    if rule not in RULES:
        raise ValueError(f"unknown token-budget rule {rule!r}; known: {list(RULES)}")
    if prompt_len >= max_model_len:  # vLLM: room < 1; SGLang: room - 1 < 0
        raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within "
                         f"max_model_len={max_model_len} ({rule})")
    if requested is None:
        requested = min(response_length, prompt_length + response_length - prompt_len)
    return _granted(prompt_len, int(requested), max_model_len, rule)


def rule_for(rollout_name: str, engine_kwargs: dict | None = None) -> str:
    """The budget rule of a rollout: ``vllm``/``sglang`` by name; the CPU stand-in ``hf_cpu``
    follows ``engine_kwargs.hf_cpu.budget_rule`` (default ``vllm``)."""
    if rollout_name in RULES:
        return rollout_name
    own = dict((engine_kwargs or {}).get(rollout_name) or {})
    return str(own.get("budget_rule", "vllm"))
