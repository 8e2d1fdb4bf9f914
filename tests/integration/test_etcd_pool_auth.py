"""Per-pool etcd users against a real etcd with auth enabled and mutual TLS.

The operator gives each pool an etcd user whose role covers only that pool's
keys (`nebula_id.core.access`).  Here a real `nebula-id serve` runs with pool
A's credential over mTLS and serves Snowflake IDs (so the role is enough), and
the same credential is refused pool B's keys and the operator's leader key.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from nebula_id.core import access
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import users
from tests.support import binaries, pki, processes
from tests.support.waiting import eventually_async

NEBULA_ID = str(Path(sys.executable).parent / "nebula-id")
ROOT_PASSWORD = "root-s3cret"
SPEC = {
    "snowflake": {"workerBits": 5, "datacenterBits": 5, "timestampBits": 41},
    "datacenters": [{"name": "dc-a", "id": 2}],
    "lease": {"ttlSeconds": 3},
}


class TlsEtcd:
    """etcd on a free port with `--client-cert-auth`, and the files a client needs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        ca = pki.CertificateAuthority()
        self.ca_file = workdir / "ca.crt"
        self.ca_file.write_bytes(ca.pem.cert)
        self.server_cert, self.server_key = ca.issue(
            "etcd", ip_addresses=("127.0.0.1",), server=True, also_client=True
        ).write(workdir, "server")
        # No CN: with auth enabled etcd's JSON gateway refuses client certificates that
        # carry one; the certificate proves the TLS peer, the password the etcd user.
        self.client_cert, self.client_key = ca.issue("").write(workdir, "client")
        self.port, self.peer = processes.free_port(), processes.free_port()
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        argv = [
            str(binaries.bin_dir() / "etcd"),
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            f"--cert-file={self.server_cert}",
            f"--key-file={self.server_key}",
            f"--trusted-ca-file={self.ca_file}",
            "--client-cert-auth",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        self.proc = processes.spawn(argv, log_path=self.workdir / "etcd.log")

    def settings(
        self, username: str | None = None, password: str | None = None
    ) -> etcd.EtcdSettings:
        return etcd.EtcdSettings(
            endpoints=(self.endpoint,),
            ca_file=str(self.ca_file),
            cert_file=str(self.client_cert),
            key_file=str(self.client_key),
            username=username,
            password=password,
            timeout=3.0,
        )

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[TlsEtcd]:
    server = TlsEtcd(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _enable_auth(server: TlsEtcd) -> None:
    async with etcd.EtcdClient(server.settings()) as c:

        async def answers() -> bool:
            assert server.proc is not None
            assert server.proc.poll() is None
            await c.auth_enabled()
            return True

        await eventually_async(
            answers,
            30,
            what="the TLS etcd",
            interval=0.2,
            ignoring=(etcd.errors.CoordinationError,),
        )
        await c.user_add("root", ROOT_PASSWORD)
        await c.user_grant_role("root", "root")
        await c._call("/v3/auth/enable", {})


@pytest.fixture
async def root(tls_etcd: TlsEtcd) -> AsyncIterator[etcd.EtcdClient]:
    await _enable_auth(tls_etcd)
    async with etcd.EtcdClient(tls_etcd.settings("root", ROOT_PASSWORD)) as c:
        assert await c.auth_enabled()
        yield c


async def _denied(call: object) -> str:
    assert asyncio.iscoroutine(call)
    with pytest.raises(etcd.EtcdRequestError) as caught:
        await call
    assert "permission denied" in caught.value.message, caught.value.message
    return caught.value.message


async def test_a_pool_credential_reaches_its_own_pool_and_nothing_else(
    tls_etcd: TlsEtcd, root: etcd.EtcdClient, tmp_path: Path
) -> None:
    prefix = f"/test-auth/{uuid.uuid4()}"
    pool_a = pool_keys.PoolKeys("team-a", "ids", prefix=prefix)
    pool_b = pool_keys.PoolKeys("team-b", "ids", prefix=prefix)
    leader = f"{prefix}/operator/leader"
    for keys in (pool_a, pool_b):
        await pool_store.apply(root, keys, SPEC)
        await root.put(keys.health, b"{}")
    await root.put(leader, b"operator-0")
    assert await users.ensure_pool_user(root, pool_a, "pw-a", set_password=True)
    assert await users.ensure_pool_user(root, pool_b, "pw-b", set_password=True)
    # Idempotent: a second reconcile changes nothing, and the role holds exactly the list.
    assert not await users.ensure_pool_user(root, pool_a, "pw-a", set_password=False)
    held = await root.role_permissions(access.principal(pool_a))
    assert set(held) == set(access.sidecar_permissions(pool_a))

    # A real sidecar with pool A's credential, over mutual TLS, claims a worker and serves.
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_ETCD_ENDPOINTS": tls_etcd.endpoint,
        "NEBULA_ETCD_PREFIX": prefix,
        "NEBULA_ETCD_CA_FILE": str(tls_etcd.ca_file),
        "NEBULA_ETCD_CERT_FILE": str(tls_etcd.client_cert),
        "NEBULA_ETCD_KEY_FILE": str(tls_etcd.client_key),
        "NEBULA_ETCD_USERNAME": access.principal(pool_a),
        "NEBULA_ETCD_PASSWORD": "pw-a",
        "NEBULA_POOL": "team-a/ids",
        "NEBULA_DATACENTER": "dc-a",
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(tmp_path / "sidecar"),
        "NEBULA_POD_NAME": "app-0",
    }
    log_path = tmp_path / "sidecar.log"
    proc = processes.spawn([NEBULA_ID, "serve"], log_path=log_path, env=env)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            url = f"http://127.0.0.1:{port}"

            async def fifty() -> list[int] | None:
                assert proc.poll() is None, processes.log_tail(log_path)
                async with session.get(url + "/v1/ids/snowflake?count=50") as response:
                    if response.status != 200:
                        return None
                    return list((await response.json())["ids"])

            ids = await eventually_async(
                fifty, 30, what="Snowflake IDs", interval=0.2, ignoring=(aiohttp.ClientError,)
            )
        assert len(set(ids)) == 50
        claims = await root.range(pool_a.workers_prefix, prefix=True)
        assert claims.count == 1
    finally:
        processes.stop(proc)

    async with etcd.EtcdClient(tls_etcd.settings(access.principal(pool_a), "pw-a")) as a:
        # Its own pool: read config, health and identity; write workers, clock and floors.
        assert await a.get(pool_a.config) is not None
        assert await a.get(pool_a.health) is not None
        assert await a.get(pool_a.identity) is not None  # written with the config
        await a.put(pool_a.worker(2, 31), b"x")
        await a.put(pool_a.clock(2, 31), b"x")
        await a.put(f"{pool_a.root}/floors/2/tag", b"x")
        assert await a.delete(pool_a.worker(2, 31)) == 1
        # Not its own config or health: those are the operator's.
        await _denied(a.put(pool_a.config, b"{}"))
        await _denied(a.put(pool_a.health, b"{}"))
        # Nothing of pool B.
        await _denied(a.get(pool_b.config))
        await _denied(a.range(pool_b.workers_prefix, prefix=True))
        await _denied(a.put(pool_b.worker(2, 0), b"x"))
        await _denied(a.put(pool_b.clock(2, 0), b"x"))
        await _denied(a.delete(pool_b.workers_prefix, prefix=True))
        await _denied(
            a.txn([etcd.Compare.absent(pool_b.worker(2, 1))], [etcd.Put(pool_b.worker(2, 1), b"x")])
        )
        # Nor the leader key, nor the keyspace as a whole.
        await _denied(a.get(leader))
        await _denied(a.put(leader, b"me"))
        await _denied(a.range(prefix + "/", prefix=True))
        # Nor the auth store.
        await _denied(a.user_add("intruder", "x"))
    leader_kv = await root.get(leader)
    assert leader_kv is not None
    assert leader_kv.value == b"operator-0"
    assert (await root.range(pool_b.workers_prefix, prefix=True)).count == 0

    # A certificate without a password is nobody.
    async with etcd.EtcdClient(tls_etcd.settings()) as anonymous:
        with pytest.raises(etcd.EtcdRequestError):
            await anonymous.get(pool_a.config)

    # Deleting pool B's user ends its credential.
    await users.delete_pool_user(root, pool_b)
    async with etcd.EtcdClient(tls_etcd.settings(access.principal(pool_b), "pw-b")) as b:
        with pytest.raises(etcd.EtcdRequestError, match="authentication failed"):
            await b.get(pool_b.config)
