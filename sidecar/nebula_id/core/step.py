"""Leaf's adaptive segment step.

A range should last long enough that the database is asked rarely, and not so
long that a restart throws away a huge gap.  So the step follows demand: it
doubles (up to the tag's ``maxStep``) when the previous range was used up in
under 15 minutes, and halves (but not below the configured ``step``) when it
lasted over 30.
"""

from __future__ import annotations

GROW_BELOW_S = 900.0
SHRINK_ABOVE_S = 1800.0


def next_step(
    *,
    current: int,
    min_step: int,
    max_step: int,
    last_load_ms: int | None,
    now_ms: int,
    grow_below_s: float = GROW_BELOW_S,
    shrink_above_s: float = SHRINK_ABOVE_S,
) -> int:
    """The step for the next range.

    `last_load_ms` is when the previous range was loaded (None for the first
    load); `now_ms` is now, on the same clock.  The result is always within
    ``[min_step, max_step]``.
    """
    if last_load_ms is None:
        step = current
    else:
        lasted_s = (now_ms - last_load_ms) / 1000
        if lasted_s < grow_below_s:
            step = current * 2
        elif lasted_s > shrink_above_s:
            step = current // 2
        else:
            step = current
    return max(min_step, min(max_step, step))
