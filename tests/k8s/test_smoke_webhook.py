"""Smoke test: the API server calls a validating webhook served on 127.0.0.1.

The operator's webhooks run on the test host, so the control plane must have
the admission webhooks on and reach loopback without a proxy.  A tiny HTTPS
server in a thread denies one kind of object; the API server must relay that.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import pki
from tests.support.controlplane import ControlPlane

DENIAL = "nebula smoke webhook says no"


class _DenyConfigMaps(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        allowed = request["object"].get("data", {}).get("verdict") != "deny"
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": allowed,
                    "status": {"message": DENIAL, "code": 403},
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, bytes]]:
    """An HTTPS webhook on 127.0.0.1: yields (url, CA bundle PEM)."""
    ca = pki.CertificateAuthority("smoke-webhook-ca")
    leaf = ca.issue("webhook", ip_addresses=("127.0.0.1",), server=True)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = leaf.write(Path(directory), "webhook")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyConfigMaps)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"https://127.0.0.1:{server.server_address[1]}/validate", ca.pem.cert
        finally:
            server.shutdown()
            server.server_close()


def test_the_api_server_relays_a_local_webhooks_denial(
    control_plane: ControlPlane, webhook_server: tuple[str, bytes]
) -> None:
    url, ca_bundle = webhook_server
    namespace = f"smoke-webhook-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", namespace)
    name = f"smoke-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.smoke.nebula-id.io",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        denied = control_plane.kubectl(
            "create",
            "configmap",
            "no",
            "-n",
            namespace,
            "--from-literal=verdict=deny",
            check=False,
        )
        allowed = control_plane.kubectl(
            "create",
            "configmap",
            "yes",
            "-n",
            namespace,
            "--from-literal=verdict=allow",
            check=False,
        )
    finally:
        control_plane.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

    assert denied.returncode != 0
    assert DENIAL in denied.stderr
    assert allowed.returncode == 0, allowed.stderr
