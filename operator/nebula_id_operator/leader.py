"""Leader election through an etcd lease: only one operator replica reconciles.

The leader owns ``{prefix}/operator/leader``: a key created only if absent, in
one transaction, attached to a lease with a short TTL (5 s by default).  The
leader renews the lease every TTL/3 and stops leading at a *local* deadline:
the send time of the last renewal that etcd acknowledged, plus the TTL, minus
a margin (`nebula_id.core.lease`, the same arithmetic as a worker ID's).
Because etcd counts the TTL from when the renewal arrives, the old leader
always gives up before etcd frees the key for a standby, so two
replicas never lead at once (what the process does then is `main`'s job: it
stops kopf and exits, and Kubernetes restarts it as a standby).

Standbys poll the key every TTL/5; when the leader dies its key expires with
its lease and the first standby to create it leads.  Failover therefore takes
about TTL + TTL/5 + kopf's start-up: well under 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core import lease as leases
from nebula_id.etcd import client as etcd

log = logging.getLogger(__name__)


class LeadershipLost(errors.CoordinationError):
    """The lease behind our leadership could not be proven valid any more."""


@dataclasses.dataclass(frozen=True, slots=True)
class ElectionState:
    alive: bool = True
    is_leader: bool = False
    etcd_reachable: bool = False
    reason: str = "starting"
    leader: str | None = None
    """The identity stored in the leader key, when known."""


class LeaderElection:
    """Campaign for, hold and resign the leader key."""

    def __init__(
        self,
        client: etcd.EtcdClient,
        *,
        key: str,
        identity: str,
        ttl_seconds: int,
        clock: Clock,
        margin_seconds: float | None = None,
    ) -> None:
        self._client = client
        self._key = key
        self._identity = identity
        self._ttl = ttl_seconds
        self._clock = clock
        self._timing = leases.LeaseTiming(ttl_seconds, renewals=3, margin_seconds=margin_seconds)
        self._lease: int | None = None
        self._deadline = 0.0
        self.state = ElectionState()

    @property
    def identity(self) -> str:
        return self._identity

    def fence(self) -> list[etcd.Compare]:
        """The etcd condition "we still lead", to put in every destructive transaction.

        The local deadline says we *should* still lead; this makes etcd check it at the
        moment of the write, so a leader paused past its lease writes nothing.
        """
        lease = self._lease
        if lease is None:
            raise LeadershipLost(f"{self._identity} is not the leader")
        return [etcd.Compare.lease_equals(self._key, lease)]

    def holds(self) -> bool:
        """True while leadership is proven by the local deadline."""
        return self._lease is not None and leases.proven(self._deadline, self._clock.monotonic())

    async def try_acquire(self) -> bool:
        """One attempt: create the key if absent; True when we lead."""
        try:
            current = await self._client.get(self._key)
            if current is not None:
                holder = current.value.decode("utf-8", errors="replace")
                self.state = ElectionState(etcd_reachable=True, reason="standby", leader=holder)
                return False
            sent = self._clock.monotonic()
            lease = await self._client.grant(self._ttl)
            result = await self._client.txn(
                [etcd.Compare.absent(self._key)],
                [etcd.Put(self._key, self._identity.encode("utf-8"), lease=lease.id)],
            )
            if not result.succeeded:
                await self._client.revoke(lease.id)
                self.state = ElectionState(etcd_reachable=True, reason="lost the race")
                return False
        except errors.CoordinationError as e:
            self.state = ElectionState(etcd_reachable=False, reason=f"etcd: {e.message}")
            return False
        self._lease = lease.id
        self._deadline = self._timing.deadline(sent, ttl_seconds=lease.ttl)
        self.state = ElectionState(
            is_leader=True, etcd_reachable=True, reason="leader", leader=self._identity
        )
        log.info("%s is the leader now (lease %x)", self._identity, lease.id)
        return True

    async def campaign(self, stop: asyncio.Event) -> bool:
        """Wait until we lead (True) or `stop` is set (False)."""
        poll = max(0.2, self._ttl / 5)
        while not stop.is_set():
            if await self.try_acquire():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)
        return False

    async def hold(self) -> None:
        """Renew the lease until it cannot be proven valid; then raise `LeadershipLost`."""
        if self._lease is None:
            raise LeadershipLost("not the leader")
        while True:
            left = leases.remaining(self._deadline, self._clock.monotonic())
            await asyncio.sleep(min(self._timing.interval, left))
            if not leases.proven(self._deadline, self._clock.monotonic()):
                break
            sent = self._clock.monotonic()
            try:
                ttl = await self._client.keepalive(
                    self._lease, call_timeout=max(0.1, leases.remaining(self._deadline, sent))
                )
            except etcd.LeaseNotFound:
                break
            except errors.CoordinationError as e:
                log.warning("leader lease renewal failed: %s", e.message)
                self.state = dataclasses.replace(self.state, etcd_reachable=False)
                continue
            self._deadline = self._timing.deadline(sent, ttl_seconds=ttl)
            self.state = dataclasses.replace(self.state, etcd_reachable=True)
        self._lease = None
        self.state = ElectionState(alive=False, reason="leadership lost")
        raise LeadershipLost(f"{self._identity} lost the leader lease")

    async def resign(self) -> None:
        """Give the key up at once (revoking the lease deletes it), so a standby takes over."""
        lease, self._lease = self._lease, None
        self.state = ElectionState(reason="resigned")
        if lease is None:
            return
        try:
            await self._client.revoke(lease, call_timeout=2.0)
        except errors.CoordinationError as e:
            log.warning("could not revoke the leader lease (it expires by itself): %s", e.message)
