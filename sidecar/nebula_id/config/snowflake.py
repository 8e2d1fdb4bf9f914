"""The Snowflake layout and the standalone node's IDs.

In a cluster the layout is the pool's (``spec.snowflake``); these settings give
it in standalone mode and to `nebula-id parse`.
"""

from __future__ import annotations

import dataclasses

from nebula_id import errors
from nebula_id.config import loader
from nebula_id.core import layout as layouts
from nebula_id.core import pool as pools


@dataclasses.dataclass(frozen=True, slots=True)
class SnowflakeSettings:
    """The bit layout, the clock tolerance, and the standalone worker and datacenter IDs."""

    epoch: str = layouts.DEFAULT_EPOCH
    """RFC 3339 epoch of the timestamps."""
    timestamp_bits: int = 41
    """Bits of the millisecond timestamp."""
    datacenter_bits: int = 5
    """Bits of the datacenter ID."""
    worker_bits: int = 5
    """Bits of the worker ID."""
    sequence_bits: int = 12
    """Bits of the per-millisecond sequence."""
    clock_backward_tolerance_ms: int = pools.DEFAULT_TOLERANCE_MS
    """A clock rollback up to this is waited out; a larger one answers 503."""
    worker_id: int = 0
    """The standalone node's worker ID."""
    datacenter_id: int = 0
    """The standalone node's datacenter ID."""

    def __post_init__(self) -> None:
        if not 0 <= self.clock_backward_tolerance_ms <= 1000:
            raise errors.ConfigError(
                "clock_backward_tolerance_ms must be 0..1000, "
                f"got {self.clock_backward_tolerance_ms}"
            )
        try:
            self.layout()
        except errors.InvalidLayout as e:
            raise errors.ConfigError(f"snowflake layout: {e.message}") from e

    def check_ids(self) -> None:
        """The standalone worker and datacenter IDs fit in the layout."""
        layout = self.layout()
        if not 0 <= self.worker_id <= layout.max_worker:
            raise errors.ConfigError(
                f"worker_id {self.worker_id} does not fit in "
                f"snowflake_worker_bits={layout.worker_bits} (0..{layout.max_worker})"
            )
        if not 0 <= self.datacenter_id <= layout.max_datacenter:
            raise errors.ConfigError(
                f"datacenter_id {self.datacenter_id} does not fit in "
                f"snowflake_datacenter_bits={layout.datacenter_bits} (0..{layout.max_datacenter})"
            )

    def layout(self) -> layouts.SnowflakeLayout:
        return layouts.SnowflakeLayout(
            timestamp_bits=self.timestamp_bits,
            datacenter_bits=self.datacenter_bits,
            worker_bits=self.worker_bits,
            sequence_bits=self.sequence_bits,
            epoch_ms=layouts.parse_epoch(self.epoch),
        )


def _bits(name: str, help: str) -> loader.Field[object]:
    return loader.Field(
        f"snowflake_{name}", loader.integer, (f"snowflake.{name}",), help, attr=name
    )


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field("snowflake_epoch", loader.text, ("snowflake.epoch",), "RFC 3339 epoch",
                 attr="epoch"),
    _bits("timestamp_bits", "timestamp bits"),
    _bits("datacenter_bits", "datacenter bits"),
    _bits("worker_bits", "worker bits"),
    _bits("sequence_bits", "sequence bits"),
    loader.Field(
        "clock_backward_tolerance_ms", loader.integer,
        ("snowflake.clock_backward_tolerance_ms",), "wait for rollbacks up to this",
    ),
    loader.Field("worker_id", loader.integer, ("snowflake.worker_id",), "standalone worker ID"),
    loader.Field(
        "datacenter_id", loader.integer, ("snowflake.datacenter_id",), "standalone datacenter ID"
    ),
)  # fmt: skip
