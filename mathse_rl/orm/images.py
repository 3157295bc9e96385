"""Images as the judge backends need them: PIL for processors, data URLs for HTTP.

An image may be a PIL image, a local path, raw bytes, a ``data:`` URL or an
``{"bytes": ..., "path": ...}`` dict (the form HF datasets and verl parquet use).

What goes over HTTP is a ``data:`` URL only: a local file is read only from an allow-listed
folder, and a ``http(s)``/``file://`` URL is refused, so neither a dataset nor a config can make a
judge or teacher endpoint fetch, or be sent, a file it names.

    >>> from PIL import Image
    >>> to_data_url(Image.new("RGB", (2, 2)))[:22]
    'data:image/png;base64,'
    >>> to_data_url("https://example.com/bar.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mathse_rl.orm.images.ImageNotAllowed: only data: URLs, images in memory and files inside ... got a URL
"""

from __future__ import annotations

import base64
import io
import os
import re
from typing import Any, Iterable

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class ImageNotAllowed(ValueError):
    """An image this process may not send: a URL, or a file outside the allowed folders."""


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


def allowed_path(path: str, allowed_dirs: Iterable[str]) -> bool:
    """Whether ``path`` (symbolic links resolved) lies inside one of ``allowed_dirs``."""
    real = os.path.realpath(path)
    for d in allowed_dirs:
        root = os.path.realpath(d)
        if os.path.commonpath([root, real]) == root:
            return True
    return False


def to_data_url(image: Any, allowed_dirs: Iterable[str] = ()) -> str:
    """A ``data:image/png;base64,...`` URL for an OpenAI-style ``image_url`` part.

    ``data:`` URLs pass through; a path (or a dict with only a path) must lie inside
    ``allowed_dirs``; any other URL raises :class:`ImageNotAllowed`.
    """
    if isinstance(image, dict) and not image.get("bytes") and image.get("path"):
        image = image["path"]
    if isinstance(image, str):
        if image.startswith("data:image/"):
            return image
        if image.startswith("data:") or _URL.match(image):
            raise ImageNotAllowed("only data: URLs, images in memory and files inside the allowed image folders "
                                  "are sent, got a URL")
        if not allowed_path(image, allowed_dirs):
            raise ImageNotAllowed("only data: URLs, images in memory and files inside the allowed image folders "
                                  "(image_dirs) are sent, got a file outside them")
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
