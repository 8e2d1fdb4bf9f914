"""The mutating admission webhook that gives labelled pods the nebula-id sidecar.

Thin: kopf receives the AdmissionReview, this module reads the pod's pool from
the API (`kube.KubeApi`) and hands both to the pure `injection` module.  HTTPS
and the certificate are `webhook_serving`'s.  The webhook configuration itself
(object selector, failure policy) is Helm's; kopf's `managed` mode is off so
that `helm uninstall` removes it.

Every replica serves the webhook, leader or not: it only reads (the pool) and
answers, so two replicas serving at once is safe, and labelled pods can be
created whenever any replica is up.  The operator therefore runs `run(...)`
beside its leader election, as its own small kopf instance; `configure(...)`
is the piece that plugs the webhook into any kopf settings and registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
import threading
import urllib.parse
from typing import Any, Protocol

import kopf

from nebula_id import errors
from nebula_id.core import crd, poolspec
from nebula_id_operator import injection, kube
from nebula_id_operator.webhook_serving import CertKeeper, WebhookServer, WebhookSettings

__all__ = [
    "HANDLER_ID",
    "CertKeeper",
    "WebhookServer",
    "WebhookSettings",
    "configure",
    "run",
]

logger = logging.getLogger(__name__)

HANDLER_ID = "inject-sidecar"
"""Also the URL path of the webhook: the Helm chart's configuration points at `/inject-sidecar`."""


class OperatorView(Protocol):
    """The part of the operator's `OperatorSettings` this module reads."""

    @property
    def webhook_enabled(self) -> bool: ...

    @property
    def webhook_host(self) -> str: ...

    @property
    def webhook_port(self) -> int: ...

    @property
    def webhook(self) -> WebhookSettings: ...

    @property
    def injection(self) -> injection.InjectionSettings: ...


# --- the handler -----------------------------------------------------------------------


async def mutate_pod(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str | None,
    api: kube.KubeApi,
    settings: injection.InjectionSettings,
    **_: object,
) -> None:
    """Add the sidecar to a labelled pod; reject it when its pool cannot be used."""
    pod = body
    if not injection.wants_sidecar(pod) or injection.has_sidecar(pod):
        return
    pod_namespace = namespace or "default"
    try:
        name = injection.pool_name(pod)
        raw = await api.get_pool(pod_namespace, name)
        if raw is None:
            raise injection.PodRejected(
                f"NebulaIdPool {name!r} does not exist in namespace {pod_namespace!r}; "
                f"the {crd.POOL_ANNOTATION} annotation must name a pool in the pod's "
                f"namespace (kubectl get nip -n {pod_namespace})"
            )
        pool = poolspec.parse_spec(
            kube.as_object(raw.get("spec")), namespace=pod_namespace, name=name
        )
        ops = injection.inject(pod, pool, settings)
    except errors.InvalidArgument as e:
        raise kopf.AdmissionError(e.message, code=400) from e
    except errors.NebulaIdError as e:
        raise kopf.AdmissionError(
            f"nebula-id cannot inject the sidecar now: {e.message}", code=503
        ) from e
    if ops:
        patch.fns.append(functools.partial(injection.apply, ops=ops))


def configure(
    settings: kopf.OperatorSettings,
    op_settings: OperatorView,
    *,
    api: kube.KubeApi,
    webhook: WebhookSettings | None = None,
    sidecar: injection.InjectionSettings | None = None,
    registry: kopf.OperatorRegistry | None = None,
) -> None:
    """Register the webhook and its HTTPS server on `settings` and `registry`.

    `api` reads the pods' pools and keeps the certificate Secret and caBundle.

    Whether to serve, the certificate and the sidecar defaults all come from
    `op_settings` (loaded once, at start-up, by `nebula_id.config.operator`),
    unless `webhook` or `sidecar` are given explicitly.
    """
    if not op_settings.webhook_enabled:
        logger.info("The sidecar injection webhook is disabled")
        return
    hook = dataclasses.replace(
        webhook if webhook is not None else op_settings.webhook,
        enabled=True,
        listen_address=op_settings.webhook_host,
        port=op_settings.webhook_port,
    )
    if sidecar is None:
        sidecar = op_settings.injection
    kopf.on.mutate(
        "", "v1", "pods",
        id=HANDLER_ID,
        operations=["CREATE"],
        labels={crd.INJECT_LABEL: "true"},
        registry=registry,
    )(functools.partial(mutate_pod, api=api, settings=sidecar))  # fmt: skip
    url_host = urllib.parse.urlsplit(hook.url).hostname if hook.url else None
    settings.admission.server = WebhookServer(
        CertKeeper(hook, api),
        addr=hook.listen_address,
        port=hook.port,
        host=url_host or f"{hook.service_name}.{hook.namespace}.svc",
        file_check_interval=10.0,
    )
    settings.admission.managed = None


def kopf_identity(name: str) -> Any:
    """kopf's peering identity, given explicitly: kopf's default asks
    `getpass.getuser()`, which raises for a uid without a passwd entry -- and the
    images run as 65532, which has none.

    `Any` because kopf's type for it (the `peering.Identity` NewType) is private."""
    return name


async def run(
    op_settings: OperatorView,
    *,
    connection: kopf.ConnectionInfo,
    api: kube.KubeApi,
    stop_flag: asyncio.Event | threading.Event,
    ready_flag: asyncio.Event | threading.Event | None = None,
    webhook: WebhookSettings | None = None,
    sidecar: injection.InjectionSettings | None = None,
) -> None:
    """Serve the webhook until `stop_flag` is set: a kopf instance with only this handler.

    It watches nothing, so it needs no RBAC beyond what the webhook reads and
    writes, and it runs in every replica independently of the leader's kopf.
    It logs in with the operator's `connection` and calls the API through the
    operator's `api`: one login and one client per process.
    """
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection

    configure(settings, op_settings, api=api, webhook=webhook, sidecar=sidecar, registry=registry)
    if settings.admission.server is None:
        return
    await kopf.operator(
        registry=registry,
        settings=settings,
        standalone=True,
        clusterwide=True,
        identity=kopf_identity(f"webhook@{socket.gethostname()}"),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
