"""The few Kubernetes calls the operator makes outside kopf's own machinery.

kopf watches and patches the pools themselves.  Besides that the operator only
reads the database Secrets a pool names and annotates the pods that hold a
worker ID, so a small aiohttp client is enough, built from the same
`kopf.ConnectionInfo` that kopf logs in with (one set of credentials).
Failures become our own errors: a missing Secret or key is `SecretNotFound`
(permanent until someone creates it), anything else `KubeUnavailable`.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from nebula_id import errors


class KubeUnavailable(errors.Unavailable):
    """The Kubernetes API could not be reached or refused a call."""


class SecretNotFound(errors.NotFound):
    """A Secret (or the key in it) that a pool names does not exist."""


class Connection(Protocol):
    """The fields of `kopf.ConnectionInfo` we use (kept structural: kopf stays optional)."""

    @property
    def server(self) -> str: ...
    @property
    def ca_path(self) -> Any: ...
    @property
    def ca_data(self) -> Any: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def scheme(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def certificate_path(self) -> Any: ...
    @property
    def certificate_data(self) -> Any: ...
    @property
    def private_key_path(self) -> Any: ...
    @property
    def private_key_data(self) -> Any: ...


def _pem(data: str | bytes) -> bytes:
    """kubeconfig `*-data` fields are base64 of PEM; accept raw PEM too."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


def ssl_context(info: Connection) -> ssl.SSLContext | bool:
    """The TLS context for the API server (False: verification disabled on request)."""
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=os.fspath(info.ca_path) if info.ca_path else None,
        cadata=_pem(info.ca_data).decode() if info.ca_data else None,
    )
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data or info.private_key_data:
        # load_cert_chain reads files only; the files live just long enough to be read.
        with tempfile.TemporaryDirectory() as scratch:
            if info.certificate_data:
                cert = os.path.join(scratch, "client.crt")
                with open(cert, "wb") as f:
                    f.write(_pem(info.certificate_data))
            if info.private_key_data:
                key = os.path.join(scratch, "client.key")
                with open(key, "wb") as f:
                    f.write(_pem(info.private_key_data))
            context.load_cert_chain(os.fspath(cert), os.fspath(key) if key else None)
    elif cert:
        context.load_cert_chain(os.fspath(cert), os.fspath(key) if key else None)
    return context


class KubeApi:
    """Secrets (read) and pod annotations (patch), with a timeout on every call."""

    def __init__(self, info: Connection, *, timeout: float = 10.0) -> None:
        self._server = info.server.rstrip("/")
        self._ssl = ssl_context(info)
        self._headers: dict[str, str] = {}
        if info.token:
            self._headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            self._headers["Authorization"] = aiohttp.BasicAuth(
                info.username, info.password
            ).encode()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            async with self._get_session().request(
                method, self._server + path, json=json, headers=headers
            ) as response:
                body = await response.json(content_type=None)
                return response.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise KubeUnavailable(f"{method} {path} failed: {e!r}") from e

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of `key` in Secret `namespace/name`."""
        path = f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}"
        status, body = await self._request("GET", path)
        if status == 404:
            raise SecretNotFound(f"Secret {namespace}/{name} does not exist")
        if status != 200:
            raise KubeUnavailable(f"reading Secret {namespace}/{name}: HTTP {status} {body}")
        data = (body or {}).get("data") or {}
        if key not in data:
            raise SecretNotFound(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode("utf-8").strip()

    async def create_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        labels: Mapping[str, str] | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> bool:
        """Create an Opaque Secret; False when one of that name exists already (left as is)."""
        path = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = dict(labels)
        if owner:
            metadata["ownerReferences"] = [dict(owner)]
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        status, answer = await self._request("POST", path, json=body)
        if status == 409:
            return False
        if status not in (200, 201):
            # The answer is the API server's Status (never our request body).
            reason = (answer or {}).get("reason") if isinstance(answer, dict) else None
            raise KubeUnavailable(f"creating Secret {namespace}/{name}: HTTP {status} {reason}")
        return True

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> bool:
        """Merge-patch the pod's annotations (None removes one); False if the pod is gone."""
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"
        status, body = await self._request(
            "PATCH",
            path,
            json={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
        )
        if status == 404:
            return False
        if status != 200:
            raise KubeUnavailable(f"annotating pod {namespace}/{name}: HTTP {status} {body}")
        return True

    async def patch_pool_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a NebulaIdPool's status subresource; False if the pool is gone.

        For the workers daemon, which runs outside kopf's one-shot patching.
        """
        path = (
            f"/apis/nebula-id.io/v1alpha1/namespaces/{quote(namespace)}"
            f"/nebulaidpools/{quote(name)}/status"
        )
        code, body = await self._request(
            "PATCH", path, json={"status": dict(status)},
            content_type="application/merge-patch+json",
        )  # fmt: skip
        if code == 404:
            return False
        if code != 200:
            raise KubeUnavailable(f"patching status of pool {namespace}/{name}: HTTP {code} {body}")
        return True
