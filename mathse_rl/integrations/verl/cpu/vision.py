"""Images-only stand-in for ``qwen_vl_utils`` when torchvision is absent.

verl's dataset and agent loop read images through ``qwen_vl_utils`` (``fetch_image``,
``process_vision_info``), whose module imports torchvision at the top for video decoding.
Without torchvision (the CPU installs here) every multimodal row would fail. When the CPU
backend is enabled and the real package cannot be imported, :func:`install` puts this
module's functions under the name ``qwen_vl_utils``: images are opened with PIL, converted
to RGB and resized to multiples of ``patch_size * 2`` within the pixel bounds Qwen-VL uses,
so prompt token counts match what a Qwen-VL processor expects. Videos raise.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import sys
import types
from typing import Any, Optional

from PIL import Image

logger = logging.getLogger(__name__)

MERGE_SIZE = 2  # Qwen-VL merges 2x2 patches into one visual token
MIN_TOKENS = 4  # smallest image, in merged tokens
MAX_TOKENS = 16384  # largest image, in merged tokens


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    if isinstance(source, str):
        if source.startswith("data:image") and "base64," in source:
            return Image.open(io.BytesIO(base64.b64decode(source.split("base64,", 1)[1])))
        if source.startswith(("http://", "https://")):
            raise ValueError("remote images are not fetched by the CPU backend; save them locally")
        return Image.open(source[7:] if source.startswith("file://") else source)
    raise ValueError(f"unrecognised image input of type {type(source).__name__}")


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGBA":  # flatten transparency onto white, as Qwen-VL's reader does
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def fit_size(height: int, width: int, factor: int, min_pixels: Optional[int] = None,
             max_pixels: Optional[int] = None) -> tuple[int, int]:
    """Height and width rounded to ``factor`` with their product inside the pixel bounds."""
    min_pixels = MIN_TOKENS * factor * factor if min_pixels is None else min_pixels
    max_pixels = MAX_TOKENS * factor * factor if max_pixels is None else max_pixels
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def fetch_image(ele: dict[str, Any], image_patch_size: int = 14) -> Image.Image:
    """One image element (``{"image": ...}`` or ``{"image_url": ...}``) as a resized RGB image."""
    image = _rgb(_open(ele["image"] if "image" in ele else ele["image_url"]))
    factor = image_patch_size * MERGE_SIZE
    if "resized_height" in ele and "resized_width" in ele:
        h, w = fit_size(ele["resized_height"], ele["resized_width"], factor)
    else:
        width, height = image.size
        h, w = fit_size(height, width, factor, ele.get("min_pixels"), ele.get("max_pixels"))
    return image.resize((w, h))


def fetch_video(*_args: Any, **_kwargs: Any):
    raise NotImplementedError("videos need torchvision; the CPU backend reads images only")


def extract_vision_info(conversations: list) -> list[dict[str, Any]]:
    """Every image/video element of one conversation or of a list of conversations."""
    if conversations and isinstance(conversations[0], dict):
        conversations = [conversations]
    found = []
    for conversation in conversations:
        for message in conversation:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, dict) and ("image" in part or "image_url" in part or "video" in part
                                               or part.get("type") in ("image", "image_url", "video")):
                    found.append(part)
    return found


def process_vision_info(conversations: list, return_video_kwargs: bool = False, image_patch_size: int = 14,
                        return_video_metadata: bool = False):
    """``(images or None, None[, {}])`` for the conversations; videos are refused."""
    images = []
    for part in extract_vision_info(conversations):
        if "video" in part or part.get("type") == "video":
            fetch_video(part)
        images.append(fetch_image(part, image_patch_size=image_patch_size))
    images = images or None
    return (images, None, {}) if return_video_kwargs else (images, None)


def install() -> bool:
    """Serve ``qwen_vl_utils`` from here if the real package cannot load; True if installed."""
    try:
        import qwen_vl_utils  # noqa: F401
        return False
    except ImportError as exc:
        if "torchvision" not in str(exc).lower() and "qwen_vl_utils" not in str(exc):
            raise
    module = types.ModuleType("qwen_vl_utils")
    module.__doc__ = __doc__
    for name in ("fetch_image", "fetch_video", "process_vision_info", "extract_vision_info", "fit_size"):
        setattr(module, name, globals()[name])
    module.smart_resize = fit_size
    sys.modules["qwen_vl_utils"] = module
    logger.info("torchvision missing: qwen_vl_utils served by %s (images only)", __name__)
    return True
