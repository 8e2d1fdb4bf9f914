"""The mutating admission webhook that gives labelled pods the nebula-id sidecar.

Thin: kopf receives the AdmissionReview, this module reads the pod's pool from
the API and hands both to the pure `injection` module.  The serving
certificate is managed here too (`certs` decides, this module stores): every
replica reads one Secret, the first to find it missing or expiring writes a new
one, each writes it to a file that kopf's server re-reads, and the
`MutatingWebhookConfiguration` that Helm installed gets the matching
`caBundle`.  The configuration itself (object selector, failure policy) is
Helm's; kopf's `managed` mode is off so that `helm uninstall` removes it.

Every replica serves the webhook, leader or not: it only reads (the pool) and
answers, so two replicas serving at once is safe, and labelled pods can be
created whenever any replica is up.  The operator therefore runs `run(...)`
beside its leader election, as its own small kopf instance; `configure(...)`
is the piece that plugs the webhook into any kopf settings and registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import functools
import importlib
import json
import logging
import os
import pathlib
import tempfile
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import kopf

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id_operator import certs, injection

logger = logging.getLogger(__name__)

HANDLER_ID = "inject-sidecar"
"""Also the URL path of the webhook: the Helm chart's configuration points at `/inject-sidecar`."""
CRD_GROUP, CRD_VERSION, CRD_PLURAL = "nebula-id.io", "v1alpha1", "nebulaidpools"


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How the operator serves the webhook and keeps its certificate."""

    enabled: bool = True
    listen_address: str = "0.0.0.0"
    port: int = 9443
    namespace: str = "nebula-id"
    """The operator's namespace: where the certificate Secret and the Service live."""
    service_name: str = "nebula-id-webhook"
    secret_name: str = "nebula-id-webhook-tls"
    configuration_name: str | None = "nebula-id"
    """The MutatingWebhookConfiguration whose caBundle the operator keeps current."""
    url: str | None = None
    """For an operator outside the cluster: the URL the API server calls instead of the Service."""
    cert_dir: str | None = None
    """Where the serving certificate is written for the server; a private temp dir if None."""
    check_interval_seconds: float = 3600.0
    """How often the certificate is checked for renewal (and other replicas' renewals picked up)."""

    @property
    def hosts(self) -> list[str]:
        """The names the serving certificate must cover."""
        svc, ns = self.service_name, self.namespace
        names = [f"{svc}.{ns}.svc", svc, f"{svc}.{ns}", f"{svc}.{ns}.svc.cluster.local"]
        if self.url:
            host = urllib.parse.urlsplit(self.url).hostname
            if host and host not in names:
                names.insert(0, host)
        return names

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        """`NEBULA_WEBHOOK_*` variables (the Helm chart sets them).

        Whether to serve, and on which address and port, are the operator's own
        settings (`NEBULA_OPERATOR_WEBHOOK_*`); `configure` takes them from there.
        """
        env = os.environ if env is None else env
        get = functools.partial(_env, env, "NEBULA_WEBHOOK_")
        d = cls()
        return cls(
            namespace=get("NAMESPACE") or _env(env, "NEBULA_", "POD_NAMESPACE") or d.namespace,
            service_name=get("SERVICE_NAME") or d.service_name,
            secret_name=get("SECRET_NAME") or d.secret_name,
            configuration_name=get("CONFIGURATION_NAME") or d.configuration_name,
            url=get("URL"),
            cert_dir=get("CERT_DIR"),
            check_interval_seconds=float(
                _int(
                    get("CHECK_INTERVAL_SECONDS"),
                    default=3600,
                    name="NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS",
                )
            ),
        )


def injection_settings_from_env(
    env: Mapping[str, str] | None = None,
) -> injection.InjectionSettings:
    """`NEBULA_SIDECAR_*` variables, with etcd and datacenter shared with the operator's own."""
    env = os.environ if env is None else env
    get = functools.partial(_env, env, "NEBULA_SIDECAR_")
    defaults = injection.InjectionSettings()
    endpoints = get("ETCD_ENDPOINTS") or env.get("NEBULA_ETCD_ENDPOINTS") or ""
    resources = get("RESOURCES")
    try:
        parsed_resources = json.loads(resources) if resources else defaults.resources
    except json.JSONDecodeError as e:
        raise errors.ConfigError(f"NEBULA_SIDECAR_RESOURCES must be JSON: {e}") from e
    return injection.InjectionSettings(
        image=get("IMAGE") or defaults.image,
        image_pull_policy=get("IMAGE_PULL_POLICY") or defaults.image_pull_policy,
        etcd_endpoints=tuple(e.strip() for e in endpoints.split(",") if e.strip()),
        etcd_prefix=get("ETCD_PREFIX") or env.get("NEBULA_ETCD_PREFIX") or defaults.etcd_prefix,
        etcd_tls_secret=get("ETCD_TLS_SECRET"),
        etcd_auth_secret=get("ETCD_AUTH_SECRET"),
        datacenter=get("DATACENTER") or env.get("NEBULA_DATACENTER") or None,
        resources=parsed_resources,
        listen_host=get("LISTEN_HOST") or defaults.listen_host,
        log_level=get("LOG_LEVEL") or defaults.log_level,
    )


