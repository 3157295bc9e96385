"""Tiny offline models: a locally trained tokenizer, a Qwen2 LM and a Qwen2.5-VL VLM.

Nothing here touches a model hub. The tokenizer is a byte-level BPE trained in memory
on a small math corpus, with Qwen's special tokens and a Qwen-style chat template; the
models are real ``Qwen2ForCausalLM`` / ``Qwen2_5_VLForConditionalGeneration`` classes
with random weights, saved with ``save_pretrained`` so trl and verl can load them by path.

    >>> from mathse_rl.models.tiny import build_tiny
    >>> path = build_tiny("/tmp/tiny-vlm", kind="vlm")      # doctest: +SKIP
    >>> model, processor = load_tiny(path)                    # doctest: +SKIP

Images go through transformers' PIL image processor (torchvision is never needed); the
processor subclass below accepts a missing video processor, which the stock class rejects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

Kind = Literal["lm", "vlm"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-style chat template. Content may be a string or a list of {"type": "image"|"text"}
# parts (trl's vision format). Assistant turns are wrapped in {% generation %} so
# ``return_assistant_tokens_mask`` (trl's assistant-only loss) works.
_CONTENT = (
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}" + _CONTENT + "<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}" + _CONTENT + "<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Text the tokenizer's merges are learnt from: the words our prompts, solutions and
# judge outputs use, so tiny models see short sequences.
_BASE_CORPUS = [
    "You are a mathematics teacher. Solve the problem step by step using the image.",
    "Step 1: Step 2: Step 3: Step 4: The answer to this problem is",
    "Read the figure. The red bar is 5. The blue bar is 7. 5 + 7 = 12. 12 - 3 = 9. 4 * 6 = 24.",
    "How many circles are there? What is the sum of the two bars? What is the difference?",
    "The height of the green bar is 8. The angle is 60 degrees. The clock shows 3 o'clock.",
    'The answer to this problem is 12. {"status": "CORRECT", "error_step": null, '
    '"error_analysis": "", "improvement_suggestion": "none"}',
    '{"status": "WRONG", "error_step": 2, "error_analysis": "The value was misread.", '
    '"improvement_suggestion": "Re-read the bar heights from the image."}',
    "Question: Solution: Reference answer: Judge the solution. Your previous solution is wrong.",
    "Error step: Error analysis: Please reflect on the error and give a corrected solution.",
    "Options: A. B. C. D. Choose the correct option. The answer is (A) (B) (C) (D)",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = < > ( ) . , : ; ? !",
    "red blue green yellow purple orange black white bar bars dot dots circle square triangle",
    "first second third total sum difference product count more less than equals therefore",
]


@dataclass(frozen=True)
class TinySize:
    """Dimensions of a tiny model; ``S`` and ``L`` match the measured CPU facts."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int


SIZES: dict[str, TinySize] = {
    "XS": TinySize(64, 2, 4, 2, 128, 32, 1, 2),  # for tests: builds and steps in well under a second
    "S": TinySize(128, 4, 4, 2, 256, 64, 2, 4),
    "L": TinySize(256, 4, 8, 4, 512, 128, 4, 4),
}


def build_tokenizer(extra_text: Iterable[str] = (), vocab_size: int = 384):
    """Train a byte-level BPE tokenizer in memory and wrap it for transformers.

    >>> tok = build_tokenizer()
    >>> tok.convert_tokens_to_ids("<|image_pad|>") == tok.image_token_id
    True
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    # Digits are split one by one so numbers of any size stay representable.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(_BASE_CORPUS) + list(extra_text)
    backend.train_from_iterator(corpus * 4, trainer=trainer)

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tok.model_max_length = 4096
    return tok


def _processor_class():
    from transformers import Qwen2_5_VLProcessor

    class TinyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor that works for images without a video processor.

        The stock class insists on a torchvision-backed video processor; images-only use
        never touches it, so ``None`` is accepted for that one argument.
        """

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return TinyQwen2_5_VLProcessor


def build_processor(tokenizer=None, image_pixels: tuple[int, int] = (28 * 28, 112 * 112)):
    """A Qwen2.5-VL processor over ``tokenizer`` with the PIL image processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=image_pixels[0],
        max_pixels=image_pixels[1],
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    cls = _processor_class()
    return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=CHAT_TEMPLATE)


def _text_kwargs(tokenizer, size: TinySize) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_lm(tokenizer, size: str = "XS", seed: int = 0):
    """A randomly initialised ``Qwen2ForCausalLM`` sized for CPU."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**_text_kwargs(tokenizer, SIZES[size]))
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    return model


