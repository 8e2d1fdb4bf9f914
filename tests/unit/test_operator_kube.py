"""TLS material for the Kubernetes API, from a kubeconfig's paths or inline data."""

from __future__ import annotations

import base64
import dataclasses
import ssl
from pathlib import Path
from typing import Any

from tests.support import pki

from nebula_id_operator import kube


@dataclasses.dataclass
class Info:
    server: str = "https://127.0.0.1:6443"
    ca_path: Any = None
    ca_data: Any = None
    insecure: bool | None = None
    username: str | None = None
    password: str | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: Any = None
    certificate_data: Any = None
    private_key_path: Any = None
    private_key_data: Any = None


def test_inline_base64_data_as_in_a_kubeconfig() -> None:
    ca = pki.CertificateAuthority()
    client = ca.issue("admin", organization="system:masters")
    info = Info(
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
    info = Info(ca_data=ca.pem.cert.decode(), certificate_path=cert, private_key_path=key)
    context = kube.ssl_context(info)
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == 1


def test_insecure_skips_verification() -> None:
    assert kube.ssl_context(Info(insecure=True)) is False
