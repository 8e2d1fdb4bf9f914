"""The webhook certificate's life cycle against the real API server.

Two `CertKeeper`s stand for two operator replicas sharing one Secret; their
clock is injected, so a year passes in a line.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from cryptography import x509

from nebula_id_operator import certs, kube, webhook
from tests.support.controlplane import ControlPlane

T0 = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def setup(
    control_plane: ControlPlane, kubeconfig: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[webhook.WebhookSettings, ControlPlane]]:
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    tag = uuid.uuid4().hex[:6]
    namespace, configuration = f"certs-{tag}", f"certs-{tag}"
    control_plane.kubectl("create", "namespace", namespace)
    mwc: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [
            {
                "name": f"hook-{i}.nebula-id.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {"url": f"https://127.0.0.1:1/hook-{i}"},
                "objectSelector": {"matchLabels": {"never": tag}},
            }
            for i in range(2)
        ],
    }
    # JSON, not YAML: a hex tag such as 712e14 would reach the server as a number.
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(mwc))
    settings = webhook.WebhookSettings(
        namespace=namespace,
        secret_name="webhook-tls",
        configuration_name=configuration,
        url="https://127.0.0.1:9443",
        cert_dir=str(tmp_path / "replica"),
    )
    try:
        yield settings, control_plane
    finally:
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", configuration, check=False)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def ca_bundles(plane: ControlPlane, name: str) -> list[bytes]:
    out = plane.kubectl("get", "mutatingwebhookconfiguration", name, "-o", "json").stdout
    return [base64.b64decode(h["clientConfig"]["caBundle"]) for h in json.loads(out)["webhooks"]]


def stored(
    plane: ControlPlane, settings: webhook.WebhookSettings
) -> tuple[certs.WebhookCerts, str]:
    out = plane.kubectl(
        "get", "secret", settings.secret_name, "-n", settings.namespace, "-o", "json"
    ).stdout
    secret = json.loads(out)
    material = certs.WebhookCerts.from_secret_data(secret["data"])
    assert material is not None
    return material, secret["metadata"]["resourceVersion"]


async def test_issue_share_renew_and_roll_over(
    setup: tuple[webhook.WebhookSettings, ControlPlane], tmp_path: Path
) -> None:
    settings, plane = setup
    api = kube.KubeApi(kube.login(kopf.OperatorSettings()))
    clock = Clock()
    first = webhook.CertKeeper(settings, api, now=clock)
    other_settings = dataclasses.replace(settings, cert_dir=str(tmp_path / "other"))
    other = webhook.CertKeeper(other_settings, api, now=clock)

    # Issued once, written where kopf reads it, trusted by every webhook of the configuration.
    issued = await first.sync()
    material, version = stored(plane, settings)
    assert material == issued
    assert first.pem_path.read_bytes() == issued.tls_key + issued.tls_cert
    assert ca_bundles(plane, str(settings.configuration_name)) == [issued.ca_bundle] * 2
    assert {"127.0.0.1", f"{settings.service_name}.{settings.namespace}.svc"} <= certs.hosts_of(
        issued.tls_cert
    )

    # A second replica adopts it without writing.
    assert await other.sync() == issued
    assert stored(plane, settings)[1] == version
    assert other.pem_path.read_bytes() == first.pem_path.read_bytes()

    # Eleven months on: the leaf is renewed under the same CA; the caBundle stays.
    clock.now = T0 + certs.LEAF_VALIDITY - certs.RENEW_BEFORE + DAY
    renewed = await first.sync()
    assert renewed.tls_cert != issued.tls_cert
    assert renewed.ca_cert == issued.ca_cert
    assert stored(plane, settings)[0] == renewed
    assert ca_bundles(plane, str(settings.configuration_name)) == [issued.ca_bundle] * 2
    assert (await other.sync()) == renewed
    assert other.pem_path.read_bytes() == renewed.tls_key + renewed.tls_cert

    # Near the CA's end, both replicas at once: one writes, the other adopts it.
    clock.now = T0 + certs.CA_VALIDITY - certs.RENEW_BEFORE + DAY
    a, b = await asyncio.gather(first.sync(), other.sync())
    final, _ = stored(plane, settings)
    assert a == b == final
    assert final.ca_cert != issued.ca_cert
    bundle = x509.load_pem_x509_certificates(final.ca_bundle)
    assert len(bundle) == 2  # the old CA stays trusted until it expires
    assert ca_bundles(plane, str(settings.configuration_name)) == [final.ca_bundle] * 2