def build_tiny_vlm(tokenizer, size: str = "XS", seed: int = 0):
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` sized for CPU."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    s = SIZES[size]
    text = _text_kwargs(tokenizer, s)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(s)}
    vision = dict(
        depth=s.vision_depth,
        hidden_size=s.vision_hidden,
        intermediate_size=s.vision_hidden * 2,
        num_heads=s.vision_heads,
        out_hidden_size=s.hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=list(range(s.vision_depth)),
        in_channels=3,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in _VISION_IDS.items()}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = text["eos_token_id"]
    return model


_VISION_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def _mrope_section(size: TinySize) -> list[int]:
    # M-RoPE splits half the head dimension into temporal/height/width sections.
    half = size.hidden // size.heads // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny(path: str | os.PathLike, kind: Kind = "vlm", size: str = "XS", seed: int = 0,
               extra_text: Iterable[str] = (), vocab_size: int = 384, tag: str = "") -> str:
    """Build a tiny model with its tokenizer/processor and save it under ``path``.

    ``extra_text`` adds a task's words to the tokenizer's corpus (with a larger ``vocab_size``
    they become single tokens); ``tag`` names that corpus so a cached build is reused only for
    the same one. Returns the path as a string; an existing build with the same spec is reused.
    """
    path = Path(path)
    marker = path / "mathse_tiny.json"
    spec = {"kind": kind, "size": size, "seed": seed}
    if vocab_size != 384 or tag:
        spec.update(vocab_size=vocab_size, world=tag)
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return str(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_text, vocab_size=vocab_size)
    if kind == "lm":
        model = build_tiny_lm(tokenizer, size, seed)
    elif kind == "vlm":
        model = build_tiny_vlm(tokenizer, size, seed)
        # The processor's own save_pretrained trips over the missing video processor;
        # its two real parts are saved instead and load_processor reassembles them.
        build_processor(tokenizer).image_processor.save_pretrained(path)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose 'lm' or 'vlm'")
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    marker.write_text(json.dumps(spec))
    return str(path)


def load_processor(path: str | os.PathLike):
    """The tokenizer (LM) or processor (VLM) saved next to a model, offline, with the model's own chat template.

    A vision model's processor comes through ``AutoProcessor.from_pretrained``; where its video processor
    needs torchvision and torchvision is missing (this project never installs it), the same class is loaded
    through the same ``from_pretrained`` without the video processor (images only). The chat template is the
    checkpoint's own (``chat_template.jinja``/``.json`` or the tokenizer's); a checkpoint without one is an
    error, never silently given another model's template. Only a tiny model built here (``mathse_tiny.json``
    beside its weights) falls back to :data:`CHAT_TEMPLATE`.
    """
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "vision_config", None) is None:
        proc = tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    else:
        proc = _auto_processor(path, config)
        tokenizer = proc.tokenizer
    template = getattr(proc, "chat_template", None) or tokenizer.chat_template
    if not template and (Path(path) / "mathse_tiny.json").exists():
        template = CHAT_TEMPLATE
    if not template:
        raise ValueError(f"{path} has no chat template (no chat_template.jinja or chat_template.json, none in "
                         f"tokenizer_config.json): prompts would be rendered in a format the model never saw. "
                         f"Copy the base model's chat template next to this checkpoint.")
    tokenizer.chat_template = template  # saved with the tokenizer, so the next checkpoint keeps it
    if proc is not tokenizer:
        proc.chat_template = template
    tokenizer.padding_side = "left"
    return proc


def _auto_processor(path: str | os.PathLike, config: Any):
    """The processor ``AutoProcessor.from_pretrained(path)`` builds: the class transformers maps the config to,
    through its ``from_pretrained`` (called directly, so a wrapper installed on ``AutoProcessor`` cannot loop
    back here); without its video processor when that one needs torchvision (missing here) or was never saved
    (an images-only save). Images never touch the video processor."""
    from transformers import AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    if type(config) not in PROCESSOR_MAPPING:
        return AutoProcessor.from_pretrained(path)
    cls = PROCESSOR_MAPPING[type(config)]
    try:
        return cls.from_pretrained(path)
    except (ImportError, OSError) as exc:
        if "torchvision" not in str(exc).lower() and "video" not in str(exc).lower():
            raise

    class ImagesOnly(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(klass):
            return [a for a in super().get_attributes() if a != "video_processor"]

        def save_pretrained(self, save_directory, **kwargs):
            out = super().save_pretrained(save_directory, **kwargs)
            # preprocessor_config.json too, as hub checkpoints have it (vLLM and older readers look for it)
            self.image_processor.save_pretrained(save_directory)
            return out

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = cls.__name__
    return ImagesOnly.from_pretrained(path)


def load_tiny(path: str | os.PathLike):
    """Load a model saved by :func:`build_tiny` (or any Qwen2 / Qwen2.5-VL checkpoint) on CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype="float32", attn_implementation="sdpa")
    return model, load_processor(path)


def tokenizer_of(processing_class):
    """The text tokenizer of a processor, or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", processing_class)


def encode_batch(processing_class, texts: list[str], images: list[Any] | None = None):
    """Left-padded tensors for a batch of rendered chat texts and their images, in order.

    With images the processor expands the image placeholders; without, the text tokenizer
    encodes the (already templated) texts without adding special tokens.
    """
    if images:
        return processing_class(text=texts, images=images, padding=True, return_tensors="pt")
    return tokenizer_of(processing_class)(texts, padding=True, return_tensors="pt", add_special_tokens=False)
