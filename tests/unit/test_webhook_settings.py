"""The webhook's settings, as the Helm chart passes them in the environment."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from nebula_id import errors
from nebula_id.config import etcd as etcd_config
from nebula_id.config import injection as injection_config
from nebula_id.config import loader
from nebula_id.config import webhook as webhook_config
from nebula_id_operator import injection


def webhook_from_env(env: Mapping[str, str]) -> webhook_config.WebhookSettings:
    found = loader.sources({}, env)
    return webhook_config.load(found, pod_namespace=found.env.get("NEBULA_POD_NAMESPACE"))


def injection_from_env(env: Mapping[str, str]) -> injection.InjectionSettings:
    found = loader.sources({}, env)
    return injection_config.load(found, etcd=etcd_config.load(found))


def test_webhook_settings_from_the_charts_environment() -> None:
    hook = webhook_from_env(
        {
            "NEBULA_POD_NAMESPACE": "ids-system",
            "NEBULA_WEBHOOK_SERVICE_NAME": "ids-nebula-id-webhook",
            "NEBULA_WEBHOOK_SECRET_NAME": "ids-nebula-id-webhook-tls",
            "NEBULA_WEBHOOK_CONFIGURATION_NAME": "ids-nebula-id",
            "NEBULA_WEBHOOK_CERT_DIR": "/run/nebula-id/webhook",
            "NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS": "600",
        }
    )
    assert hook.namespace == "ids-system"
    assert hook.secret_name == "ids-nebula-id-webhook-tls"
    assert hook.configuration_name == "ids-nebula-id"
    assert hook.cert_dir == "/run/nebula-id/webhook"
    assert hook.check_interval_seconds == 600.0
    assert hook.url is None
    assert hook.hosts[0] == "ids-nebula-id-webhook.ids-system.svc"
    assert "ids-nebula-id-webhook.ids-system.svc.cluster.local" in hook.hosts


def test_an_out_of_cluster_url_adds_its_host_to_the_certificate() -> None:
    hook = webhook_from_env({"NEBULA_WEBHOOK_URL": "https://127.0.0.1:9443"})
    assert hook.hosts[0] == "127.0.0.1"


def test_a_bad_interval_names_the_variable() -> None:
    with pytest.raises(errors.ConfigError, match="NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS"):
        webhook_from_env({"NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS": "soon"})


def test_sidecar_defaults_from_the_environment() -> None:
    sidecar = injection_from_env(
        {
            "NEBULA_ETCD_ENDPOINTS": "http://etcd-0:2379, http://etcd-1:2379",
            "NEBULA_ETCD_PREFIX": "/ids",
            "NEBULA_DATACENTER": "dc-b",
            "NEBULA_SIDECAR_IMAGE": "registry/sidecar:1",
            "NEBULA_SIDECAR_ETCD_TLS_SECRET": "etcd-tls",
            "NEBULA_SIDECAR_RESOURCES": '{"limits": {"memory": "99Mi"}}',
        }
    )
    assert sidecar.etcd_endpoints == ("http://etcd-0:2379", "http://etcd-1:2379")
    assert sidecar.etcd_prefix == "/ids"
    assert sidecar.datacenter == "dc-b"
    assert sidecar.image == "registry/sidecar:1"
    assert sidecar.etcd_tls_secret == "etcd-tls"
    assert sidecar.etcd_auth_secret is None
    assert sidecar.resources == {"limits": {"memory": "99Mi"}}


def test_sidecar_endpoints_of_their_own_win() -> None:
    sidecar = injection_from_env(
        {
            "NEBULA_ETCD_ENDPOINTS": "http://inside:2379",
            "NEBULA_SIDECAR_ETCD_ENDPOINTS": "http://x:2379",
        }
    )
    assert sidecar.etcd_endpoints == ("http://x:2379",)


def test_empty_environment_gives_the_defaults() -> None:
    assert injection_from_env({}) == injection.InjectionSettings()


def test_resources_must_be_json() -> None:
    with pytest.raises(errors.ConfigError, match="NEBULA_SIDECAR_RESOURCES"):
        injection_from_env({"NEBULA_SIDECAR_RESOURCES": "memory=1Gi"})
