"""The webhook's TLS Secret goes away with the release.

The operator makes the Secret itself, so it is not part of the Helm release and
`helm uninstall` would leave it (with the CA's private key) behind.  It is owned
by the release's MutatingWebhookConfiguration instead, which `helm uninstall`
deletes; the garbage collector then deletes the Secret.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from nebula_id_operator.webhook_api import KubeApi


class FakeApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class FakeCore:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> None:
        self.created.append((namespace, body))


class FakeAdmission:
    def __init__(self, uid: str | None) -> None:
        self.uid = uid

    def read_mutating_webhook_configuration(self, name: str) -> Any:
        if self.uid is None:
            raise FakeApiError(404)
        return SimpleNamespace(metadata=SimpleNamespace(uid=self.uid, name=name))


def fake_api(uid: str | None) -> tuple[KubeApi, FakeCore]:
    api = KubeApi.__new__(KubeApi)  # no cluster: the client objects are fakes
    core = FakeCore()
    api._core = core
    api._admission = FakeAdmission(uid)
    api._api_error = FakeApiError
    return api, core


def test_the_secret_is_owned_by_the_webhook_configuration() -> None:
    api, core = fake_api("0b9c7f0e-1111-2222-3333-444455556666")
    written = asyncio.run(
        api.write_secret(
            "ids", "ids-webhook-tls", {"tls.crt": "eA=="}, None, owner_configuration="ids"
        )
    )
    assert written
    ((namespace, body),) = core.created
    assert namespace == "ids"
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": "ids",
            "uid": "0b9c7f0e-1111-2222-3333-444455556666",
        }
    ]


def test_without_the_configuration_the_secret_has_no_owner() -> None:
    api, core = fake_api(None)
    assert asyncio.run(api.write_secret("ids", "t", {}, None, owner_configuration="ids"))
    ((_, body),) = core.created
    assert "ownerReferences" not in body["metadata"]
