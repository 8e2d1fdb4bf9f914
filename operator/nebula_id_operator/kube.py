"""The operator's one Kubernetes client, for the calls outside kopf's own machinery.

kopf watches and patches the pools themselves.  Besides that the operator reads
the database Secrets a pool names, keeps the etcd-user and webhook-certificate
Secrets, annotates the pods that hold a worker ID, patches pool status from its
daemons, reads a pool for the injection webhook and keeps the webhook
configuration's caBundle.  A small aiohttp client does all of it, in the event
loop, built from the same `kopf.ConnectionInfo` that kopf logs in with: one
login and one set of credentials per process, no threads.
Failures become our own errors: a missing Secret or key is `SecretNotFound`
(permanent until someone creates it), anything else `KubeUnavailable`; "not
found" and "conflict" that a caller decides about are answered as None/False.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote

import aiohttp
import kopf

from nebula_id import errors
from nebula_id.core import crd

logger = logging.getLogger(__name__)

WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class KubeUnavailable(errors.Unavailable):
    """The Kubernetes API could not be reached or refused a call."""


class SecretNotFound(errors.NotFound):
    """A Secret (or the key in it) that a pool names does not exist."""


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In-cluster service account first, then $KUBECONFIG / ~/.kube/config.

    The one login of the process: its `ConnectionInfo` serves kopf's instances
    (through their login handlers) and the `KubeApi` alike.
    """
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig to reach Kubernetes with")
    return info


def _pem(data: str | bytes) -> bytes:
    """kubeconfig `*-data` fields are base64 of PEM; accept raw PEM too."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
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
            if cert:
                context.load_cert_chain(cert, key or None)
    elif cert:
        context.load_cert_chain(cert, key or None)
    return context


JsonObject = dict[str, object]
"""A JSON object as the API server sends it or as we send it."""


def as_object(value: object) -> JsonObject:
    """`value` if it is a JSON object, else an empty one (the API server answered oddly)."""
    return value if isinstance(value, dict) else {}


def _reason(answer: object) -> object:
    """The `reason` of the API server's Status answer (never echoes a request body)."""
    return as_object(answer).get("reason")


def authorization(info: kopf.ConnectionInfo) -> dict[str, str]:
    """The `Authorization` header for `info`'s token or basic credentials (none for certs)."""
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    if info.username and info.password:
        return {"Authorization": aiohttp.BasicAuth(info.username, info.password).encode()}
    return {}


