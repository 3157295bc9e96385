"""An images-only Qwen2.5-VL processor for verl's ``hf_processor`` when torchvision is absent.

``AutoProcessor.from_pretrained`` on a Qwen2.5-VL checkpoint also builds the video
processor, which needs torchvision; CPU installs here never have it, so verl's
``hf_processor`` would warn and return ``None`` and every image would be dropped. While the
CPU backend is enabled, that one failure is answered with the same processor built from
its image and text parts. The class keeps the stock name because verl dispatches on it
(to bind ``get_rope_index``).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from transformers import Qwen2_5_VLProcessor as _StockQwen2_5_VLProcessor

logger = logging.getLogger(__name__)

# Model types whose processor can be rebuilt images-only.
SUPPORTED_MODEL_TYPES = ("qwen2_5_vl",)


class Qwen2_5_VLProcessor(_StockQwen2_5_VLProcessor):
    """The stock Qwen2.5-VL processor, accepting ``video_processor=None`` (images only)."""

    _saving = False  # inside save_pretrained: there is no video processor to save

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def get_attributes(cls):
        names = super().get_attributes()
        return [n for n in names if n != "video_processor"] if cls._saving else names

    def save_pretrained(self, *args, **kwargs):
        """The stock save (verl's checkpoints call it) without the absent video processor."""
        type(self)._saving = True
        try:
            return super().save_pretrained(*args, **kwargs)
        finally:
            type(self)._saving = False


def load_images_only_processor(path: str | os.PathLike) -> Qwen2_5_VLProcessor:
    """Tokenizer + PIL image processor saved at ``path``, assembled without a video processor."""
    from mathse_rl.models.tiny import load_processor

    parts = load_processor(path)
    if not hasattr(parts, "image_processor"):
        raise ValueError(f"{path} holds a text-only model; it has no image processor")
    return Qwen2_5_VLProcessor(image_processor=parts.image_processor, tokenizer=parts.tokenizer,
                               video_processor=None, chat_template=parts.chat_template)


def _torchvision_missing(exc: BaseException) -> bool:
    return isinstance(exc, ImportError) and "torchvision" in str(exc).lower()


def patch_auto_processor() -> None:
    """Answer a torchvision ``ImportError`` from ``AutoProcessor.from_pretrained`` for Qwen2.5-VL."""
    from transformers import AutoConfig, AutoProcessor

    original = AutoProcessor.from_pretrained.__func__
    if getattr(original, "_mathse_cpu", False):
        return

    @functools.wraps(original)
    def from_pretrained(cls, name_or_path: Any, *args: Any, **kwargs: Any):
        try:
            return original(cls, name_or_path, *args, **kwargs)
        except Exception as exc:
            if not (_torchvision_missing(exc) and os.path.isdir(str(name_or_path))):
                raise
            model_type = getattr(AutoConfig.from_pretrained(name_or_path), "model_type", "")
            if model_type not in SUPPORTED_MODEL_TYPES:
                raise
            logger.info("torchvision missing: using an images-only processor for %s", name_or_path)
            return load_images_only_processor(name_or_path)

    from_pretrained._mathse_cpu = True  # type: ignore[attr-defined]
    AutoProcessor.from_pretrained = classmethod(from_pretrained)
