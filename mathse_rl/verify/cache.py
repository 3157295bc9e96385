"""A least-recently-used cache bounded by entries *and* by the characters of its keys.

``functools.lru_cache`` bounds the number of entries only: 300 distinct 1 MB reference
answers kept 300 MB alive. This one also caps the total size of the cached string
arguments, and never caches a call whose arguments alone exceed ``max_item_chars``.

    >>> @bounded_cache(max_entries=2, max_chars=10, max_item_chars=5)
    ... def length(s): return len(s)
    >>> length("abc"), length("x" * 50), length.cache_info()
    (3, 50, CacheInfo(entries=1, chars=3, hits=0, misses=2))
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class CacheInfo(NamedTuple):
    entries: int
    chars: int  # characters of the cached string arguments
    hits: int
    misses: int


def _size(args: tuple) -> int:
    return sum(len(a) if isinstance(a, (str, bytes)) else 64 for a in args)


def bounded_cache(max_entries: int = 65536, max_chars: int = 16 << 20,
                  max_item_chars: int | None = None) -> Callable[[F], F]:
    """Memoise a function of hashable positional arguments within ``max_entries`` entries and
    ``max_chars`` characters of key (``max_item_chars``, default a hundredth of it, per call)."""
    item_cap = max_item_chars if max_item_chars is not None else max(1, max_chars // 100)

    def deco(fn: F) -> F:
        store: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        lock = threading.Lock()
        state = {"chars": 0, "hits": 0, "misses": 0}

        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            with lock:
                hit = store.get(args)
                if hit is not None:
                    store.move_to_end(args)
                    state["hits"] += 1
                    return hit[0]
                state["misses"] += 1
            value = fn(*args)
            size = _size(args)
            if size > item_cap:
                return value  # too big to keep: computed again if asked again
            with lock:
                if args not in store:
                    store[args] = (value, size)
                    state["chars"] += size
                    while len(store) > max_entries or state["chars"] > max_chars:
                        _, (_, dropped) = store.popitem(last=False)
                        state["chars"] -= dropped
            return value

        def cache_info() -> CacheInfo:
            with lock:
                return CacheInfo(len(store), state["chars"], state["hits"], state["misses"])

        def cache_clear() -> None:
            with lock:
                store.clear()
                state.update(chars=0, hits=0, misses=0)

        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
