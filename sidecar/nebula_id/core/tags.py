"""A segment tag: its name, its configured (minimum) step and the most the step may grow to.

One type for the pool spec, the standalone settings and the segment buffers, and
validated here, once: every `Tag` that exists is a valid one.
"""

from __future__ import annotations

import dataclasses
import re

from nebula_id import errors

TAG_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
"""1-63 lowercase letters, digits, '-', '_' or '.', starting and ending alphanumeric."""
DEFAULT_STEP = 1000
DEFAULT_MAX_STEP = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Tag:
    """One segment tag (``spec.segment.tags[]``)."""

    name: str
    step: int = DEFAULT_STEP
    """The configured step: the smallest range fetched at once."""
    max_step: int = DEFAULT_MAX_STEP
    """The most the step may grow to when ranges are used up quickly."""

    def __post_init__(self) -> None:
        """Each message names the field (``name``, ``step``), for the caller to place."""
        if not isinstance(self.name, str) or not TAG_NAME.match(self.name):
            raise errors.InvalidArgument(
                "name must be 1-63 lowercase letters, digits, '-', '_' or '.', "
                f"starting and ending alphanumeric; got {self.name!r}"
            )
        if self.step < 1:
            raise errors.InvalidArgument(f"step must be at least 1, got {self.step}")
        if self.max_step < self.step:
            raise errors.InvalidArgument(
                f"step ({self.step}) must not exceed maxStep ({self.max_step})"
            )


def default_max_step(step: int) -> int:
    """The maxStep of a tag that gives only its step."""
    return max(DEFAULT_MAX_STEP, step)
