"""The Snowflake bit layout: compose and parse 63-bit IDs.

An ID is ``timestamp | datacenter | worker | sequence`` from high bits to low,
with the sign bit always 0 so IDs stay positive in signed 64-bit columns.  The
timestamp counts milliseconds since the pool's epoch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from nebula_id import errors

DEFAULT_EPOCH = "2024-01-01T00:00:00Z"
ID_BITS = 63


def parse_epoch(text: str) -> int:
    """An RFC 3339 timestamp (or integer milliseconds) as Unix milliseconds."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        moment = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError as e:
        raise errors.InvalidLayout(
            f"epoch {text!r} is not an RFC 3339 timestamp such as {DEFAULT_EPOCH}"
        ) from e
    if moment.tzinfo is None:
        raise errors.InvalidLayout(f"epoch {text!r} needs a time zone, for example a trailing Z")
    return int(moment.timestamp() * 1000)


MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last moment `format_epoch` can write."""


def format_epoch(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedId:
    """The parts of a Snowflake ID."""

    id: int
    timestamp_ms: int  # Unix milliseconds
    datacenter: int
    worker: int
    sequence: int


@dataclasses.dataclass(frozen=True, slots=True)
class SnowflakeLayout:
    """How the 63 bits of an ID are split, and the epoch they count from."""

    timestamp_bits: int = 41
    datacenter_bits: int = 5
    worker_bits: int = 5
    sequence_bits: int = 12
    epoch_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z

    def __post_init__(self) -> None:
        parts = {
            "timestampBits": self.timestamp_bits,
            "datacenterBits": self.datacenter_bits,
            "workerBits": self.worker_bits,
            "sequenceBits": self.sequence_bits,
        }
        for name, bits in parts.items():
            if bits < 0:
                raise errors.InvalidLayout(f"{name} must not be negative, got {bits}")
        if self.timestamp_bits < 30:
            raise errors.InvalidLayout(
                f"timestampBits must be at least 30 (about 12 days), got {self.timestamp_bits}"
            )
        if self.sequence_bits < 1:
            raise errors.InvalidLayout("sequenceBits must be at least 1")
        total = sum(parts.values())
        if total != ID_BITS:
            raise errors.InvalidLayout(
                "timestampBits + datacenterBits + workerBits + sequenceBits must sum to 63 "
                f"(the sign bit stays 0), got {total}"
            )
        if self.epoch_ms < 0:
            raise errors.InvalidLayout("the epoch must not be before 1970")

    # Shifts and masks, derived once.
    @property
    def worker_shift(self) -> int:
        return self.sequence_bits

    @property
    def datacenter_shift(self) -> int:
        return self.sequence_bits + self.worker_bits

    @property
    def timestamp_shift(self) -> int:
        return self.sequence_bits + self.worker_bits + self.datacenter_bits

    @property
    def max_sequence(self) -> int:
        return (1 << self.sequence_bits) - 1

    @property
    def max_worker(self) -> int:
        return (1 << self.worker_bits) - 1

    @property
    def max_datacenter(self) -> int:
        return (1 << self.datacenter_bits) - 1

    @property
    def max_timestamp(self) -> int:
        """The largest offset from the epoch, in milliseconds."""
        return (1 << self.timestamp_bits) - 1

    @property
    def worker_capacity(self) -> int:
        return 1 << self.worker_bits

    def check_node(self, *, datacenter: int, worker: int) -> None:
        """Raise unless the datacenter and worker IDs fit their bits."""
        if not 0 <= datacenter <= self.max_datacenter:
            raise errors.InvalidLayout(
                f"datacenter ID {datacenter} does not fit in {self.datacenter_bits} bits "
                f"(0..{self.max_datacenter})"
            )
        if not 0 <= worker <= self.max_worker:
            raise errors.InvalidLayout(
                f"worker ID {worker} does not fit in {self.worker_bits} bits (0..{self.max_worker})"
            )

    def check_epoch(self, now_ms: int) -> None:
        """Raise if the epoch is in the future or the layout has already run out."""
        if self.epoch_ms > now_ms:
            raise errors.InvalidLayout(
                f"the epoch {format_epoch(self.epoch_ms)} is in the future; IDs would be negative"
            )
        if now_ms - self.epoch_ms > self.max_timestamp:
            raise errors.InvalidLayout(
                f"{self.timestamp_bits} timestamp bits from epoch {format_epoch(self.epoch_ms)} "
                "have already run out"
            )

    def node_bits(self, *, datacenter: int, worker: int) -> int:
        """The datacenter and worker part of every ID of one node."""
        return (datacenter << self.datacenter_shift) | (worker << self.worker_shift)

    def compose(self, *, timestamp_ms: int, datacenter: int, worker: int, sequence: int) -> int:
        """Build an ID from Unix milliseconds and the node and sequence numbers."""
        self.check_node(datacenter=datacenter, worker=worker)
        offset = timestamp_ms - self.epoch_ms
        if not 0 <= offset <= self.max_timestamp:
            raise errors.InvalidLayout(
                f"timestamp {timestamp_ms} is outside the layout's range from its epoch"
            )
        if not 0 <= sequence <= self.max_sequence:
            raise errors.InvalidLayout(
                f"sequence {sequence} does not fit in {self.sequence_bits} bits"
            )
        return (
            (offset << self.timestamp_shift)
            | self.node_bits(datacenter=datacenter, worker=worker)
            | sequence
        )

    def parse(self, value: int) -> ParsedId:
        """Split an ID into its parts; raises `InvalidLayout` for a negative or oversize ID."""
        if not 0 <= value < (1 << ID_BITS):
            raise errors.InvalidLayout(f"{value} is not a 63-bit Snowflake ID")
        timestamp_ms = (value >> self.timestamp_shift) + self.epoch_ms
        if timestamp_ms > MAX_TIMESTAMP_MS:
            # A wide timestamp field reaches past what a date can say; no clock
            # ever issued such an ID.
            raise errors.InvalidLayout(
                f"{value} would carry a timestamp after the year 9999; "
                "it is not an ID of this layout"
            )
        return ParsedId(
            id=value,
            timestamp_ms=timestamp_ms,
            datacenter=(value >> self.datacenter_shift) & self.max_datacenter,
            worker=(value >> self.worker_shift) & self.max_worker,
            sequence=value & self.max_sequence,
        )

    @property
    def largest_parsable_id(self) -> int:
        """The largest ID `parse` accepts: 63 bits, and a timestamp no later than year 9999."""
        last_ms = MAX_TIMESTAMP_MS - self.epoch_ms
        if last_ms < 0:
            return -1
        return min((1 << ID_BITS) - 1, ((last_ms + 1) << self.timestamp_shift) - 1)

    def parse_text(self, text: str) -> ParsedId:
        """Parse a decimal ID as given in a URL or on the command line."""
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 19:
            raise errors.InvalidArgument(f"{text!r} is not a decimal Snowflake ID")
        return self.parse(int(stripped))

    def to_json(self) -> dict[str, int | str]:
        return {
            "epoch": format_epoch(self.epoch_ms),
            "timestampBits": self.timestamp_bits,
            "datacenterBits": self.datacenter_bits,
            "workerBits": self.worker_bits,
            "sequenceBits": self.sequence_bits,
        }
