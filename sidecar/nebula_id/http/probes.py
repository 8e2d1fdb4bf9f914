"""The probe server: health on the pod's address, while the ID API stays on loopback.

The kubelet's probes reach the pod IP, not loopback, so a sidecar that served
everything on one port had to listen on every interface, and then any pod of
the cluster could take IDs from it.  With ``--probe-port`` the ID API listens
on ``--host`` (127.0.0.1 by default, and the Unix socket), and this second,
tiny server answers only ``/healthz`` and ``/readyz`` (and ``/metrics`` when
``--probe-metrics`` is on, for a PodMonitor) on ``--probe-host``.  It reads the
API app's state, so both always agree, and starts before the API's resources
open so that start-up is visible to the kubelet as "not ready", not "down".
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from nebula_id.config import http as http_config
from nebula_id.http import errors as http_errors
from nebula_id.http import keys, routes, server, stats

PROBE_RUNNER = web.AppKey("probe_runner", web.AppRunner)


def probe_app(api: web.Application, *, metrics: Handler | None) -> web.Application:
    """The health-only app; every other path is a JSON 404."""

    async def healthz(request: web.Request) -> web.Response:
        return await routes.healthz(request)

    async def readyz(request: web.Request) -> web.Response:
        return routes.readiness(api)

    app = web.Application()
    app[keys.STATS] = stats.RequestStats()  # its own: probe 404s are not API errors
    paths: list[tuple[str, Handler]] = [("/healthz", healthz), ("/readyz", readyz)]
    if metrics is not None:
        paths.append(("/metrics", metrics))
    for path, handler in paths:
        app.router.add_get(path, http_errors.guarded(handler), allow_head=False)
        app.router.add_route("*", path, http_errors.method_not_allowed)
    app.router.add_route("*", "/{tail:.*}", http_errors.not_found)
    return app


def attach(
    api: web.Application, settings: http_config.HttpSettings, *, metrics: Handler | None
) -> None:
    """Serve the probe app beside `api` for as long as `api` runs."""
    if settings.probe_port is None:
        return
    port = settings.probe_port
    app = probe_app(api, metrics=metrics if settings.probe_metrics else None)

    async def start(api: web.Application) -> None:
        runner = server.JsonErrorRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.probe_host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(e.errno, f"probe server on {settings.probe_host}:{port}: {e}") from e
        api[PROBE_RUNNER] = runner

    async def stop(api: web.Application) -> None:
        if PROBE_RUNNER in api:
            await api[PROBE_RUNNER].cleanup()

    # First: before the cleanup contexts open etcd and the databases.
    api.on_startup.insert(0, start)
    api.on_cleanup.append(stop)
