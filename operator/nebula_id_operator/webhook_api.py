"""The few Kubernetes API calls the webhook makes: read a pool, keep a Secret, set a caBundle.

Through the official client, in a thread (admission and certificate checks are
rare).  The client is imported when the first `KubeApi` is built, so importing
the webhook stays light.  Failures become `errors.CoordinationError`, except
"not found" and "conflict", which the callers decide about.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from nebula_id import errors

logger = logging.getLogger(__name__)

CRD_GROUP, CRD_VERSION, CRD_PLURAL = "nebula-id.io", "v1alpha1", "nebulaidpools"


class KubeApi:
    """The few API calls the webhook makes, through the official client in a thread."""

    def __init__(self) -> None:
        # The operator's extra; imported here so that `import webhook` stays light.
        # Typed as Any: the client's generated models are not worth mirroring here.
        kubernetes: Any = importlib.import_module("kubernetes")

        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            # The client reads $KUBECONFIG when it is imported; read it now instead.
            # A process-level exception to "settings come from nebula_id.config":
            # KUBECONFIG is the Kubernetes client's own convention, not a nebula-id setting.
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=config
            )
        self._client: Any = kubernetes.client.ApiClient(config)
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._admission: Any = kubernetes.client.AdmissionregistrationV1Api(self._client)
        self._api_error: type[Exception] = kubernetes.client.ApiException

    def _status(self, e: BaseException) -> int | None:
        status = getattr(e, "status", None) if isinstance(e, self._api_error) else None
        return status if isinstance(status, int) else None

    async def get_pool(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj = await asyncio.to_thread(
                self._custom.get_namespaced_custom_object,
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name,
            )  # fmt: skip
        except Exception as e:
            if self._status(e) == 404:
                return None
            raise errors.CoordinationError(f"reading NebulaIdPool {namespace}/{name}: {e}") from e
        return obj if isinstance(obj, Mapping) else None

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """The Secret's data and resourceVersion, or None if it does not exist."""
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except Exception as e:
            if self._status(e) == 404:
                return None
            raise errors.CoordinationError(f"reading Secret {namespace}/{name}: {e}") from e
        return dict(secret.data or {}), str(secret.metadata.resource_version)

    async def write_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        resource_version: str | None,
        *,
        owner_configuration: str | None = None,
    ) -> bool:
        """Create, or replace at `resource_version`; False when another writer won the race.

        With `owner_configuration`, the Secret is owned by that
        MutatingWebhookConfiguration (when it exists): the Secret is not part of
        the Helm release, and this way the garbage collector removes it when
        `helm uninstall` removes the configuration.
        """
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "nebula-id"},
        }
        owner = (
            await self._configuration_owner(owner_configuration) if owner_configuration else None
        )
        if owner is not None:
            metadata["ownerReferences"] = [owner]
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": dict(data),
        }
        try:
            if resource_version is None:
                await asyncio.to_thread(self._core.create_namespaced_secret, namespace, body)
            else:
                body["metadata"]["resourceVersion"] = resource_version
                await asyncio.to_thread(self._core.replace_namespaced_secret, name, namespace, body)
        except Exception as e:
            if self._status(e) == 409:
                return False
            raise errors.CoordinationError(f"writing Secret {namespace}/{name}: {e}") from e
        return True

    async def _configuration_owner(self, configuration: str) -> dict[str, Any] | None:
        """An owner reference to the MutatingWebhookConfiguration, or None if it is absent."""
        try:
            mwc = await asyncio.to_thread(
                self._admission.read_mutating_webhook_configuration, configuration
            )
        except Exception as e:
            if self._status(e) == 404:
                return None
            raise errors.CoordinationError(
                f"reading webhook configuration {configuration}: {e}"
            ) from e
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": configuration,
            "uid": str(mwc.metadata.uid),
        }

    async def set_ca_bundle(self, configuration: str, ca_bundle: bytes) -> bool:
        """Put `ca_bundle` into every webhook of the configuration; False if it does not exist."""
        encoded = base64.b64encode(ca_bundle).decode("ascii")
        try:
            mwc = await asyncio.to_thread(
                self._admission.read_mutating_webhook_configuration, configuration
            )
        except Exception as e:
            if self._status(e) == 404:
                return False
            raise errors.CoordinationError(
                f"reading webhook configuration {configuration}: {e}"
            ) from e
        ops: list[dict[str, Any]] = []
        for i, hook in enumerate(mwc.webhooks or []):
            if hook.client_config.ca_bundle == encoded:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.name})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            )
        if ops:
            try:
                await asyncio.to_thread(
                    self._admission.patch_mutating_webhook_configuration, configuration, ops
                )
            except Exception as e:
                raise errors.CoordinationError(
                    f"patching webhook configuration {configuration}: {e}"
                ) from e
            logger.info("Set the caBundle of MutatingWebhookConfiguration %s", configuration)
        return True
