"""The kopf handlers: thin wiring between kopf and `reconcile`, `health`, `workers`.

`build_registry` registers everything on a fresh `kopf.OperatorRegistry` (no
module-level registration, so tests and two operators in one process never
share handlers).  The `Context` arrives through kopf's memo.  Each handler
gathers facts, asks `status` for the patch, and maps an error through
`failures` -- nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping

import kopf

from nebula_id import errors
from nebula_id.config import operator as operator_settings
from nebula_id.core import crd, failover, jsontypes
from nebula_id.core import pool as pools
from nebula_id.etcd import pools as etcd_pools
from nebula_id_operator import detector, failures, health, reconcile, status, workers

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 30.0
"""Health status is patched on every change, and at least this often (fresh `checkedAt`)."""


def _ctx(memo: kopf.Memo) -> reconcile.Context:
    ctx = memo["ctx"]
    assert isinstance(ctx, reconcile.Context)
    return ctx


def _pool(body: kopf.Body) -> tuple[str, str]:
    """(namespace, name) of a pool: the resource is namespaced, so both are set."""
    namespace = body.meta.namespace
    assert namespace is not None
    return namespace, body.meta.name


def _spec(body: kopf.Body) -> dict[str, object]:
    return dict(body.spec)


def _post_transition(
    body: kopf.Body, old: Mapping[str, object], new: Mapping[str, object], type_: str
) -> None:
    """A Kubernetes Event when condition `type_` flips or its reason changes.

    `kopf.event`, not `kopf.info`: the latter obeys `posting.level`, which is
    raised to WARNING so kopf's own per-handler chatter stays out of Events.
    """
    before: Mapping[str, object] = next(
        (c for c in jsontypes.as_objects(old.get("conditions")) if c.get("type") == type_), {}
    )
    after = next(c for c in jsontypes.as_objects(new["conditions"]) if c["type"] == type_)
    if (before.get("status"), before.get("reason")) == (after["status"], after["reason"]):
        return
    message = str(after["message"])
    if after["status"] == "True":
        kopf.event(body, type="Normal", reason=type_, message=message)
    else:
        kopf.event(body, type="Warning", reason=str(after["reason"]), message=message[:1000])


def _post_datacenter_event(body: kopf.Body, change: detector.Transition) -> None:
    """`DatacenterUnhealthy` (Warning) or `DatacenterHealthy` (Normal) for one datacenter."""
    if change.healthy:
        kopf.event(
            body,
            type="Normal",
            reason="DatacenterHealthy",
            message=f"datacenter {change.name} is healthy again: {change.reason}"[:1000],
        )
    else:
        kopf.event(
            body,
            type="Warning",
            reason="DatacenterUnhealthy",
            message=f"datacenter {change.name} is unhealthy: {change.reason}"[:1000],
        )


def _health_changed(previous: Mapping[str, object], new: Mapping[str, object]) -> bool:
    """True when the status patch would change more than the probe timestamps."""

    def strip(rows: object) -> list[dict[str, object]]:
        return [
            {k: v for k, v in row.items() if k != "checkedAt"}
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict)
        ]

    if strip(previous.get("datacenters")) != strip(new.get("datacenters")):
        return True
    return any(previous.get(key) != new.get(key) for key in new if key != "datacenters")


async def _reconcile(
    kind: str, memo: kopf.Memo, body: kopf.Body, patch: kopf.Patch
) -> reconcile.Outcome:
    ctx = _ctx(memo)
    started = time.monotonic()
    meta = body.meta
    namespace, name = _pool(body)
    outcome = await reconcile.reconcile(ctx, namespace, name, _spec(body), uid=meta.uid)
    previous = dict(body.status)
    new_status = status.reconcile_status(
        config=outcome.config,
        etcd=outcome.etcd,
        database=outcome.database,
        generation=int(meta.get("generation", 0)),
        now=ctx.now(),
        previous=previous,
        config_revision=outcome.revision,
    )
    patch.status.update(new_status)
    _post_transition(body, previous, new_status, status.READY)
    if outcome.changed and outcome.config is not None:
        kopf.event(body, type="Normal", reason="ConfigWritten", message=outcome.etcd.message)
    error = outcome.error
    ctx.metrics.observe(kind, started, error=type(error).__name__ if error else None)
    return outcome


async def _until_stopped_or(stopped: kopf.DaemonStopped, waiting: Awaitable[object]) -> None:
    """Await `waiting`, but return at once when kopf stops the daemon (e.g. on deletion)."""

    async def until_stopped() -> None:
        await stopped.wait()

    tasks = {asyncio.ensure_future(waiting), asyncio.ensure_future(until_stopped())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a failed watch
    finally:
        for task in tasks:
            task.cancel()


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for the reconciling instance, set before it starts."""
    settings.persistence.finalizer = crd.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=crd.KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.scanning.disabled = True  # no CRD or namespace listing: less RBAC
    settings.posting.level = logging.WARNING  # our own Events say what matters
    settings.watching.server_timeout = 300
    # A pool's deletion waits for its running timers (a health check in flight);
    # kopf's default re-checks only every 60 s, which would hold the finalizer that long.
    settings.background.cancellation_polling = 1.0
    # The sidecar webhook is not served from here: every replica serves it, leader or
    # not, from its own small kopf instance (main.run -> webhook.run).


