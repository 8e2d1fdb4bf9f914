"""Run the operator: probes, the webhook, leader election, then kopf while we lead.

Every replica serves the probes and (when enabled) the injection webhook, which
only reads and answers, so it is safe to serve from all replicas at once
(`nebula_id_operator.webhook.run`, a kopf instance of its own).  Only the
leader runs the reconciling kopf instance, so a standby never reconciles,
patches or posts anything.  When the leader's lease cannot be proven any more,
kopf is stopped and the process exits with status 3; Kubernetes restarts it as
a standby.  SIGTERM resigns at once (revoking the lease), so a rolling update
hands over without waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal

import kopf
import prometheus_client
from aiohttp import web

from nebula_id.clock import Clock, SystemClock
from nebula_id.config import operator as operator_settings
from nebula_id.etcd import client as etcd
from nebula_id.storage import postgres
from nebula_id_operator import handlers, kube, leader, metrics, reconcile

EXIT_LEADERSHIP_LOST = 3
EXIT_WEBHOOK_FAILED = 4
STOP_TIMEOUT_S = 15.0

log = logging.getLogger(__name__)


def _handle_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _reclaim_signals(kopf_ready: asyncio.Event, stop: asyncio.Event) -> None:
    """kopf installs its own SIGTERM handler when it starts; we decide when to stop."""
    await kopf_ready.wait()
    _handle_signals(stop)


async def _serve_probes(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _stop(task: asyncio.Task[None] | None, flag: asyncio.Event) -> None:
    """Raise `flag`, give `task` a while to finish, then cancel it; never raises."""
    if task is None:
        return
    flag.set()
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    if not done:
        log.warning("%s did not stop in %.0f s; cancelling it", task.get_name(), STOP_TIMEOUT_S)
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    _report(task)


def _report(task: asyncio.Task[None]) -> None:
    """Log how a finished task ended (this also marks its exception as retrieved)."""
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", task.get_name(), task.exception())


def _start_webhook(
    settings: operator_settings.OperatorSettings,
    info: kopf.ConnectionInfo,
    api: kube.KubeApi,
    flag: asyncio.Event,
    ready: asyncio.Event,
) -> asyncio.Task[None] | None:
    if not settings.webhook_enabled:
        return None
    from nebula_id_operator import webhook  # imported only when the webhook runs

    return asyncio.create_task(
        webhook.run(settings, stop_flag=flag, ready_flag=ready, connection=info, api=api),
        name="webhook kopf",
    )


async def run(settings: operator_settings.OperatorSettings, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    registry = prometheus_client.CollectorRegistry()
    operator_metrics = metrics.OperatorMetrics.create(registry)
    kopf_settings = kopf.OperatorSettings()
    handlers.configure_kopf(kopf_settings)
    # One login and one client for the process: both kopf instances log in with
    # `info`, and every call outside kopf goes through `api`.
    info = kube.login(kopf_settings)
    api = kube.KubeApi(info, relogin=functools.partial(kube.login, kopf_settings))
    stop = asyncio.Event()
    kopf_ready = asyncio.Event()
    webhook_stop = asyncio.Event()
    _handle_signals(stop)

    async with etcd.EtcdClient(settings.etcd) as client:
        election = leader.LeaderElection(
            client,
            key=settings.leader_key,
            identity=settings.identity,
            ttl_seconds=settings.leader_ttl_seconds,
            clock=clock,
        )
        runner = None
        if settings.probe_port:
            app = metrics.probe_app(registry, lambda: election.state, kopf_ready.is_set)
            runner = await _serve_probes(app, settings.probe_host, settings.probe_port)
        webhook_ready = asyncio.Event()
        webhook_task = _start_webhook(settings, info, api, webhook_stop, webhook_ready)
        signals = None
        if webhook_task is not None:
            webhook_task.add_done_callback(lambda _: stop.set())
            signals = asyncio.create_task(_reclaim_signals(webhook_ready, stop), name="signals")
        try:
            log.info("%s campaigns for %s", settings.identity, settings.leader_key)
            if not await election.campaign(stop):
                return EXIT_WEBHOOK_FAILED if webhook_task and webhook_task.done() else 0
            operator_metrics.leader.set(1)
            ctx = reconcile.Context(
                settings=settings,
                etcd=client,
                kube=api,
                clock=clock,
                metrics=operator_metrics,
                postgres=postgres.PostgresSettings(
                    connect_timeout_s=settings.database_timeout_seconds,
                    command_timeout_s=settings.database_timeout_seconds,
                ),
                fence=election.fence,
            )
            return await _lead(settings, election, ctx, kopf_settings, info, stop, kopf_ready)
        finally:
            operator_metrics.leader.set(0)
            if signals is not None:
                signals.cancel()
            await _stop(webhook_task, webhook_stop)
            await api.close()
            if runner is not None:
                await runner.cleanup()


async def _lead(
    settings: operator_settings.OperatorSettings,
    election: leader.LeaderElection,
    ctx: reconcile.Context,
    kopf_settings: kopf.OperatorSettings,
    info: kopf.ConnectionInfo,
    stop: asyncio.Event,
    kopf_ready: asyncio.Event,
) -> int:
    # Created before kopf starts: kopf cancels every task born after it on exit.
    holding = asyncio.create_task(election.hold(), name="leader lease")
    stopping = asyncio.create_task(stop.wait(), name="stop signal")
    kopf_stop = asyncio.Event()
    namespaces = list(settings.namespaces)
    from nebula_id_operator.webhook import kopf_identity

    operating = asyncio.create_task(
        kopf.operator(
            registry=handlers.build_registry(settings),
            settings=kopf_settings,
            standalone=True,
            identity=kopf_identity(settings.identity),
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=kopf.Memo(ctx=ctx, connection=info),
            stop_flag=kopf_stop,
            ready_flag=kopf_ready,
        ),
        name="reconciling kopf",
    )
    signals = asyncio.create_task(_reclaim_signals(kopf_ready, stop), name="signals")
    done, _ = await asyncio.wait(
        {holding, stopping, operating}, return_when=asyncio.FIRST_COMPLETED
    )
    lost = holding in done and not stop.is_set()
    if lost:
        # No graceful stop: a standby may lead within moments, so stop acting now.
        log.error("leadership lost: cancelling kopf and exiting")
        operating.cancel()
    await _stop(operating, kopf_stop)
    for task in (holding, stopping, signals):
        task.cancel()
    await asyncio.wait({holding, stopping, signals})
    _report(holding)
    if lost:
        return EXIT_LEADERSHIP_LOST
    await election.resign()
    return 0 if stop.is_set() else 1