def _env(env: Mapping[str, str], prefix: str, name: str) -> str | None:
    value = env.get(prefix + name, "").strip()
    return value or None


def _int(value: str | None, *, default: int, name: str) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise errors.ConfigError(f"{name} must be an integer, got {value!r}") from e


class OperatorView(Protocol):
    """The part of the operator's `OperatorSettings` this module reads."""

    @property
    def webhook_enabled(self) -> bool: ...

    @property
    def webhook_host(self) -> str: ...

    @property
    def webhook_port(self) -> int: ...

    @property
    def prefix(self) -> str: ...

    @property
    def etcd(self) -> EtcdView: ...


class EtcdView(Protocol):
    @property
    def endpoints(self) -> Sequence[str]: ...


# --- the Kubernetes API, narrowly ------------------------------------------------------


class KubeApi:
    """The few API calls the webhook makes, through the official client in a thread."""

    def __init__(self) -> None:
        # The operator's extra; imported here so that `import webhook` stays light.
        # Typed as Any: the client's generated models are not worth mirroring here.
        kubernetes: Any = importlib.import_module("kubernetes")

        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            # The client reads $KUBECONFIG when it is imported; read it now instead.
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=config
            )
        self._client: Any = kubernetes.client.ApiClient(config)
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._admission: Any = kubernetes.client.AdmissionregistrationV1Api(self._client)
        self._api_error: type[Exception] = kubernetes.client.ApiException

    def _status(self, e: BaseException) -> int | None:
        status = getattr(e, "status", None) if isinstance(e, self._api_error) else None
        return status if isinstance(status, int) else None

    async def get_pool(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj = await asyncio.to_thread(
                self._custom.get_namespaced_custom_object,
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name,
            )  # fmt: skip
        except Exception as e:
            if self._status(e) == 404:
                return None
            raise errors.CoordinationError(f"reading NebulaIdPool {namespace}/{name}: {e}") from e
        return obj if isinstance(obj, Mapping) else None

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """The Secret's data and resourceVersion, or None if it does not exist."""
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except Exception as e:
            if self._status(e) == 404:
                return None
            raise errors.CoordinationError(f"reading Secret {namespace}/{name}: {e}") from e
        return dict(secret.data or {}), str(secret.metadata.resource_version)

    async def write_secret(
        self, namespace: str, name: str, data: Mapping[str, str], resource_version: str | None
    ) -> bool:
        """Create, or replace at `resource_version`; False when another writer won the race."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "nebula-id"}},
            "data": dict(data),
        }
        try:
            if resource_version is None:
                await asyncio.to_thread(self._core.create_namespaced_secret, namespace, body)
            else:
                body["metadata"]["resourceVersion"] = resource_version
                await asyncio.to_thread(self._core.replace_namespaced_secret, name, namespace, body)
        except Exception as e:
            if self._status(e) == 409:
                return False
            raise errors.CoordinationError(f"writing Secret {namespace}/{name}: {e}") from e
        return True

    async def set_ca_bundle(self, configuration: str, ca_bundle: bytes) -> bool:
        """Put `ca_bundle` into every webhook of the configuration; False if it does not exist."""
        encoded = base64.b64encode(ca_bundle).decode("ascii")
        try:
            mwc = await asyncio.to_thread(
                self._admission.read_mutating_webhook_configuration, configuration
            )
        except Exception as e:
            if self._status(e) == 404:
                return False
            raise errors.CoordinationError(
                f"reading webhook configuration {configuration}: {e}"
            ) from e
        ops: list[dict[str, Any]] = []
        for i, hook in enumerate(mwc.webhooks or []):
            if hook.client_config.ca_bundle == encoded:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.name})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            )
        if ops:
            try:
                await asyncio.to_thread(
                    self._admission.patch_mutating_webhook_configuration, configuration, ops
                )
            except Exception as e:
                raise errors.CoordinationError(
                    f"patching webhook configuration {configuration}: {e}"
                ) from e
            logger.info("Set the caBundle of MutatingWebhookConfiguration %s", configuration)
        return True


# --- the certificate -------------------------------------------------------------------


class CertKeeper:
    """Keeps the shared certificate Secret, the local PEM file and the caBundle in step."""

    def __init__(
        self,
        settings: WebhookSettings,
        api: KubeApi,
        *,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self._now = now or functools.partial(datetime.datetime.now, datetime.UTC)
        directory = settings.cert_dir or tempfile.mkdtemp(prefix="nebula-id-webhook-")
        self.pem_path = pathlib.Path(directory, "tls.pem")

    async def sync(self) -> certs.WebhookCerts:
        """Read or renew the Secret, then write the PEM file and the caBundle."""
        s = self.settings
        for _ in range(5):
            stored = await self.api.read_secret(s.namespace, s.secret_name)
            current = certs.WebhookCerts.from_secret_data(stored[0] if stored else None)
            material = certs.ensure(current, hosts=s.hosts, now=self._now())
            if material is current:
                break
            version = stored[1] if stored else None
            if await self.api.write_secret(
                s.namespace, s.secret_name, material.to_secret_data(), version
            ):
                logger.info(
                    "Issued a webhook certificate valid until %s",
                    certs.not_after(material.tls_cert),
                )
                break
            # Another replica renewed it first: take theirs on the next round.
        else:
            raise errors.CoordinationError(f"could not settle Secret {s.namespace}/{s.secret_name}")
        self._write_pem(material)
        if s.configuration_name and not await self.api.set_ca_bundle(
            s.configuration_name, material.ca_bundle
        ):
            logger.warning(
                "MutatingWebhookConfiguration %s does not exist (yet)", s.configuration_name
            )
        return material

    def _write_pem(self, material: certs.WebhookCerts) -> None:
        """One file with key and chain, replaced atomically: a reader never sees half a pair."""
        content = material.tls_key + material.tls_cert
        if self.pem_path.exists() and self.pem_path.read_bytes() == content:
            return
        self.pem_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.pem_path.parent, prefix=".tls-")
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, self.pem_path)


class WebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, with the certificate kept by a `CertKeeper`.

    kopf restarts its server when the certificate file changes; a background
    task re-syncs the certificate every `check_interval_seconds`.
    """

    def __init__(self, keeper: CertKeeper, **kwargs: Any) -> None:
        pem = str(keeper.pem_path)
        super().__init__(certfile=pem, pkeyfile=pem, **kwargs)
        self.keeper = keeper

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        material = await self.keeper.sync()
        self.cadata = material.ca_bundle
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            async for client_config in super().__call__(fn):
                yield client_config
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.keeper.settings.check_interval_seconds)
            try:
                material = await self.keeper.sync()
                self.cadata = material.ca_bundle
            except errors.NebulaIdError as e:
                logger.error("Webhook certificate check failed, retrying later: %s", e)


