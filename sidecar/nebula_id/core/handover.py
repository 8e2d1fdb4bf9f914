"""Continuing above the Snowflake generator a pool replaces.

A pool can declare, under ``spec.snowflake``, how far the old generator went:
``previousMaxId`` (the highest ID it ever issued) or ``previousStoppedAt`` (a
time after which it issued nothing, meaningful when it used this pool's epoch
and timestamp shift, as a re-created pool does).  Both become one wall-clock
millisecond, `issue_after_ms`: every worker issues only IDs whose timestamp is
later.  Since an ID's timestamp sits in its top bits, an ID with a later
timestamp than ``previousMaxId``'s is numerically larger than it, whatever
datacenter, worker or sequence it carries.

When the layout can never get there (the old IDs lie beyond the last timestamp
the layout can express), or only after a wait longer than `MAX_WAIT_MS`, the
pool is refused with the reason, and the epoch that would work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonObject

MAX_WAIT_MS = 10 * 60 * 1000
"""Workers wait for the clock this long at most; a pool that needs longer is refused."""

_WHERE = "spec.snowflake"


@dataclasses.dataclass(frozen=True, slots=True)
class PreviousGenerator:
    """What the pool knows about the generator it replaces."""

    max_id: int | None = None
    stopped_at_ms: int | None = None

    def issue_after_ms(self, layout: layouts.SnowflakeLayout) -> int:
        """The Unix ms every new ID's timestamp must exceed (-1: no constraint)."""
        after = -1
        if self.max_id is not None:
            after = layout.epoch_ms + (self.max_id >> layout.timestamp_shift)
        if self.stopped_at_ms is not None:
            after = max(after, self.stopped_at_ms)
        return after

    def to_json(self) -> JsonObject:
        doc: JsonObject = {}
        if self.max_id is not None:
            doc["previousMaxId"] = self.max_id
        if self.stopped_at_ms is not None:
            doc["previousStoppedAt"] = layouts.format_epoch(self.stopped_at_ms)
        return doc


def parse(
    raw: Mapping[str, object], layout: layouts.SnowflakeLayout, *, now_ms: int | None = None
) -> PreviousGenerator | None:
    """`spec.snowflake.previousMaxId` / `previousStoppedAt`, checked against the layout.

    `now_ms` also refuses a pool whose workers would wait longer than `MAX_WAIT_MS`.
    """
    max_id = _max_id(raw.get("previousMaxId"))
    stopped_at = _stopped_at(raw.get("previousStoppedAt"))
    if max_id is None and stopped_at is None:
        return None
    previous = PreviousGenerator(max_id=max_id, stopped_at_ms=stopped_at)
    after = previous.issue_after_ms(layout)
    by_id = PreviousGenerator(max_id=max_id).issue_after_ms(layout)
    field = "previousMaxId" if by_id == after else "previousStoppedAt"
    needs = f"{_WHERE}.{field}: new IDs must carry timestamps after {layouts.format_epoch(after)}"
    last_ms = layout.epoch_ms + layout.max_timestamp
    if after >= last_ms:
        raise errors.InvalidPool(
            f"{needs}, but {layout.timestamp_bits} timestamp bits from epoch "
            f"{layouts.format_epoch(layout.epoch_ms)} end at {layouts.format_epoch(last_ms)}: "
            "this layout can never issue an ID above the previous generator's; "
            + _advice(previous, layout, now_ms)
        )
    if now_ms is not None and after - now_ms > MAX_WAIT_MS:
        raise errors.InvalidPool(
            f"{needs}, {(after - now_ms) / 3_600_000:.1f} hours from now, and workers wait "
            f"at most {MAX_WAIT_MS // 60_000} minutes; " + _advice(previous, layout, now_ms)
        )
    return previous


def _advice(
    previous: PreviousGenerator, layout: layouts.SnowflakeLayout, now_ms: int | None
) -> str:
    if previous.max_id is None or now_ms is None:
        return "declare a time that has passed, once the old generator is stopped"
    # With epoch E, IDs issued now carry (now - E) << shift, above max_id when
    # now - E > max_id >> shift.
    latest = now_ms - (previous.max_id >> layout.timestamp_shift) - 1
    if latest < 0:
        return "no epoch can do that now: the old IDs are too large for this layout's shift"
    return f"an epoch at or before {layouts.format_epoch(latest)} would start above them now"


def _max_id(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 63):
        raise errors.InvalidPool(
            f"{_WHERE}.previousMaxId must be an integer 0..2^63-1 (a decimal string is fine), "
            f"got {value!r}"
        )
    return value


def _stopped_at(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.InvalidPool(
            f"{_WHERE}.previousStoppedAt must be an RFC 3339 timestamp, got {value!r}"
        )
    try:
        return layouts.parse_epoch(value)
    except errors.InvalidLayout as e:
        raise errors.InvalidPool(f"{_WHERE}.previousStoppedAt: {e.message}") from e
