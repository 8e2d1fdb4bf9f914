"""The datacenter health document: what the operator publishes, what a sidecar believes.

The operator probes every datacenter's database and writes one JSON document at
`PoolKeys.health`; every sidecar of the pool reads it to steer its segment
ranges (`core.failover`).  This module is that contract, in one place:
`HealthDocument` describes it, `build` writes it (operator) and `parse` reads
and validates it.  `judge` is what a sidecar takes from a document it read:
only fresh entries, because the data plane must not depend on a stopped
operator.

Pure: times are handed in, no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Protocol, TypedDict

from nebula_id import errors


class DatacenterEntry(TypedDict):
    """One datacenter's last check."""

    healthy: bool
    reason: str
    """Why it is (un)healthy, for people: ``ok`` or the probe's error."""
    checkedAt: str
    """RFC 3339 time of the check."""


class HealthDocument(TypedDict):
    """The JSON at `PoolKeys.health`."""

    datacenters: dict[str, DatacenterEntry]
    """By datacenter name."""
    updatedAt: str
    """RFC 3339 time the document was written."""


class Checked(Protocol):
    """One datacenter's check, as the operator keeps it."""

    @property
    def name(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def checked_at(self) -> str: ...


Verdict = tuple[bool, str]
"""(healthy, reason) of one datacenter, as a sidecar believes it."""


class InvalidHealthDocument(errors.InvalidArgument):
    """A health document that does not have the shape of `HealthDocument`."""


def build(checks: Iterable[Checked], *, updated_at: str) -> HealthDocument:
    """The document for the last check of each datacenter, written at `updated_at`."""
    return {
        "datacenters": {
            c.name: {"healthy": c.healthy, "reason": c.reason, "checkedAt": c.checked_at}
            for c in checks
        },
        "updatedAt": updated_at,
    }


def parse(raw: object) -> HealthDocument:
    """The document in `raw` (decoded JSON), checked; `InvalidHealthDocument` names the fault.

    An entry without ``reason`` reads as ``""`` and one without ``checkedAt``
    as checked when the document was written.
    """
    updated_at, entries = _envelope(raw)
    return {
        "datacenters": {name: _entry(name, entry, updated_at) for name, entry in entries.items()},
        "updatedAt": updated_at,
    }


def judge(raw: object, *, now_ms: int, max_age_s: float) -> dict[str, Verdict | None]:
    """What a sidecar may believe of a document read at `now_ms`, for `Failover.observe_health`.

    A document older than `max_age_s`, or one that cannot be read, says nothing
    (``{}``); an entry that is older, or cannot be read, says "unknown" (None).
    Stale health is treated as unknown, never as unhealthy: the sidecar then
    falls back on its own failure counts.
    """
    try:
        updated_at, entries = _envelope(raw)
    except InvalidHealthDocument:
        return {}
    if _older_than(updated_at, now_ms=now_ms, max_age_s=max_age_s):
        return {}
    verdicts: dict[str, Verdict | None] = {}
    for name, raw_entry in entries.items():
        try:
            entry = _entry(name, raw_entry, updated_at)
        except InvalidHealthDocument:
            verdicts[name] = None
            continue
        if _older_than(entry["checkedAt"], now_ms=now_ms, max_age_s=max_age_s):
            verdicts[name] = None
            continue
        verdicts[name] = (entry["healthy"], entry["reason"])
    return verdicts


def rfc3339_ms(value: str) -> int | None:
    """Unix milliseconds of an RFC 3339 time with a zone, or None when it is not one."""
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


def _older_than(moment: str, *, now_ms: int, max_age_s: float) -> bool:
    ms = rfc3339_ms(moment)
    return ms is None or now_ms - ms > max_age_s * 1000


def _time(value: object, where: str) -> str:
    if not isinstance(value, str) or rfc3339_ms(value) is None:
        raise InvalidHealthDocument(
            f"health document: {where} must be an RFC 3339 time with a zone, got {value!r:.60}"
        )
    return value


def _envelope(raw: object) -> tuple[str, Mapping[str, object]]:
    """(updatedAt, the raw entries by name) of a document, checked."""
    if not isinstance(raw, Mapping):
        raise InvalidHealthDocument(
            f"health document: must be a JSON object, got {type(raw).__name__}"
        )
    updated_at = _time(raw.get("updatedAt"), "updatedAt")
    entries = raw.get("datacenters")
    if not isinstance(entries, Mapping):
        raise InvalidHealthDocument(
            f"health document: datacenters must be an object by name, got {entries!r:.60}"
        )
    for name in entries:
        if not isinstance(name, str):
            raise InvalidHealthDocument(f"health document: a datacenter name is {name!r}")
    return updated_at, entries


def _entry(name: str, raw: object, updated_at: str) -> DatacenterEntry:
    where = f"datacenters[{name!r}]"
    if not isinstance(raw, Mapping):
        raise InvalidHealthDocument(f"health document: {where} must be an object, got {raw!r:.60}")
    healthy = raw.get("healthy")
    if not isinstance(healthy, bool):
        raise InvalidHealthDocument(
            f"health document: {where}.healthy must be true or false, got {healthy!r:.60}"
        )
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidHealthDocument(
            f"health document: {where}.reason must be a string, got {reason!r:.60}"
        )
    checked_at = _time(raw.get("checkedAt", updated_at), f"{where}.checkedAt")
    return {"healthy": healthy, "reason": reason, "checkedAt": checked_at}
