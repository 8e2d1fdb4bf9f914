"""TLS material for the Kubernetes API, from a kubeconfig's paths or inline data."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import kopf
import pytest
from tests.support import pki

from nebula_id_operator import kube


def connection(**fields: object) -> kopf.ConnectionInfo:
    """kopf's own connection type, as `kopf.login_with_kubeconfig` returns it."""
    return kopf.ConnectionInfo(server="https://127.0.0.1:6443", **fields)  # type: ignore[arg-type]


def test_inline_base64_data_as_in_a_kubeconfig() -> None:
    ca = pki.CertificateAuthority()
    client = ca.issue("admin", organization="system:masters")
    info = connection(
        ca_data=base64.b64encode(ca.pem.cert).decode(),
        certificate_data=base64.b64encode(client.cert).decode(),
        private_key_data=base64.b64encode(client.key).decode(),
    )
    context = kube.ssl_context(info)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1


def test_paths_and_raw_pem(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority()
    client = ca.issue("admin")
    cert, key = client.write(tmp_path, "client")
    info = connection(ca_data=ca.pem.cert.decode(), certificate_path=cert, private_key_path=key)
    context = kube.ssl_context(info)
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == 1


def test_insecure_skips_verification() -> None:
    assert kube.ssl_context(connection(insecure=True)) is False


class RotatingServer(kube.KubeApi):
    """`KubeApi` whose HTTP answers come from here: only the token "new" is accepted."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(connection(token="old"), **kwargs)  # type: ignore[arg-type]
        self.seen: list[str] = []

    async def _send(
        self, method: str, path: str, *, json: object, content_type: str | None
    ) -> tuple[int, object]:
        self.seen.append(self._auth.get("Authorization", ""))
        if self._auth.get("Authorization") != "Bearer new":
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        return 404, {"kind": "Status", "reason": "NotFound"}


def test_a_rotated_token_is_read_again_once() -> None:
    api = RotatingServer(relogin=lambda: connection(token="new"))
    assert asyncio.run(api.read_secret("ns", "db")) is None
    assert api.seen == ["Bearer old", "Bearer new"]


def test_without_relogin_a_401_is_an_error() -> None:
    api = RotatingServer()
    with pytest.raises(kube.KubeUnavailable, match="HTTP 401 Unauthorized"):
        asyncio.run(api.read_secret("ns", "db"))
    assert api.seen == ["Bearer old"]
