"""Images as the judge backends need them: PIL for processors, data URLs for HTTP.

An image may be a PIL image, a local path, raw bytes, a ``data:`` URL or an
``{"bytes": ..., "path": ...}`` dict (the form HF datasets and verl parquet use).

    >>> from PIL import Image
    >>> to_data_url(Image.new("RGB", (2, 2)))[:22]
    'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
from typing import Any


def to_pil(image: Any):
    """Open ``image`` as an RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, dict):
        if image.get("bytes"):
            return to_pil(image["bytes"])
        if image.get("path"):
            return to_pil(image["path"])
        raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    if isinstance(image, str):
        if image.startswith("data:"):
            return to_pil(base64.b64decode(image.split(",", 1)[1]))
        return Image.open(image).convert("RGB")
    raise TypeError(f"cannot read an image from {type(image).__name__}")


def to_data_url(image: Any) -> str:
    """A ``data:image/png;base64,...`` URL for an OpenAI-style ``image_url`` part."""
    if isinstance(image, str) and (image.startswith("data:") or image.startswith("http")):
        return image
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