def build_registry(settings: operator_settings.OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = (crd.GROUP, crd.VERSION, crd.PLURAL)

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **_: object) -> kopf.ConnectionInfo:
        info = memo["connection"]
        assert isinstance(info, kopf.ConnectionInfo)
        return info

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, field="spec", registry=registry)
    async def reconcile_spec(
        memo: kopf.Memo, body: kopf.Body, patch: kopf.Patch, retry: int, **_: object
    ) -> None:
        outcome = await _reconcile("spec", memo, body, patch)
        if outcome.error is not None:
            raise failures.to_kopf(outcome.error, retry=retry)

    @kopf.timer(
        *resource,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        registry=registry,
    )
    async def resync(memo: kopf.Memo, body: kopf.Body, patch: kopf.Patch, **_: object) -> None:
        """Reconcile a pool that is not Ready again: e.g. its Secret was created since."""
        generation = int(body.meta.get("generation", 0))
        if status.is_ready(dict(body.status), generation):
            return
        await _reconcile("resync", memo, body, patch)

    @kopf.daemon(*resource, cancellation_timeout=5.0, registry=registry)
    async def check_health(
        memo: kopf.Memo, body: kopf.Body, stopped: kopf.DaemonStopped, **_: object
    ) -> None:
        """Probe every datacenter each `probeIntervalSeconds`, judge, publish, report.

        A daemon, not a timer: the interval is the pool's (`spec.failover`), read
        again at every round, and the `detector` keeps its counts between rounds.
        Transitions of a datacenter are posted as Events; status goes through
        `KubeApi.patch_pool_status` because kopf does not apply a daemon's patch.
        """
        ctx = _ctx(memo)
        meta = body.meta
        namespace, name = _pool(body)
        keys = ctx.settings.keys(namespace, name)
        judge = detector.Detector(monotonic=time.monotonic)
        patched = 0.0
        interval = ctx.settings.health_interval_seconds or failover.DEFAULT_PROBE_INTERVAL_S
        while not stopped:
            started = time.monotonic()
            try:
                stored = await etcd_pools.get(ctx.etcd, keys)
                if stored is None:
                    await stopped.wait(interval)
                    continue
                interval = ctx.settings.health_interval_seconds or (
                    stored.config.failover.probe_interval_s
                )
                now = ctx.now()

                async def read(dc: pools.Datacenter) -> str:
                    return await reconcile.read_dsn(ctx, namespace, dc)

                probes = await health.check_pool(
                    stored.config, read, timeout_s=ctx.settings.database_timeout_seconds, now=now
                )
                found, flipped = judge.observe(stored.config, probes)
                await health.publish(ctx.etcd, keys, found, now=now)
                ctx.metrics.datacenter_health(
                    f"{namespace}/{name}", {dc.name: dc.healthy for dc in found}
                )
                previous = dict(body.status)
                new_status = status.health_status(
                    config=stored.config,
                    health=found,
                    generation=int(meta.get("generation", 0)),
                    now=now,
                    previous=previous,
                )
                if _health_changed(previous, new_status) or started - patched > STATUS_REFRESH_S:
                    await ctx.kube.patch_pool_status(namespace, name, new_status)
                    patched = started
                    _post_transition(body, previous, new_status, status.DATACENTERS_HEALTHY)
                for change in flipped:
                    _post_datacenter_event(body, change)
                ctx.metrics.observe("health", started)
            except errors.NebulaIdError as e:
                ctx.metrics.observe("health", started, error=type(e).__name__)
                log.warning(
                    "health check of %s/%s failed: %s",
                    namespace,
                    name,
                    e.message,
                    extra={"pool": f"{namespace}/{name}"},
                )
            await stopped.wait(max(0.0, interval - (time.monotonic() - started)))

    @kopf.daemon(*resource, cancellation_timeout=5.0, registry=registry)
    async def track_workers(
        memo: kopf.Memo, body: kopf.Body, stopped: kopf.DaemonStopped, **_: object
    ) -> None:
        """Fold the claims into status and pod annotations at once when etcd says so.

        A daemon, not a timer: it watches the claims prefix and wakes on a change,
        re-reading every `workers_interval_seconds` x 10 anyway.  kopf does not apply
        a daemon's patch, so the status goes through `KubeApi.patch_pool_status`.
        """
        ctx = _ctx(memo)
        keys = ctx.settings.keys(*_pool(body))
        gauge = ctx.metrics.workers_active.labels(f"{keys.namespace}/{keys.name}")
        applied: dict[workers.PodRef, str] = {}
        interval = ctx.settings.workers_interval_seconds
        while not stopped:
            started = time.monotonic()
            try:
                stored = await etcd_pools.get(ctx.etcd, keys)
                if stored is None:
                    await stopped.wait(interval)
                    continue
                view = await workers.sync(
                    ctx.etcd, ctx.kube, keys, stored.config, applied, fence=ctx.fence()
                )
                applied = view.annotations
                gauge.set(view.active)
                wanted = status.workers_status(view.active, status.worker_capacity(stored.config))
                if dict(body.status.get("workers") or {}) != wanted:
                    await ctx.kube.patch_pool_status(keys.namespace, keys.name, {"workers": wanted})
                ctx.metrics.observe("workers", started)
                await _until_stopped_or(
                    stopped,
                    workers.wait_for_change(
                        ctx.etcd, keys, after_revision=view.revision, timeout_s=interval * 10
                    ),
                )
            except errors.NebulaIdError as e:
                ctx.metrics.observe("workers", started, error=type(e).__name__)
                log.warning(
                    "worker claims of %s: %s",
                    keys.root,
                    e.message,
                    extra={"pool": f"{keys.namespace}/{keys.name}"},
                )
                await stopped.wait(interval)

    @kopf.on.delete(*resource, registry=registry)
    async def delete_pool(memo: kopf.Memo, body: kopf.Body, retry: int, **_: object) -> None:
        ctx = _ctx(memo)
        started = time.monotonic()
        namespace, name = _pool(body)
        drop = body.meta.annotations.get(crd.DROP_DATA_ANNOTATION, "").lower() == "true"
        try:
            result, skipped = await reconcile.delete(
                ctx, namespace, name, drop=drop, spec=_spec(body)
            )
        except errors.NebulaIdError as e:
            ctx.metrics.observe("delete", started, error=type(e).__name__)
            raise failures.to_kopf(e, retry=retry) from e
        for reason in skipped:
            kopf.event(body, type="Warning", reason="DataKept", message=f"could not drop: {reason}")
        ctx.metrics.forget_pool(f"{namespace}/{name}")
        log.info(
            "pool %s/%s removed from etcd (%d claims)",
            namespace,
            name,
            result.claims_deleted,
            extra={"pool": f"{namespace}/{name}"},
        )
        ctx.metrics.observe("delete", started)

    return registry
