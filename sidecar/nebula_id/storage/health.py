"""Follow the datacenter health the operator publishes at `PoolKeys.health`.

The operator checks every datacenter's database and writes one JSON document
to etcd.  The sidecar watches that key, so a published change reaches
`core.failover` within one etcd round trip.  A watch that breaks (etcd
restarted, compacted past our revision, a partition) is resumed from a fresh
read.  The last document is re-judged every `recheck_s` against its own
timestamps: when etcd or the operator is away it goes stale, the health becomes
"unknown", and the failover falls back to the sidecar's own failure counts --
the data plane never waits for the control plane.  A slow backstop read every
`max_age_s / 3` catches a watch stream that hangs without breaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core import failover
from nebula_id.core import health as health_doc

log = logging.getLogger(__name__)

RECHECK_S = 1.0
"""How often the last document is re-judged for staleness."""


class _KeyValue(Protocol):
    @property
    def value(self) -> bytes: ...

    @property
    def mod_revision(self) -> int: ...


class _Range(Protocol):
    @property
    def kvs(self) -> tuple[_KeyValue, ...]: ...

    @property
    def revision(self) -> int: ...


class _Event(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def kv(self) -> _KeyValue: ...

    @property
    def revision(self) -> int: ...


class HealthReader(Protocol):
    """What this module needs of `nebula_id.etcd.client.EtcdClient`."""

    async def get(self, key: str, *, call_timeout: float | None = None) -> _KeyValue | None: ...

    async def range(self, key: str, *, call_timeout: float | None = None) -> _Range: ...

    def watch(self, key: str, *, start_revision: int = 0) -> AsyncIterator[_Event]: ...


def decode(value: bytes | None, key: str) -> object:
    """The JSON document, or None when there is none or it cannot be read.

    A document that is JSON but not a valid `core.health.HealthDocument` is
    returned as it is (`core.health.judge` takes what it can of it) and logged.
    """
    if value is None:
        return None
    try:
        doc: object = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        log.warning("the health document at %s is not JSON; ignoring it", key)
        return None
    try:
        health_doc.parse(doc)
    except health_doc.InvalidHealthDocument as e:
        log.warning("the health document at %s is not valid; ignoring what is wrong: %s", key, e)
    return doc


async def read_health(
    client: HealthReader, key: str, *, clock: Clock, max_age_s: float, call_timeout: float
) -> dict[str, tuple[bool, str] | None]:
    """One read of the health document, parsed; `CoordinationError` when etcd fails."""
    kv = await client.get(key, call_timeout=call_timeout)
    doc = decode(kv.value if kv is not None else None, key)
    return health_doc.judge(doc, now_ms=clock.wall_ms(), max_age_s=max_age_s)


class HealthFollower:
    """The last health document seen, fed to a `Failover` as it changes and as it ages."""

    def __init__(
        self,
        client: HealthReader,
        key: str,
        policy: failover.Failover,
        *,
        clock: Clock,
        max_age_s: float | None = None,
        recheck_s: float = RECHECK_S,
        call_timeout: float = 2.0,
    ) -> None:
        """`max_age_s` None: the policy's current `health_max_age_s` (it may change)."""
        self._client = client
        self._key = key
        self._policy = policy
        self._clock = clock
        self._max_age_s = max_age_s
        self._recheck_s = recheck_s
        self._call_timeout = call_timeout
        self._doc: object = None
        self._revision = 0
        self._changed = asyncio.Event()
        self.updates = 0
        """Documents taken in (reads and watch events), for tests and metrics."""

    async def run(self) -> None:
        """Watch, re-judge and back-stop until cancelled; etcd failures are retried."""
        tasks = [
            asyncio.create_task(self._watch(), name=f"health watch {self._key}"),
            asyncio.create_task(self._backstop(), name=f"health read {self._key}"),
        ]
        try:
            await self._apply_loop()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def max_age_s(self) -> float:
        return self._max_age_s or self._policy.settings.health_max_age_s

    def _take(self, value: bytes | None, revision: int) -> None:
        if revision < self._revision:
            return  # a backstop read that raced a newer watch event
        self._revision = revision
        self._doc = decode(value, self._key)
        self.updates += 1
        self._changed.set()

    async def _apply_loop(self) -> None:
        while True:
            self._policy.observe_health(
                health_doc.judge(self._doc, now_ms=self._clock.wall_ms(), max_age_s=self.max_age_s)
            )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._recheck_s):
                    await self._changed.wait()

    async def _watch(self) -> None:
        backoff = 0.1
        while True:
            try:
                current = await self._client.range(self._key, call_timeout=self._call_timeout)
                self._take(current.kvs[0].value if current.kvs else None, current.revision)
                async for event in self._client.watch(
                    self._key, start_revision=current.revision + 1
                ):
                    self._take(event.kv.value if event.type == "PUT" else None, event.revision)
                    backoff = 0.1
            except errors.CoordinationError as e:
                log.debug("health watch of %s broke (%s); resuming", self._key, e.message)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _backstop(self) -> None:
        while True:
            await asyncio.sleep(self.max_age_s / 3)
            try:
                kv = await self._client.get(self._key, call_timeout=self._call_timeout)
            except errors.CoordinationError:
                continue
            if kv is not None:
                self._take(kv.value, kv.mod_revision)
