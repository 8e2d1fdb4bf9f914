"""An in-process sidecar per test: the real app from `build_app`, served by `aiohttp_client`.

`make_client(**flags)` takes the same names as the ``nebula-id serve`` flags
(as strings), loads them through `nebula_id.config.serve` with an empty
environment, and points the data dir at the test's temporary folder.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from nebula_id.clock import Clock, SystemClock
from nebula_id.config import serve as settings_mod
from nebula_id.http.app import build_app


class MakeClient(Protocol):
    def __call__(
        self, *, clock: Clock | None = None, **flags: str
    ) -> Awaitable[TestClient[Any, Any]]: ...


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: pathlib.Path
) -> MakeClient:
    async def make(*, clock: Clock | None = None, **flags: str) -> TestClient[Any, Any]:
        flags.setdefault("data_dir", str(tmp_path / "data"))
        settings = settings_mod.load(flags, {})
        app = build_app(settings, clock=clock or SystemClock(), registry=CollectorRegistry())
        try:
            return await aiohttp_client(app)
        except BaseException:
            # aiohttp leaves the contexts that did start open when a later one
            # fails; close them (the data-dir lock among them) like a dying process.
            await app.cleanup()
            raise

    return make
