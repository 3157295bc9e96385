"""The judge's configuration: one dataclass, built from a dict, OmegaConf node or kwargs.

    >>> cfg = judge_config({"backend": "openai", "endpoint": "http://127.0.0.1:8000/v1", "model": "judge"})
    >>> cfg.backend, cfg.fallback, cfg.api_key_env
    ('openai', 'verifier', 'OPENAI_API_KEY')
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

C = TypeVar("C")

FALLBACKS = ("verifier", "none")

# Names whose values are secrets wherever they appear: request fields, headers, URL query parameters.
_SECRET_NAME = re.compile(r"key|token|secret|passw|auth|cookie|credential|signature", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)(?::[^/@\s]*)?@")
_URL_QUERY_SECRET = re.compile(r"(?P<name>[?&;][^=&#\s]*)=(?P<value>[^&#\s]*)")
MASK = "***"


def redact(value: Any, name: str = "") -> Any:
    """``value`` with every secret replaced by ``***``: values under secret-looking names
    (``api_key``, ``Authorization``, ``x-api-key``...), ``Bearer`` tokens, and the password or
    secret query parameters of URLs. For reprs and logs; the config keeps the real values.

    >>> redact({"top_p": 0.9, "api_key": "sk-1", "headers": {"Authorization": "Bearer sk-2"}})
    {'top_p': 0.9, 'api_key': '***', 'headers': {'Authorization': '***'}}
    >>> redact("https://u:pw@host/v1?api_key=sk-3&x=1")
    'https://u:***@host/v1?api_key=***&x=1'
    """
    if name and _SECRET_NAME.search(name) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        text = _URL_USERINFO.sub(lambda m: m.group("scheme") + m.group("user") + ":" + MASK + "@", value)
        text = _URL_QUERY_SECRET.sub(
            lambda m: m.group("name") + "=" + (MASK if _SECRET_NAME.search(m.group("name")) else m.group("value")), text)
        return re.sub(r"(?i)\b(bearer|basic)\s+\S+", lambda m: m.group(1) + " " + MASK, text)
    return value


@dataclass(repr=False)
class JudgeConfig:
    backend: str = "verifier"  # registered backend name: "local", "openai" or "verifier"
    model: str | None = None  # local: checkpoint path; openai: the served model name
    endpoint: str | None = None  # openai: base URL such as http://host:port/v1
    reward_router_address: str | None = None  # openai: verl's "host:port" router; used when endpoint is unset
    api_key_env: str = "OPENAI_API_KEY"  # openai: name of the env var holding the key (the key is never stored)
    fallback: str = "verifier"  # on judge failure or unparsable reply: "verifier" or "none" (judgment None)
    batch_size: int = 8  # local: items per generate() call
    max_new_tokens: int = 256  # tokens the judge may write
    temperature: float = 0.0  # 0 = greedy
    score_from_logits: bool = True  # local: score = P(CORRECT) from the status token's logits
    constrain_status: bool = True  # local: decode the status as exactly CORRECT or WRONG (the likelier one)
    cache_implementation: str | None = None  # local: generate()'s KV cache; "static" preallocates (None: dynamic)
    device: str = "auto"  # local: "auto" (cuda if present), "cpu", "cuda", ...
    dtype: str = "auto"  # local: "auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16", "float16"
    concurrency: int = 8  # openai: requests in flight at once
    timeout: float = 60.0  # openai: seconds one request may take, headers to last body byte (a slow drip included)
    deadline: float | None = None  # openai: seconds per item from its first send, retries, waits, parsing included (None: timeout × (retries + 1))
    max_retries: int = 2  # openai: retries after a retryable failure (5xx, 429, timeout, connection, bad body)
    backoff: float = 0.5  # openai: first retry delay in seconds, doubled each retry (a longer Retry-After wins)
    max_reply_bytes: int = 4 << 20  # openai: largest response body read; a longer one fails as "reply_too_large"
    request_kwargs: dict[str, Any] = field(default_factory=dict)  # openai: extra body fields (e.g. top_p)
    image_dirs: list[str] = field(default_factory=list)  # openai: folders whose image files may be sent (other files, URLs: refused)
    prompt_template: str = "full"  # judge prompt template (mathse_rl.orm.prompts.JUDGE_TEMPLATES); match the training data's
    verifier_timeout: float = 5.0  # seconds the rule verifier may spend on one answer

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        from mathse_rl.orm.prompts import JUDGE_TEMPLATES

        if self.prompt_template not in JUDGE_TEMPLATES:
            raise ValueError(f"prompt_template must be one of {sorted(JUDGE_TEMPLATES)}, got {self.prompt_template!r}")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("batch_size and concurrency must be >= 1")

    def __repr__(self) -> str:
        # Secrets a user put in request_kwargs or the endpoint URL never reach a log through a repr.
        fields = ", ".join(f"{f.name}={redact(getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"


def config_from(cls: type[C], config: Any = None, what: str = "config", **overrides: Any) -> C:
    """An instance of the dataclass ``cls`` from None, an instance, a mapping, an OmegaConf node
    or another dataclass, plus keyword overrides. Unknown keys are an error that lists the known ones.
    """
    if config is None:
        values: dict[str, Any] = {}
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        values = dict(config)
    elif type(config).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    else:
        raise TypeError(f"cannot read a {what} from {type(config).__name__}")
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")
    return cls(**values)


def judge_config(config: Any = None, **overrides: Any) -> JudgeConfig:
    """A :class:`JudgeConfig` from None, a JudgeConfig, a mapping or an OmegaConf node, plus overrides.

    Unknown keys are an error that lists the known ones.
    """
    return config_from(JudgeConfig, config, "judge config", **overrides)