class KubeApi:
    """The operator's one Kubernetes client (beyond kopf's own), with a timeout on every call.

    Secrets (read, create, replace), pod annotations and pool status (merge
    patches), a pool (read), and the webhook configuration's caBundle (JSON
    patch).  Its aiohttp session is opened on first use in the running loop.

    With `relogin`, an answer 401 makes it log in again and retry once: a
    ServiceAccount token is rotated by the kubelet, and the login re-reads it.
    """

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._server = info.server.rstrip("/")
        self._ssl = ssl_context(info)
        self._auth = authorization(info)
        self._relogin = relogin
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        content_type: str | None = None,
    ) -> tuple[int, object]:
        status, body = await self._send(method, path, json=json, content_type=content_type)
        if status == 401 and self._relogin is not None:
            self._auth = authorization(self._relogin())
            status, body = await self._send(method, path, json=json, content_type=content_type)
        return status, body

    async def _send(
        self, method: str, path: str, *, json: object, content_type: str | None
    ) -> tuple[int, object]:
        headers = dict(self._auth)
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self._get_session().request(
                method, self._server + path, json=json, headers=headers
            ) as response:
                body: object = await response.json(content_type=None)
                return response.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise KubeUnavailable(f"{method} {path} failed: {e!r}") from e

    # --- Secrets ----------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """The Secret's `data` (base64, as stored) and resourceVersion; None if it is absent."""
        path = f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}"
        status, body = await self._request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeUnavailable(
                f"reading Secret {namespace}/{name}: HTTP {status} {_reason(body)}"
            )
        secret = as_object(body)
        data = as_object(secret.get("data"))
        version = as_object(secret.get("metadata")).get("resourceVersion")
        return {k: str(v) for k, v in data.items()}, str(version)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of `key` in Secret `namespace/name`."""
        secret = await self.read_secret(namespace, name)
        if secret is None:
            raise SecretNotFound(f"Secret {namespace}/{name} does not exist")
        data, _ = secret
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
        owner: Mapping[str, object] | None = None,
    ) -> bool:
        """Create an Opaque Secret; False when one of that name exists already (left as is)."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return await self.write_secret(
            namespace, name, encoded, None, labels=labels, owners=[owner] if owner else []
        )

    async def write_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        resource_version: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        owners: Sequence[Mapping[str, object]] = (),
    ) -> bool:
        """Create (`resource_version` None) or replace an Opaque Secret with `data` (base64).

        False when another writer won the race: the Secret exists already, or it
        changed since `resource_version`.
        """
        metadata: JsonObject = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = dict(labels)
        if owners:
            metadata["ownerReferences"] = [dict(owner) for owner in owners]
        collection = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        if resource_version is None:
            method, path = "POST", collection
        else:
            method, path = "PUT", f"{collection}/{quote(name)}"
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": dict(data),
        }
        status, answer = await self._request(method, path, json=body)
        if status == 409:
            return False
        if status not in (200, 201):
            raise KubeUnavailable(
                f"writing Secret {namespace}/{name}: HTTP {status} {_reason(answer)}"
            )
        return True

    # --- pods and pools ---------------------------------------------------------------

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

    def _pool_path(self, namespace: str, name: str) -> str:
        return (
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{quote(namespace)}"
            f"/{crd.PLURAL}/{quote(name)}"
        )

    async def get_pool(self, namespace: str, name: str) -> JsonObject | None:
        """The NebulaIdPool object; None if it does not exist."""
        status, body = await self._request("GET", self._pool_path(namespace, name))
        if status == 404:
            return None
        if status != 200:
            raise KubeUnavailable(
                f"reading NebulaIdPool {namespace}/{name}: HTTP {status} {_reason(body)}"
            )
        return as_object(body)

    async def patch_pool_status(
        self, namespace: str, name: str, status: Mapping[str, object]
    ) -> bool:
        """Merge-patch a NebulaIdPool's status subresource; False if the pool is gone.

        For the daemons, which run outside kopf's one-shot patching.
        """
        path = self._pool_path(namespace, name) + "/status"
        code, body = await self._request(
            "PATCH", path, json={"status": dict(status)},
            content_type="application/merge-patch+json",
        )  # fmt: skip
        if code == 404:
            return False
        if code != 200:
            raise KubeUnavailable(f"patching status of pool {namespace}/{name}: HTTP {code} {body}")
        return True

    # --- the webhook configuration ----------------------------------------------------

    async def _webhook_configuration(self, configuration: str) -> JsonObject | None:
        path = f"{WEBHOOK_CONFIGURATIONS}/{quote(configuration)}"
        status, body = await self._request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeUnavailable(
                f"reading webhook configuration {configuration}: HTTP {status} {_reason(body)}"
            )
        return as_object(body)

    async def webhook_configuration_owner(self, configuration: str) -> JsonObject | None:
        """An owner reference to the MutatingWebhookConfiguration, or None if it is absent."""
        found = await self._webhook_configuration(configuration)
        if found is None:
            return None
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": configuration,
            "uid": str(as_object(found.get("metadata")).get("uid")),
        }

    async def set_ca_bundle(self, configuration: str, ca_bundle: bytes) -> bool:
        """Put `ca_bundle` into every webhook of the configuration; False if it does not exist.

        A JSON patch that tests each webhook's name first, so a configuration
        changed meanwhile (by `helm upgrade`) fails the patch instead of being
        written at the wrong index.
        """
        found = await self._webhook_configuration(configuration)
        if found is None:
            return False
        encoded = base64.b64encode(ca_bundle).decode("ascii")
        ops: list[JsonObject] = []
        hooks = found.get("webhooks")
        for i, hook in enumerate(hooks if isinstance(hooks, list) else []):
            hook = as_object(hook)
            if as_object(hook.get("clientConfig")).get("caBundle") == encoded:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            )
        if not ops:
            return True
        path = f"{WEBHOOK_CONFIGURATIONS}/{quote(configuration)}"
        status, body = await self._request(
            "PATCH", path, json=ops, content_type="application/json-patch+json"
        )
        if status != 200:
            raise KubeUnavailable(
                f"patching webhook configuration {configuration}: HTTP {status} {_reason(body)}"
            )
        logger.info("Set the caBundle of MutatingWebhookConfiguration %s", configuration)
        return True
