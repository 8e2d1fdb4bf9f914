"""A holder cut off from a *running* etcd: its lease really expires, and it must claim again.

A small TCP proxy stands between the holder and etcd and can cut every connection, so
etcd keeps running (and expires the lease) while the holder cannot reach it.  Also the
pool-config cache for a start while etcd is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import prometheus_client
import pytest

from nebula_id import errors
from nebula_id.etcd import cache
from nebula_id.etcd import client as etcd
from tests.integration.test_worker_lease import Env, eventually, serving, worker_of
from tests.support import processes, sidecar

TTL = 2


class Proxy:
    """Forwards 127.0.0.1:port to etcd until `cut()`; `heal()` lets connections in again."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.is_cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.is_cut = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def proxy(etcd_endpoint: str) -> AsyncIterator[Proxy]:
    p = Proxy(etcd_endpoint)
    await p.start()
    yield p
    await p.close()


async def cut_until_expired(proxy: Proxy, etcd_endpoint: str, claim_key: str) -> None:
    """Cut the proxy and wait until etcd itself has dropped `claim_key` (the lease expired)."""
    proxy.cut()
    settings = etcd.EtcdSettings(endpoints=(etcd_endpoint,))
    async with etcd.EtcdClient(settings) as c:
        started = time.monotonic()
        while await c.get(claim_key) is not None:
            assert time.monotonic() - started < TTL + 5, "the lease never expired"
            await asyncio.sleep(0.1)


async def test_an_expired_lease_is_claimed_again_without_a_long_wait(
    etcd_endpoint: str, proxy: Proxy, tmp_path: Path
) -> None:
    env = Env(proxy.endpoint, tmp_path, worker_bits=5, ttl=TTL)
    await env.apply()
    registry = prometheus_client.CollectorRegistry()
    issued: list[int] = []
    async with env.holder("cut-off", registry) as source:
        await eventually(lambda: serving(source), within=5, what="serving")
        assert worker_of(source) == 0
        issued += source.next_ids(200)

        await cut_until_expired(proxy, etcd_endpoint, env.keys.worker(1, 0))
        assert source.ready_reason() == "lease_lost"
        with pytest.raises(errors.LeaseLost):
            source.next_id()

        proxy.heal()
        healed = time.monotonic()
        await eventually(lambda: serving(source), within=10, what="serving after the heal")
        back_after = time.monotonic() - healed
        # Worker 0 was free again, and the mark was our own: only our last ID to wait past.
        assert worker_of(source) == 0
        assert back_after < TTL  # no waiting out the mark's horizon
        issued += source.next_ids(200)
        assert registry.get_sample_value("nebula_id_worker_leases_lost_total") == 1
        assert registry.get_sample_value("nebula_id_worker_claims_total") == 2
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)
    print(f"partition past the TTL: re-claimed worker 0 and served {back_after:.2f} s after heal")


async def test_a_holder_whose_id_was_taken_while_cut_off_never_uses_it_again(
    etcd_endpoint: str, proxy: Proxy, tmp_path: Path
) -> None:
    cut_env = Env(proxy.endpoint, tmp_path, worker_bits=5, ttl=TTL)
    await cut_env.apply()
    direct_env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=TTL)
    direct_env.prefix, direct_env.keys, direct_env.pool = cut_env.prefix, cut_env.keys, cut_env.pool

    issued: list[int] = []
    async with cut_env.holder("cut-off") as cut_off:
        await eventually(lambda: serving(cut_off), within=5, what="serving")
        assert worker_of(cut_off) == 0
        issued += cut_off.next_ids(200)
        mark = await direct_env.mark(0)
        assert mark is not None

        await cut_until_expired(proxy, etcd_endpoint, cut_env.keys.worker(1, 0))
        async with direct_env.holder("newcomer") as newcomer:
            await eventually(lambda: serving(newcomer), within=10, what="the newcomer")
            assert worker_of(newcomer) == 0
            taken = newcomer.next_ids(200)
            assert newcomer.layout.parse(taken[0]).timestamp_ms > mark.ms
            issued += taken

            proxy.heal()
            await eventually(lambda: serving(cut_off), within=10, what="the cut-off to re-claim")
            assert worker_of(cut_off) == 1
            later = cut_off.next_ids(200)
            assert {cut_off.layout.parse(i).worker for i in later} == {1}
            issued += later
            issued += newcomer.next_ids(200)
    assert len(set(issued)) == len(issued)


async def test_a_start_while_etcd_is_down_uses_the_cached_config_and_stays_unready(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=TTL)
    applied = await env.apply()
    settings = env.settings("pod")
    loaded = await sidecar.load_pool_config(settings, clock=env.clock)
    assert loaded == applied
    assert cache.path_of(settings.data_dir, env.keys).exists()

    dead = f"127.0.0.1:{processes.free_port()}"
    offline = dataclasses.replace(settings, etcd_endpoints=(dead,))
    cached = await sidecar.load_pool_config(offline, clock=env.clock)
    assert cached == applied

    async with sidecar.open_snowflake(offline, cached, clock=env.clock) as source:
        await eventually(lambda: source.ready_reason() == "lease_lost", within=3, what="lease_lost")
        with pytest.raises(errors.LeaseLost, match="etcd"):
            source.next_id()
        assert source.info()["worker"] is None

    no_cache = dataclasses.replace(offline, data_dir=tmp_path / "empty")
    with pytest.raises(errors.CoordinationError, match="no cached config"):
        await sidecar.load_pool_config(no_cache, clock=env.clock)
    unknown = dataclasses.replace(settings, pool="ns/missing")
    with pytest.raises(errors.ConfigError, match="nebula-id pool apply"):
        await sidecar.load_pool_config(unknown, clock=env.clock)
