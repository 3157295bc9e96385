"""Reading a benchmark's released files into Problems, with every unusable row listed.

The forms users download: a JSON file (a list of rows, or rows keyed by id as MathVista's
``data/testmini.json``), JSON lines (MATH-Vision's ``data/test.jsonl``, GSM8K, MATH-500), a
parquet file, a directory of parquet shards named ``<split>-*.parquet`` (a Hugging Face dataset
snapshot) or a directory written by ``datasets.save_to_disk``.

    >>> bench, problems, bad = load_benchmark("mathvista", "MathVista/data/testmini.json")   # doctest: +SKIP
    >>> parse_ref("mathvista:testmini:data/testmini.json")
    ('mathvista', 'testmini', 'data/testmini.json')
    >>> parse_ref("heldout.jsonl") is None
    True
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mathse_rl.eval.base import BENCHMARK, BadRow, Benchmark, RowError, get_benchmark, list_benchmarks
from mathse_rl.types import Problem

_REF = re.compile(r"^([A-Za-z][\w-]*):([\w.-]+):(.+)$")


def parse_ref(ref: str | None) -> tuple[str, str, str] | None:
    """``<benchmark>:<split>:<path>`` -> (benchmark, split, path); None for a plain path or ``hf:`` id.

    A ref of that form naming no registered benchmark is an error (a typo must not be read as a path)."""
    if not ref:
        return None
    m = _REF.match(str(ref))
    if not m or m.group(1) == "hf":
        return None
    name = m.group(1).lower()
    if name not in list_benchmarks():
        get_benchmark(name)  # raises with the known names
    return name, m.group(2), m.group(3)


def ref_path(ref: str | None) -> str | None:
    """The file a data reference reads: the path of a benchmark ref, else the ref itself."""
    parsed = parse_ref(ref)
    return parsed[2] if parsed else ref


# ----------------------------------------------------------------------------- raw rows
def read_rows(path: str | Path, split: str) -> list[tuple[int, Mapping[str, Any] | str]]:
    """``(index, row)`` pairs of a released file; a row that is not even a JSON object is its error text."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"benchmark data not found: {path}")
    if path.is_dir():
        return list(enumerate(_dir_rows(path, split)))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist()))
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(enumerate(_json_rows(data, path)))
    out: list[tuple[int, Mapping[str, Any] | str]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((n, f"malformed row: line {n + 1} is not valid JSON ({exc.msg})"))
                continue
            out.append((n, row if isinstance(row, dict) else f"malformed row: line {n + 1} is not a JSON object"))
    return out


def _json_rows(data: Any, path: Path) -> list[Any]:
    if isinstance(data, list):
        return [r if isinstance(r, dict) else f"malformed row: item {i} is not a JSON object" for i, r in enumerate(data)]
    if isinstance(data, dict):
        for key in ("data", "rows", "test", "testmini"):
            if isinstance(data.get(key), list):
                return _json_rows(data[key], path)
        # Rows keyed by their id (MathVista's testmini.json and its output files).
        return [({"id": k, **v} if "id" not in v and "pid" not in v else v) if isinstance(v, dict)
                else f"malformed row: {k} is not a JSON object" for k, v in data.items()]
    raise ValueError(f"{path}: expected a JSON list of rows or rows keyed by id")


def _dir_rows(path: Path, split: str) -> Iterable[Mapping[str, Any]]:
    if any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict
            if split not in ds:
                raise ValueError(f"{path} has no split {split!r}; it has {list(ds.keys())}")
            ds = ds[split]
        yield from ds.with_format("python")
        return
    shards = sorted(p for p in path.rglob("*.parquet")
                    if p.stem == split or p.name.startswith(f"{split}-") or p.name.startswith(f"{split}."))
    if not shards:
        raise FileNotFoundError(f"no {split}.parquet or {split}-*.parquet under {path}")
    import pyarrow.parquet as pq

    for shard in shards:
        yield from pq.read_table(shard).to_pylist()


# ----------------------------------------------------------------------------- images
def resolve_image(ref: Any, root: Path, *, open_it: bool) -> Any:
    """A PIL image or an existing file's path for one image reference of a row.

    ``open_it``: decode it now (generation needs it; a missing or broken image is a ``RowError``);
    otherwise a reference that cannot be resolved becomes None (scoring needs no image)."""
    from PIL import Image

    try:
        if isinstance(ref, Image.Image):
            return ref
        if isinstance(ref, Mapping):  # a parquet / datasets image cell
            if ref.get("bytes"):
                img = Image.open(io.BytesIO(ref["bytes"]))
                img.load()
                return img
            ref = ref.get("path")
        if isinstance(ref, (bytes, bytearray)):
            img = Image.open(io.BytesIO(ref))
            img.load()
            return img
        if not ref:
            raise RowError("missing image: the row names no image")
        p = Path(str(ref)).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.exists():
            raise RowError(f"missing image: {p} (set --image-root to the folder the release's images are in)")
        if open_it:
            with Image.open(p) as im:
                im.verify()
        return str(p)
    except RowError:
        if open_it:
            raise
        return None
    except Exception as exc:  # PIL's errors for a broken file
        if open_it:
            raise RowError(f"unreadable image {ref if isinstance(ref, str) else ''}: {exc}") from exc
        return None


# ----------------------------------------------------------------------------- problems
def load_benchmark(name: str | Benchmark, path: str | Path, split: str | None = None, *,
                   image_root: str | Path | None = None, need_images: bool = False, limit: int | None = None,
                   id_prefix: str = "") -> tuple[Benchmark, list[Problem], list[BadRow]]:
    """(benchmark, problems, bad rows) from a released file.

    ``need_images``: every image must exist and open (a model will see them); otherwise images are
    resolved where possible and ignored where not. ``id_prefix`` is put before every id (held-out sets
    of a training run, whose ids must not collide with the training questions')."""
    bench = get_benchmark(name) if isinstance(name, str) else name
    split = bench.check_split(split or bench.default_split)
    root = Path(image_root).expanduser() if image_root else Path(path).expanduser().parent
    if image_root and not root.is_dir():
        raise FileNotFoundError(f"image root is not a directory: {root}")
    problems: list[Problem] = []
    bad: list[BadRow] = []
    seen: set[str] = set()
    import dataclasses

    for index, row in read_rows(path, split):
        if limit is not None and len(problems) >= limit:
            break
        if isinstance(row, str):
            bad.append(BadRow(f"row{index}", row))
            continue
        rid = bench.row_id(row, index)
        try:
            p = bench.problem(row, index, split)
            images = tuple(resolve_image(ref, root, open_it=need_images) for ref in p.images)
            if not need_images:
                images = tuple(i for i in images if i is not None)
        except RowError as exc:
            bad.append(BadRow(rid, str(exc)))
            continue
        except Exception as exc:  # a value of the wrong type in a field: the row is malformed
            bad.append(BadRow(rid, f"malformed row: {type(exc).__name__}: {exc}"))
            continue
        if p.id in seen:
            bad.append(BadRow(p.id, "duplicate id"))
            continue
        seen.add(p.id)
        meta = {**p.meta, BENCHMARK: bench.name, "split": split}
        problems.append(dataclasses.replace(p, id=id_prefix + p.id, images=images, meta=meta))
    return bench, problems, bad


def load_eval_set(ref: str, *, image_root: str | Path | None = None, gold_columns: Sequence[str] | None = None,
                  ) -> tuple[list[Problem], list[dict[str, str]]]:
    """A held-out set for the training loop: ``<benchmark>:<split>:<path>`` (ids become
    ``<benchmark>/<split>/<id>``; scored by the benchmark's rules), or any other data reference
    (read by :func:`mathse_rl.data.loaders.load_problems`). Bad rows come back as ``{"id", "reason"}``."""
    parsed = parse_ref(ref)
    if parsed is None:
        from mathse_rl.data.loaders import GOLD_COLUMNS, load_problems

        return load_problems(ref, image_root=image_root, gold_columns=tuple(gold_columns or GOLD_COLUMNS))
    name, split, path = parsed
    bench, problems, bad = load_benchmark(name, path, split, image_root=image_root, need_images=True,
                                          id_prefix=f"{name}/{split}/")
    if not bench.has_answers(split):
        raise ValueError(f"{name} {split}: the answers are not public; a held-out set needs a split with answers")
    return problems, [b.as_dict() for b in bad]


__all__ = ["load_benchmark", "load_eval_set", "parse_ref", "ref_path", "read_rows", "resolve_image"]
