"""The request loop of a worker process that serves its parent over a ``multiprocessing`` pipe.

    >>> for request in requests(conn):  # doctest: +SKIP
    ...     conn.send(handle(request))
"""

from __future__ import annotations

from typing import Any, Iterator


def requests(conn: Any) -> Iterator[Any]:
    """Each message the parent sends, until it sends ``None`` (stop) or its end of the pipe is gone."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent died or closed the pipe: nothing more will come
            return
        if msg is None:
            return
        yield msg
