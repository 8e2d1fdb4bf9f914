"""The webhook's TLS Secret goes away with the release.

The operator makes the Secret itself, so it is not part of the Helm release and
`helm uninstall` would leave it (with the CA's private key) behind.  It is owned
by the release's MutatingWebhookConfiguration instead, which `helm uninstall`
deletes; the garbage collector then deletes the Secret.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import kopf

from nebula_id_operator import kube, webhook_serving

UID = "0b9c7f0e-1111-2222-3333-444455556666"


class FakeApiServer(kube.KubeApi):
    """`KubeApi` with its HTTP calls answered here: no Secret yet, the configuration as given."""

    def __init__(self, uid: str | None) -> None:
        super().__init__(kopf.ConnectionInfo(server="https://127.0.0.1:6443", insecure=True))
        self.uid = uid
        self.calls: list[tuple[str, str, object]] = []

    async def _request(
        self, method: str, path: str, *, json: object = None, content_type: str | None = None
    ) -> tuple[int, object]:
        self.calls.append((method, path, json))
        if method == "GET" and path.startswith(kube.WEBHOOK_CONFIGURATIONS):
            if self.uid is None:
                return 404, {"kind": "Status", "reason": "NotFound"}
            return 200, {"metadata": {"uid": self.uid}, "webhooks": []}
        if method == "GET":
            return 404, {"kind": "Status", "reason": "NotFound"}
        if method == "POST":
            return 201, json
        raise AssertionError(f"unexpected {method} {path}")

    def created(self) -> dict[str, object]:
        ((body,),) = [(b,) for m, _, b in self.calls if m == "POST"]
        assert isinstance(body, dict)
        return body


def sync(api: FakeApiServer, tmp_path: Path) -> None:
    settings = webhook_serving.WebhookSettings(
        namespace="ids",
        secret_name="ids-webhook-tls",
        configuration_name="ids",
        cert_dir=str(tmp_path),
    )
    asyncio.run(webhook_serving.CertKeeper(settings, api).sync())


def test_the_secret_is_owned_by_the_webhook_configuration(tmp_path: Path) -> None:
    api = FakeApiServer(UID)
    sync(api, tmp_path)
    body = api.created()
    metadata = body["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["name"] == "ids-webhook-tls"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": "ids",
            "uid": UID,
        }
    ]
    assert ("POST", "/api/v1/namespaces/ids/secrets") in [(m, p) for m, p, _ in api.calls]


def test_without_the_configuration_the_secret_has_no_owner(tmp_path: Path) -> None:
    api = FakeApiServer(None)
    sync(api, tmp_path)
    metadata = api.created()["metadata"]
    assert isinstance(metadata, dict)
    assert "ownerReferences" not in metadata
