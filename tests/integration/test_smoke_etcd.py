"""Smoke test: the real etcd does what the worker-ID protocol relies on.

It talks to etcd's JSON gateway (``/v3/...``, base64 keys) with aiohttp, so
it needs no client library: a lease expires and takes its key with it, and a
create-if-absent transaction lets exactly one of two writers win.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import aiohttp

from tests.support.fixtures import EtcdFactory
from tests.support.waiting import eventually_async


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _post(
    session: aiohttp.ClientSession, endpoint: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with session.post(f"{endpoint}{path}", json=body) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, Any] = await response.json()
        return payload


async def _count(session: aiohttp.ClientSession, endpoint: str, key: str) -> int:
    found = await _post(session, endpoint, "/v3/kv/range", {"key": _b64(key)})
    return int(found.get("count", 0))


async def test_a_key_under_a_lease_vanishes_when_the_lease_expires(etcd_endpoint: str) -> None:
    key = f"/smoke/{uuid.uuid4()}/lease"
    async with aiohttp.ClientSession() as session:
        lease = await _post(session, etcd_endpoint, "/v3/lease/grant", {"TTL": 2})
        assert int(lease["TTL"]) == 2
        await _post(
            session,
            etcd_endpoint,
            "/v3/kv/put",
            {"key": _b64(key), "value": _b64("held"), "lease": lease["ID"]},
        )
        assert await _count(session, etcd_endpoint, key) == 1

        granted = time.monotonic()

        async def gone() -> bool:
            return await _count(session, etcd_endpoint, key) == 0

        await eventually_async(gone, 10, what="the lease to expire", interval=0.2)
        assert time.monotonic() - granted >= 1.0, "the key vanished before its TTL"


def _create_if_absent(key: str, value: str) -> dict[str, Any]:
    return {
        "compare": [
            {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        ],
        "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        "failure": [{"request_range": {"key": _b64(key)}}],
    }


async def test_create_if_absent_transaction_lets_only_the_first_writer_win(
    etcd_endpoint: str,
) -> None:
    key = f"/smoke/{uuid.uuid4()}/claim"
    async with aiohttp.ClientSession() as session:
        first = await _post(session, etcd_endpoint, "/v3/kv/txn", _create_if_absent(key, "a"))
        second = await _post(session, etcd_endpoint, "/v3/kv/txn", _create_if_absent(key, "b"))

        assert first.get("succeeded") is True
        assert second.get("succeeded", False) is False
        held = second["responses"][0]["response_range"]["kvs"][0]
        assert base64.b64decode(held["value"]).decode() == "a"


async def test_a_private_etcd_keeps_its_data_and_port_across_a_restart(
    etcd_factory: EtcdFactory,
) -> None:
    server = etcd_factory()
    endpoint = server.endpoint
    async with aiohttp.ClientSession() as session:
        await _post(session, endpoint, "/v3/kv/put", {"key": _b64("/k"), "value": _b64("v")})
    server.kill()
    server.start()
    assert server.endpoint == endpoint
    async with aiohttp.ClientSession() as session:
        assert await _count(session, endpoint, "/k") == 1
