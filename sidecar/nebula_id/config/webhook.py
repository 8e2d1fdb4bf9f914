"""How the operator serves the injection webhook and keeps its certificate.

Whether to serve, and on which address and port, are the operator's own
settings (``NEBULA_OPERATOR_WEBHOOK_*``); the rest comes from
``NEBULA_WEBHOOK_*`` (the Helm chart sets them).  A blank value means "not
given".
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from nebula_id import errors
from nebula_id.config import loader

_text = loader.blank_is_unset(loader.stripped)


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How the operator serves the webhook and keeps its certificate."""

    enabled: bool = True
    """Serve the webhook (the operator's `webhook_enabled`)."""
    # Bandit B104 accepted: the API server reaches the pod IP
    listen_address: str = "0.0.0.0"  # nosec B104
    """Address of the HTTPS server (the operator's `webhook_host`)."""
    port: int = 9443
    """Port of the HTTPS server (the operator's `webhook_port`)."""
    namespace: str = "nebula-id"
    """The operator's namespace: where the certificate Secret and the Service live."""
    service_name: str = "nebula-id-webhook"
    """The Service the API server calls."""
    secret_name: str = "nebula-id-webhook-tls"
    """The Secret that holds the shared serving certificate."""
    configuration_name: str | None = "nebula-id"
    """The MutatingWebhookConfiguration whose caBundle the operator keeps current."""
    url: str | None = None
    """For an operator outside the cluster: the URL the API server calls instead of the Service."""
    cert_dir: str | None = None
    """Where the serving certificate is written for the server; a private temp dir if None."""
    check_interval_seconds: float = 3600.0
    """How often the certificate is checked for renewal (and other replicas' renewals picked up)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise errors.ConfigError(f"webhook_port must be 0..65535, got {self.port}")
        if self.check_interval_seconds <= 0:
            raise errors.ConfigError("webhook_check_interval_seconds must be positive")

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


NAMESPACE = loader.Field(
    "webhook_namespace", _text, (), "the operator's namespace", attr="namespace"
)
FIELDS: tuple[loader.Field[object], ...] = (
    NAMESPACE,
    loader.Field("webhook_service_name", _text, (), "the webhook's Service", attr="service_name"),
    loader.Field("webhook_secret_name", _text, (), "the certificate Secret", attr="secret_name"),
    loader.Field(
        "webhook_configuration_name", _text, (), "the MutatingWebhookConfiguration",
        attr="configuration_name",
    ),
    loader.Field("webhook_url", _text, (), "URL the API server calls", attr="url"),
    loader.Field("webhook_cert_dir", _text, (), "where the certificate is written",
                 attr="cert_dir"),
    loader.Field(
        "webhook_check_interval_seconds", loader.blank_is_unset(loader.integer), (),
        "certificate check interval", attr="check_interval_seconds",
    ),
)  # fmt: skip
"""Environment only (the Helm chart's), no flags."""


def load(
    sources: loader.Sources,
    *,
    enabled: bool = True,
    listen_address: str | None = None,
    port: int | None = None,
    pod_namespace: str | None = None,
) -> WebhookSettings:
    """The webhook's settings; the namespace defaults to the operator pod's."""
    values = sources.values(FIELDS)
    if "check_interval_seconds" in values:
        values["check_interval_seconds"] = float(values["check_interval_seconds"])
    if "namespace" not in values and pod_namespace:
        values["namespace"] = pod_namespace
    if listen_address is not None:
        values["listen_address"] = listen_address
    if port is not None:
        values["port"] = port
    return WebhookSettings(enabled=enabled, **values)