# --- the handler -----------------------------------------------------------------------


async def mutate_pod(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str | None,
    api: KubeApi,
    settings: injection.InjectionSettings,
    **_: Any,
) -> None:
    """Add the sidecar to a labelled pod; reject it when its pool cannot be used."""
    pod: Mapping[str, Any] = body
    if not injection.wants_sidecar(pod) or injection.has_sidecar(pod):
        return
    pod_namespace = namespace or "default"
    try:
        name = injection.pool_name(pod)
        raw = await api.get_pool(pod_namespace, name)
        if raw is None:
            raise injection.PodRejected(
                f"NebulaIdPool {name!r} does not exist in namespace {pod_namespace!r}; "
                f"the {injection.POOL_ANNOTATION} annotation must name a pool in the pod's "
                f"namespace (kubectl get nip -n {pod_namespace})"
            )
        pool = pools.parse_spec(raw.get("spec") or {}, namespace=pod_namespace, name=name)
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
    webhook: WebhookSettings | None = None,
    sidecar: injection.InjectionSettings | None = None,
    env: Mapping[str, str] | None = None,
    registry: kopf.OperatorRegistry | None = None,
) -> None:
    """Register the webhook and its HTTPS server; call from the operator's startup handler.

    Whether and where to serve come from `op_settings`; the certificate and the
    sidecar defaults from `NEBULA_WEBHOOK_*` / `NEBULA_SIDECAR_*` (read once,
    here), unless given explicitly.  The sidecars reach etcd like the operator
    unless `NEBULA_SIDECAR_ETCD_ENDPOINTS` says otherwise.
    """
    if not op_settings.webhook_enabled:
        logger.info("The sidecar injection webhook is disabled")
        return
    environ = os.environ if env is None else env
    hook = dataclasses.replace(
        webhook or WebhookSettings.from_env(environ),
        enabled=True,
        listen_address=op_settings.webhook_host,
        port=op_settings.webhook_port,
    )
    if sidecar is None:
        sidecar = injection_settings_from_env(environ)
        if not sidecar.etcd_endpoints:
            sidecar = dataclasses.replace(sidecar, etcd_endpoints=tuple(op_settings.etcd.endpoints))
        if "NEBULA_SIDECAR_ETCD_PREFIX" not in environ:
            sidecar = dataclasses.replace(sidecar, etcd_prefix=op_settings.prefix)
    api = KubeApi()
    kopf.on.mutate(
        "", "v1", "pods",
        id=HANDLER_ID,
        operations=["CREATE"],
        labels={injection.INJECT_LABEL: "true"},
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


async def run(
    op_settings: OperatorView,
    *,
    stop_flag: asyncio.Event | threading.Event,
    ready_flag: asyncio.Event | threading.Event | None = None,
    webhook: WebhookSettings | None = None,
    sidecar: injection.InjectionSettings | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Serve the webhook until `stop_flag` is set: a kopf instance with only this handler.

    It watches nothing, so it needs no RBAC beyond what the webhook reads and
    writes, and it runs in every replica independently of the leader's kopf.
    """
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    configure(settings, op_settings, webhook=webhook, sidecar=sidecar, env=env, registry=registry)
    if settings.admission.server is None:
        return
    await kopf.operator(
        registry=registry,
        settings=settings,
        standalone=True,
        clusterwide=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
