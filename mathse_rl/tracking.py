"""Metrics to the console and to wandb, with one small interface.

    >>> t = Tracker(report_to=["console"])
    >>> t.log({"round": 1, "accept_rate": 0.25}, step=1)   # doctest: +SKIP
    [step 1] round=1 accept_rate=0.25
    >>> t.finish()

wandb follows its own environment (``WANDB_MODE=offline`` in tests); images in tables
may be PIL images or file paths.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

KNOWN_SINKS = ("console", "wandb", "none")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.4g}"
    return str(value)


class Tracker:
    """Logs scalar dicts and example tables to every configured sink."""

    def __init__(self, report_to: Sequence[str] | str = ("console",), *, project: str = "mathse-rl",
                 run_name: str | None = None, config: Mapping[str, Any] | None = None, dir: str | None = None,
                 printer: Any = print):
        sinks = [report_to] if isinstance(report_to, str) else list(report_to)
        unknown = [s for s in sinks if s not in KNOWN_SINKS]
        if unknown:
            raise ValueError(f"unknown report_to {unknown}; choose from {KNOWN_SINKS}")
        self.sinks = [s for s in sinks if s != "none"]
        self.printer = printer
        self.history: list[dict[str, Any]] = []
        self.tables: dict[str, list[list[Any]]] = {}
        self.summaries: dict[str, Any] = {}
        self.run = None
        if "wandb" in self.sinks:
            import wandb

            self.run = wandb.init(project=project, name=run_name, config=dict(config or {}), dir=dir, reinit=True)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        scalars = {k: v for k, v in metrics.items() if v is None or isinstance(v, (numbers.Number, str, bool))}
        self.history.append({"step": step, **scalars})
        if "console" in self.sinks:
            head = f"[step {step}] " if step is not None else ""
            self.printer(head + " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items() if v is not None))
        if self.run is not None:
            self.run.log({k: v for k, v in scalars.items() if isinstance(v, numbers.Number)}, step=step)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None:
        """A table of examples; an ``image`` column holds PIL images or paths."""
        self.tables[name] = [list(r) for r in rows]
        if self.run is None or not rows:
            return
        import wandb

        self._table_calls = getattr(self, "_table_calls", 0) + 1

        def cell(col: str, value: Any, row: int) -> Any:
            if col == "image" and value is not None:
                try:
                    # Bound to the run first, the picture is saved under media/images and the table file
                    # holds a reference to it; an unbound wandb.Image would be written as the text "Image".
                    img = wandb.Image(value)
                    img.bind_to_run(self.run, name, step if step is not None else 0, id_=f"{self._table_calls}_{row}")
                    return img.to_json(self.run)
                except Exception as exc:  # an unreadable image must not stop the run
                    logger.warning("table %s: image not logged (%s)", name, exc)
                    return None
            return value if isinstance(value, (numbers.Number, str, bool)) or value is None else str(value)

        data = [[cell(c, v, i) for c, v in zip(columns, r)] for i, r in enumerate(rows)]
        table = wandb.Table(columns=list(columns), data=data, allow_mixed_types=True)
        self.run.log({name: table}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Run-level facts (what the run delivers, which stages made things worse): wandb's run
        summary, and kept in ``self.summaries``."""
        self.summaries.update(values)
        if self.run is not None:
            self.run.summary.update(dict(values))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
