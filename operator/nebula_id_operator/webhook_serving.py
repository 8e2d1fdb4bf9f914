"""Serving the webhook over HTTPS with a certificate the operator keeps.

`certs` decides (purely) whether the stored material is still good; this module
stores it: every replica reads one Secret, the first to find it missing or
expiring writes a new one (a conflict means another replica won, and its
material is adopted), each writes it to a file that kopf's server re-reads,
and the `MutatingWebhookConfiguration` that Helm installed gets the matching
`caBundle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator, Callable

import kopf

from nebula_id import errors
from nebula_id.config.webhook import WebhookSettings
from nebula_id_operator import certs, kube

__all__ = ["CertKeeper", "WebhookServer", "WebhookSettings"]

logger = logging.getLogger(__name__)

SECRET_LABELS = {"app.kubernetes.io/part-of": "nebula-id"}


class CertKeeper:
    """Keeps the shared certificate Secret, the local PEM file and the caBundle in step."""

    def __init__(
        self,
        settings: WebhookSettings,
        api: kube.KubeApi,
        *,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self._now = now or functools.partial(datetime.datetime.now, datetime.UTC)
        directory = settings.cert_dir or tempfile.mkdtemp(prefix="nebula-id-webhook-")
        self.pem_path = pathlib.Path(directory, "tls.pem")

    async def sync(self) -> certs.WebhookCerts:
        """Read or renew the Secret, then write the PEM file and the caBundle."""
        s = self.settings
        for _ in range(5):
            stored = await self.api.read_secret(s.namespace, s.secret_name)
            current = certs.WebhookCerts.from_secret_data(stored[0] if stored else None)
            material = certs.ensure(current, hosts=s.hosts, now=self._now())
            if material is current:
                break
            version = stored[1] if stored else None
            if await self.api.write_secret(
                s.namespace,
                s.secret_name,
                material.to_secret_data(),
                version,
                labels=SECRET_LABELS,
                owners=await self._owners(),
            ):
                logger.info(
                    "Issued a webhook certificate valid until %s",
                    certs.not_after(material.tls_cert),
                )
                break
            # Another replica renewed it first: take theirs on the next round.
        else:
            raise errors.CoordinationError(f"could not settle Secret {s.namespace}/{s.secret_name}")
        self._write_pem(material)
        if s.configuration_name and not await self.api.set_ca_bundle(
            s.configuration_name, material.ca_bundle
        ):
            logger.warning(
                "MutatingWebhookConfiguration %s does not exist (yet)", s.configuration_name
            )
        return material

    async def _owners(self) -> list[kube.JsonObject]:
        """The MutatingWebhookConfiguration (when it exists) as the Secret's owner.

        The Secret is not part of the Helm release; owned by the configuration,
        it is garbage-collected when `helm uninstall` removes the configuration.
        """
        name = self.settings.configuration_name
        owner = await self.api.webhook_configuration_owner(name) if name else None
        return [owner] if owner is not None else []

    def _write_pem(self, material: certs.WebhookCerts) -> None:
        """One file with key and chain, replaced atomically: a reader never sees half a pair."""
        content = material.tls_key + material.tls_cert
        if self.pem_path.exists() and self.pem_path.read_bytes() == content:
            return
        self.pem_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.pem_path.parent, prefix=".tls-")
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, self.pem_path)


class WebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, with the certificate kept by a `CertKeeper`.

    kopf restarts its server when the certificate file changes; a background
    task re-syncs the certificate every `check_interval_seconds`.
    """

    def __init__(
        self,
        keeper: CertKeeper,
        *,
        addr: str | None,
        port: int | None,
        host: str | None,
        file_check_interval: float,
    ) -> None:
        pem = str(keeper.pem_path)
        super().__init__(
            certfile=pem,
            pkeyfile=pem,
            addr=addr,
            port=port,
            host=host,
            file_check_interval=file_check_interval,
        )
        self.keeper = keeper

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        material = await self.keeper.sync()
        self.cadata = material.ca_bundle
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            async for client_config in super().__call__(fn):
                yield client_config
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.keeper.settings.check_interval_seconds)
            try:
                material = await self.keeper.sync()
                self.cadata = material.ca_bundle
            except errors.NebulaIdError as e:
                logger.error("Webhook certificate check failed, retrying later: %s", e)
