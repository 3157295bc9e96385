"""trl datasets from MathSE rows: conversational columns and an ``images`` column, text-only and image rows mixed.

A problem set may mix questions with images and text-only questions. Arrow stores a column with one type,
so a prompt whose content is a string (text-only) cannot sit beside one whose content is a list of parts
(``[{"type": "image"}, {"type": "text", ...}]``): ``ArrowInvalid: cannot mix list and non-list``. When any row
has images, every message's content becomes a list of parts and text-only rows get an empty ``images`` list,
which is trl's own vision format.

    >>> ds = conversational_dataset({"prompt": [[{"role": "user", "content": "2+2?"}],
    ...                                         [{"role": "user", "content": [{"type": "image"},
    ...                                                                       {"type": "text", "text": "1+1?"}]}]]},
    ...                             images=[[], ["a.png"]], decode_paths=False)
    >>> ds[0]["prompt"][0]["content"], ds[0]["images"]
    ([{'type': 'text', 'text': '2+2?'}], [])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def as_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The same messages with every content a list of parts (a string becomes one text part)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out.append({**m, "content": content})
    return out


def conversational_dataset(columns: Mapping[str, list], images: Sequence[Sequence[Any]] | None = None, *,
                           decode_paths: bool = True):
    """A ``datasets.Dataset`` of ``columns``; message columns (lists of ``{"role", "content"}``) are made
    uniform when ``images`` has any image; image paths decode lazily (datasets' Image feature)."""
    from datasets import Dataset, Image, Sequence as HFSequence

    data = {k: list(v) for k, v in columns.items()}
    if not images or not any(images):
        return Dataset.from_dict(data)
    for key, values in data.items():
        if values and all(_is_messages(v) for v in values):
            data[key] = [as_parts(v) for v in values]
    data["images"] = [list(i) for i in images]
    ds = Dataset.from_dict(data)
    if decode_paths and all(isinstance(i, str) for row in images for i in row):
        ds = ds.cast_column("images", HFSequence(Image()))
    return ds


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)
