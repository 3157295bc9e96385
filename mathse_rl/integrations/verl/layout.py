"""How a step's trained rows are laid out over verl's optimizer steps when MathSE changes their number.

verl trains a step's batch in ``train_batch_size / ppo_mini_batch_size`` mini-batches of
``ppo_mini_batch_size x rollout.n`` rows, one optimizer step each (times ``ppo_epochs``). Its
dispatch hands each data-parallel rank a contiguous ``1/dp`` of the batch, and each rank cuts its
share into mini-batches in order (``actor.shuffle`` off) or in a seeded random order (on). verl
pads a batch whose length is not a multiple of ``dp x mini-batch`` with rows of no loss
(``trainer.ppo.padding_utils``), and its balancer keeps each rank's indices sorted, so those
padding rows sit at the end of every rank: a batch a few rows too long gets a whole extra
optimizer step for the rows that spilled over, one widened to fit them gets steps of padding only.

MathSE changes the number of trained rows of a step: ``reflect_mode: add`` puts verified
refinements beside their failures (more rows), ``mathse_rft`` trains only what the judge accepted
(fewer rows). :func:`mini_batch_rows` keeps verl's number of optimizer steps and sizes each
mini-batch to the rows there are, with the least padding verl's workers allow (whole micro-batches
on every rank); :func:`spread_padding` then orders each rank's share so every optimizer step gets
an equal part of the real rows, as verl's own unpadded batch would.

    >>> mini_batch_rows(2561, steps=4, dp=8, update_micro=8, infer_micros=(16, 16))   # 7B recipe, 1 refinement
    88
    >>> spread_padding([False] * 3 + [True] * 3, steps=3)    # one rank: 3 real rows, 3 padding, 3 steps
    [0, 3, 1, 4, 2, 5]
"""

from __future__ import annotations

import math
from typing import Sequence


def mini_batch_rows(rows: int, *, steps: int, dp: int, update_micro: int | None = None,
                    infer_micros: Sequence[int] = ()) -> int:
    """Rows per rank per mini-batch for ``rows`` trained rows in ``steps`` optimizer steps on ``dp`` ranks.

    The smallest ``b`` with ``dp x steps x b >= rows`` such that a rank's mini-batch is whole
    micro-batches of the update (``update_micro``, None with dynamic batch sizes) and a rank's
    whole share (``steps x b``) is whole micro-batches of every log-prob pass (``infer_micros``).
    verl's workers assert both.

    >>> mini_batch_rows(2560, steps=4, dp=8, update_micro=8, infer_micros=(16,))   # verl's own: 80
    80
    >>> mini_batch_rows(11, steps=1, dp=2)   # dynamic batch sizes: 6 rows per rank, 1 of padding
    6
    """
    if rows < 1 or steps < 1 or dp < 1:
        raise ValueError(f"rows, steps and dp must be >= 1, got {rows}, {steps}, {dp}")
    unit = int(update_micro or 1)
    infer = math.lcm(*[int(m) for m in infer_micros if m]) if any(infer_micros) else 1
    # steps * b must be a multiple of `infer`: b a multiple of infer / gcd(infer, steps)
    unit = math.lcm(unit, infer // math.gcd(infer, steps))
    b = math.ceil(rows / (dp * steps))
    return math.ceil(b / unit) * unit


def spread_padding(is_padding: Sequence[bool], steps: int) -> list[int]:
    """An order of one rank's rows (indices into ``is_padding``) in which each of its ``steps``
    consecutive mini-batches gets an equal share of the real rows (the first ``real % steps`` one
    more), real rows keeping their relative order, padding filling each mini-batch up.

    >>> spread_padding([False, False, True, False, True, True, True, True], steps=2)
    [0, 1, 2, 4, 3, 5, 6, 7]
    """
    n = len(is_padding)
    if steps < 1 or n % steps:
        raise ValueError(f"{n} rows do not split into {steps} equal mini-batches")
    real = [i for i, pad in enumerate(is_padding) if not pad]
    pads = [i for i, pad in enumerate(is_padding) if pad]
    size = n // steps
    base, extra = divmod(len(real), steps)
    order: list[int] = []
    for step in range(steps):
        take = base + (1 if step < extra else 0)
        order += real[:take]
        real = real[take:]
        order += pads[:size - take]
        pads = pads[size - take:]
    return order


def spread_over_ranks(is_padding: Sequence[bool], dp: int, steps: int) -> list[int]:
    """The batch order in which every rank's contiguous share is :func:`spread_padding`-ed.

    >>> spread_over_ranks([False, False, True, True], dp=1, steps=2)
    [0, 2, 1, 3]
    """
    share = len(is_padding) // dp
    return [r * share + i for r in range(dp)
            for i in spread_padding(list(is_padding[r * share:(r + 1) * share]), steps)]


def rows_per_step(is_padding: Sequence[bool], dp: int, mini_batch_rows_per_rank: int) -> list[int]:
    """Real rows each optimizer step trains (``actor.shuffle`` off): rank ``r`` holds the
    ``r``-th contiguous ``1/dp`` of the batch and takes its mini-batches in order.

    >>> rows_per_step([False] * 5 + [True] * 3, dp=2, mini_batch_rows_per_rank=2)
    [3, 2]
    """
    n = len(is_padding)
    share = n // dp
    steps = share // mini_batch_rows_per_rank
    out = [0] * steps
    for rank in range(dp):
        for step in range(steps):
            start = rank * share + step * mini_batch_rows_per_rank
            out[step] += sum(not p for p in is_padding[start:start + mini_batch_rows_per_rank])
    return out
