"""Reload the API keys and the TLS certificate when their files change, with no restart.

Kubernetes updates a mounted Secret in place (an atomic swap of a symlink), so
rotating a key or a certificate is: write the Secret, wait.  A small task
checks the files' identity (inode, size, mtime) every `interval` seconds and
reloads what changed: the keys into the running `guards.KeyCheck` (shared by
HTTP and gRPC), the certificate into the running `ssl.SSLContext` (new
handshakes use it; open connections keep theirs).  A file caught half-written
or unreadable keeps the previous keys or certificate and is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from nebula_id import errors
from nebula_id.config import auth as auth_config
from nebula_id.config import http as http_config
from nebula_id.http import guards

DEFAULT_INTERVAL_S = 1.0

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int], ...]


def signature(paths: Sequence[str]) -> Signature:
    """What identifies the files' current content (following symlinks)."""
    found = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append((0, 0, 0))
            continue
        found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class Watched:
    """Files, and what to do when they change."""

    def __init__(self, paths: Sequence[str], reload: Callable[[], None], what: str) -> None:
        self.paths = tuple(paths)
        self.reload = reload
        self.what = what
        self.seen = signature(self.paths)

    def check(self) -> bool:
        """Reload when the files changed; True when a reload happened."""
        now = signature(self.paths)
        if now == self.seen:
            return False
        try:
            self.reload()
        except (errors.NebulaIdError, OSError, ssl.SSLError, ValueError) as e:
            log.warning("cannot reload the %s yet (%s); keeping the previous one", self.what, e)
            return False
        self.seen = now
        log.info("reloaded the %s from %s", self.what, ", ".join(self.paths))
        return True


def api_keys(settings: auth_config.AuthSettings, check: guards.KeyCheck) -> Watched | None:
    if not settings.api_keys_file:
        return None

    def reload() -> None:
        check.replace(guards.load_api_keys(settings))

    return Watched([settings.api_keys_file], reload, "API keys")


def certificate(settings: http_config.HttpSettings, context: ssl.SSLContext) -> Watched | None:
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    cert, key = settings.tls_cert_file, settings.tls_key_file

    def reload() -> None:
        context.load_cert_chain(cert, key)

    return Watched([cert, key], reload, "TLS certificate")


def watching_ctx(
    watched: Sequence[Watched | None], *, interval: float = DEFAULT_INTERVAL_S
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A `cleanup_ctx` that checks `watched` every `interval` seconds while the app runs."""
    items = [w for w in watched if w is not None]

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                for item in items:
                    item.check()

        task = asyncio.create_task(loop(), name="reload keys and certificate")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
