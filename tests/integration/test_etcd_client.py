"""The etcd client against a real etcd 3.6: kv, transactions, leases, watch, failover, auth, TLS."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nebula_id import errors
from nebula_id.config import operator as operator_config
from nebula_id.config import serve as serve_config
from nebula_id.etcd import client as etcd
from tests.support import binaries, pki, processes
from tests.support.fixtures import EtcdFactory
from tests.support.waiting import eventually_async


@pytest.fixture
def prefix() -> str:
    return f"/test-client/{uuid.uuid4()}/"


@pytest.fixture
async def client(etcd_endpoint: str) -> AsyncIterator[etcd.EtcdClient]:
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as c:
        yield c


async def test_put_get_range_and_delete(client: etcd.EtcdClient, prefix: str) -> None:
    revision = await client.put(prefix + "a", b"1")
    await client.put(prefix + "b", b"\x00\xff binary")
    await client.put(prefix.rstrip("/") + "-outside", b"x")

    got = await client.get(prefix + "a")
    assert got is not None
    assert (got.value, got.mod_revision, got.version, got.lease) == (b"1", revision, 1, 0)
    assert await client.get(prefix + "missing") is None

    listed = await client.range(prefix, prefix=True)
    assert [kv.key for kv in listed.kvs] == [prefix + "a", prefix + "b"]
    assert listed.kvs[1].value == b"\x00\xff binary"
    assert listed.count == 2
    assert listed.revision >= revision

    assert await client.delete(prefix, prefix=True) == 2
    assert (await client.range(prefix, prefix=True)).count == 0
    assert await client.get(prefix.rstrip("/") + "-outside") is not None


async def test_create_if_absent_transaction_has_one_winner(
    client: etcd.EtcdClient, prefix: str
) -> None:
    key = prefix + "claim"

    async def claim(value: bytes) -> etcd.TxnResult:
        return await client.txn([etcd.Compare.absent(key)], [etcd.Put(key, value)], [etcd.Get(key)])

    results = await asyncio.gather(*(claim(f"w{i}".encode()) for i in range(10)))
    winners = [r for r in results if r.succeeded]
    assert len(winners) == 1
    stored = await client.get(key)
    assert stored is not None
    for loser in (r for r in results if not r.succeeded):
        assert loser.ranges == ((stored,),) or loser.ranges[0][0].value == stored.value


async def test_compare_on_mod_revision_value_and_lease(
    client: etcd.EtcdClient, prefix: str
) -> None:
    key = prefix + "cas"
    first = await client.put(key, b"v1")
    stale = await client.txn([etcd.Compare.mod_revision(key, first - 1)], [etcd.Put(key, b"x")])
    fresh = await client.txn([etcd.Compare.mod_revision(key, first)], [etcd.Put(key, b"v2")])
    assert (stale.succeeded, fresh.succeeded) == (False, True)
    assert (await client.txn([etcd.Compare.value_equals(key, b"v2")], [])).succeeded
    assert not (await client.txn([etcd.Compare.lease_equals(key, 42)], [])).succeeded
    assert not (await client.txn([etcd.Compare.lease_equals(prefix + "nope", 42)], [])).succeeded


async def test_a_lease_keeps_its_key_until_revoked(client: etcd.EtcdClient, prefix: str) -> None:
    lease = await client.grant(5)
    assert lease.ttl == 5
    await client.put(prefix + "held", b"mine", lease=lease.id)
    assert (await client.get(prefix + "held")).lease == lease.id  # type: ignore[union-attr]
    assert await client.keepalive(lease.id) == 5
    info = await client.time_to_live(lease.id, keys=True)
    assert info.granted_ttl == 5
    assert 0 < info.ttl <= 5
    assert info.keys == (prefix + "held",)
    assert lease.id in await client.leases()

    assert await client.revoke(lease.id) is True
    assert await client.get(prefix + "held") is None
    assert await client.revoke(lease.id) is False
    assert (await client.time_to_live(lease.id)).ttl == -1
    with pytest.raises(etcd.LeaseNotFound):
        await client.keepalive(lease.id)
    with pytest.raises(etcd.LeaseNotFound):
        await client.put(prefix + "late", b"x", lease=lease.id)


async def test_an_expired_lease_takes_its_key_and_refuses_keepalive(
    client: etcd.EtcdClient, prefix: str
) -> None:
    lease = await client.grant(2)
    await client.put(prefix + "short", b"x", lease=lease.id)
    started = time.monotonic()

    async def gone() -> bool:
        return await client.get(prefix + "short") is None

    await eventually_async(gone, 10, what="the lease to expire", interval=0.2)
    assert time.monotonic() - started >= 1.0
    with pytest.raises(etcd.LeaseNotFound):
        await client.keepalive(lease.id)


async def test_watch_reports_puts_and_deletes_from_a_revision(
    client: etcd.EtcdClient, prefix: str
) -> None:
    before = await client.put(prefix + "w/0", b"before")
    seen: list[etcd.WatchEvent] = []

    async def collect() -> None:
        async for event in client.watch(
            prefix + "w/", prefix=True, start_revision=before, prev_kv=True
        ):
            seen.append(event)
            if len(seen) == 3:
                return

    task = asyncio.create_task(collect())
    # The replayed event first, alone in its answer (whose revision it carries).
    await eventually_async(lambda: seen, 10, what="the replayed event")
    await client.put(prefix + "w/1", b"one")
    await client.delete(prefix + "w/0")
    await asyncio.wait_for(task, 10)

    assert [(e.type, e.kv.key) for e in seen] == [
        ("PUT", prefix + "w/0"),
        ("PUT", prefix + "w/1"),
        ("DELETE", prefix + "w/0"),
    ]
    assert seen[0].revision == before
    assert seen[2].prev_kv is not None
    assert seen[2].prev_kv.value == b"before"


async def test_a_broken_watch_raises_coordination_error(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(server.endpoint,))) as c:

        async def drain() -> None:
            async for _ in c.watch("/anything", prefix=True):
                pass

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.3)
        server.kill()
        with pytest.raises(errors.CoordinationError):
            await asyncio.wait_for(task, 10)


async def test_fails_over_to_the_next_endpoint(etcd_endpoint: str, prefix: str) -> None:
    dead = f"http://127.0.0.1:{processes.free_port()}"
    settings = etcd.EtcdSettings(endpoints=(dead, etcd_endpoint.removeprefix("http://")))
    async with etcd.EtcdClient(settings) as c:
        await c.put(prefix + "k", b"v")
        got = await c.get(prefix + "k")
        assert got is not None
        assert got.value == b"v"


async def test_unreachable_etcd_is_a_coordination_error_quickly() -> None:
    settings = etcd.EtcdSettings(endpoints=(f"127.0.0.1:{processes.free_port()}",), timeout=2.0)
    started = time.monotonic()
    async with etcd.EtcdClient(settings) as c:
        with pytest.raises(errors.CoordinationError, match="etcd unreachable"):
            await c.get("/x")
    elapsed = time.monotonic() - started
    print(f"unreachable etcd: CoordinationError after {elapsed:.2f} s")
    assert elapsed < 2 * settings.timeout  # refused at once, not retried until a timeout


def test_settings_refuse_half_configured_tls_and_auth() -> None:
    with pytest.raises(errors.ConfigError, match="certificate and key"):
        etcd.EtcdSettings(endpoints=("a:1",), cert_file="c.pem")
    with pytest.raises(errors.ConfigError, match="user name and password"):
        etcd.EtcdSettings(endpoints=("a:1",), username="root")
    with pytest.raises(errors.ConfigError, match="at least one endpoint"):
        etcd.EtcdSettings(endpoints=())
    assert etcd.EtcdSettings(endpoints=("a:1",), ca_file="ca.pem").urls == ("https://a:1",)
    assert etcd.parse_endpoints(" http://a:1, b:2 ,") == ("http://a:1", "b:2")


async def test_user_and_password_authentication(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    async with aiohttp.ClientSession() as session:
        for path, body in [
            ("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/enable", {}),
        ]:
            async with session.post(server.endpoint + path, json=body) as response:
                assert response.status == 200, await response.text()

    plain = etcd.EtcdSettings(endpoints=(server.endpoint,))
    async with etcd.EtcdClient(plain) as c:
        with pytest.raises(errors.CoordinationError, match=r"user name is empty|permission"):
            await c.put("/auth/k", b"v")

    wrong = etcd.EtcdSettings(endpoints=(server.endpoint,), username="root", password="nope")
    async with etcd.EtcdClient(wrong) as c:
        with pytest.raises(errors.CoordinationError, match="authentication failed"):
            await c.put("/auth/k", b"v")

    right = etcd.EtcdSettings(endpoints=(server.endpoint,), username="root", password="s3cret")
    async with etcd.EtcdClient(right) as c:
        await c.put("/auth/k", b"v")
        lease = await c.grant(5)
        assert await c.keepalive(lease.id) == 5
        got = await c.get("/auth/k")
        assert got is not None
        assert got.value == b"v"


async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority()
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.pem.cert)
    server_cert, server_key = ca.issue(
        "etcd", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True, also_client=True
    ).write(tmp_path, "server")
    client_cert, client_key = ca.issue("nebula-id").write(tmp_path, "client")
    port, peer = processes.free_port(), processes.free_port()
    url = f"https://127.0.0.1:{port}"
    argv = [
        binaries.bin_dir() / "etcd",
        f"--data-dir={tmp_path / 'data'}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=default=http://127.0.0.1:{peer}",
        f"--cert-file={server_cert}",
        f"--key-file={server_key}",
        f"--trusted-ca-file={ca_file}",
        "--client-cert-auth",
        "--log-level=warn",
    ]
    proc = processes.spawn(argv, log_path=tmp_path / "etcd.log")
    try:
        settings = etcd.EtcdSettings(
            endpoints=(f"127.0.0.1:{port}",),
            ca_file=str(ca_file),
            cert_file=str(client_cert),
            key_file=str(client_key),
            timeout=2.0,
        )
        async with etcd.EtcdClient(settings) as c:

            async def put() -> bool:
                assert proc.poll() is None, processes.log_tail(tmp_path / "etcd.log")
                await c.put("/tls/k", b"v")
                return True

            await eventually_async(
                put, 30, what="the TLS etcd", interval=0.2, ignoring=(errors.CoordinationError,)
            )
            got = await c.get("/tls/k")
            assert got is not None
            assert got.value == b"v"

        # The same bare endpoint and TLS files, given as the sidecar and the operator
        # read them: both dial https and read the same key.
        env = {
            "NEBULA_ETCD_ENDPOINTS": f"127.0.0.1:{port}",
            "NEBULA_ETCD_CA_FILE": str(ca_file),
            "NEBULA_ETCD_CERT_FILE": str(client_cert),
            "NEBULA_ETCD_KEY_FILE": str(client_key),
        }
        sidecar = serve_config.load({}, {"NEBULA_POOL": "ns/p", **env}).etcd
        operator = operator_config.load({}, env).etcd
        assert sidecar == operator
        assert sidecar is not None
        assert sidecar.urls == (url,)
        for loaded in (sidecar, operator):
            async with etcd.EtcdClient(loaded) as c:
                got = await c.get("/tls/k")
                assert got is not None
                assert got.value == b"v"

        no_cert = etcd.EtcdSettings(endpoints=(f"127.0.0.1:{port}",), ca_file=str(ca_file))
        async with etcd.EtcdClient(no_cert) as c:
            with pytest.raises(errors.CoordinationError):
                await c.get("/tls/k")
    finally:
        processes.stop(proc)
