"""`nebula-id pool apply|get|delete` and the pool writer against a real etcd (and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from tests.support import processes
from tests.support.services import PostgresCluster

POOL_YAML = """
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata:
  name: orders
spec:
  algorithm: snowflake
  snowflake:
    workerBits: 6
    datacenterBits: 4
    timestampBits: 41
    sequenceBits: 12
  datacenters:
    - name: dc-a
    - name: dc-b
      id: 5
  segment:
    tags:
      - name: order
        step: 100
  lease:
    ttlSeconds: 4
"""


class Cli:
    """Runs the real `nebula-id` console script against one etcd and key prefix."""

    def __init__(self, endpoint: str, tmp_path: Path) -> None:
        self.prefix = f"/test-poolcli/{uuid.uuid4()}"
        self.endpoint = endpoint
        self.tmp_path = tmp_path

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "nebula-id"), "pool", *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")} | {
            "NEBULA_ETCD_ENDPOINTS": self.endpoint,
            "NEBULA_ETCD_PREFIX": self.prefix,
        }
        full_env |= env or {}
        return subprocess.run(
            command, capture_output=True, text=True, env=full_env, timeout=60, check=False
        )

    def write(self, text: str, name: str = "pool.yaml") -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)

    def client(self) -> etcd.EtcdClient:
        return etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,)))


@pytest.fixture
def cli(etcd_endpoint: str, tmp_path: Path) -> Cli:
    return Cli(etcd_endpoint, tmp_path)


def edited(**changes: Any) -> str:
    doc = yaml.safe_load(POOL_YAML)
    for path, value in changes.items():
        node = doc["spec"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return yaml.safe_dump(doc)


def test_apply_get_and_apply_again(cli: Cli) -> None:
    created = cli.run("apply", "-f", cli.write(POOL_YAML))
    assert created.returncode == 0, created.stderr
    assert "pool default/orders created" in created.stdout
    assert "dc-a=0, dc-b=5" in created.stdout
    assert "64 worker IDs each" in created.stdout

    got = cli.run("get", "orders")
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)
    assert stored["snowflake"]["workerBits"] == 6
    assert [(d["name"], d["id"]) for d in stored["datacenters"]] == [("dc-a", 0), ("dc-b", 5)]
    assert stored["lease"] == {"ttlSeconds": 4}
    as_yaml = cli.run("get", "orders", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == stored

    again = cli.run("apply", "-f", cli.write(POOL_YAML))
    assert again.returncode == 0
    assert "unchanged" in again.stdout

    more_tags = edited(segment={"tags": [{"name": "order"}, {"name": "invoice"}]})
    changed = cli.run("apply", "-f", cli.write(more_tags))
    assert changed.returncode == 0, changed.stderr
    assert "configured" in changed.stdout
    assert [t["name"] for t in json.loads(cli.run("get", "orders").stdout)["segment"]["tags"]] == [
        "order",
        "invoice",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snowflake__workerBits": 5, "snowflake__timestampBits": 42}, "layout and epoch cannot"),
        ({"snowflake__epoch": "2025-01-01T00:00:00Z"}, "layout and epoch cannot"),
        (
            {"datacenters": [{"name": "dc-a", "id": 0}, {"name": "dc-c", "id": 5}]},
            "datacenter id 5 belongs to 'dc-b'",
        ),
        ({"datacenters": [{"name": "dc-a", "id": 1}]}, "'dc-a' has id 0; it cannot change"),
    ],
)
def test_changes_that_would_break_uniqueness_are_refused(
    cli: Cli, change: dict[str, Any], message: str
) -> None:
    assert cli.run("apply", "-f", cli.write(POOL_YAML)).returncode == 0
    refused = cli.run("apply", "-f", cli.write(edited(**change)))
    assert refused.returncode == 2
    assert "pool default/orders refused" in refused.stderr
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr
    assert json.loads(cli.run("get", "orders").stdout)["snowflake"]["workerBits"] == 6


def test_a_removed_datacenter_id_is_never_given_again(cli: Cli) -> None:
    assert cli.run("apply", "-f", cli.write(POOL_YAML)).returncode == 0
    only_a = edited(datacenters=[{"name": "dc-a"}])
    assert cli.run("apply", "-f", cli.write(only_a)).returncode == 0
    reuse = cli.run("apply", "-f", cli.write(edited(datacenters=[{"name": "dc-c", "id": 5}])))
    assert reuse.returncode == 2
    assert "used by a removed datacenter" in reuse.stderr
    auto = cli.run(
        "apply", "-f", cli.write(edited(datacenters=[{"name": "dc-a"}, {"name": "dc-c"}]))
    )
    assert auto.returncode == 0, auto.stderr
    assert "dc-a=0, dc-c=1" in auto.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (edited(snowflake__workerBits=7), "must sum to 63"),
        (edited(lease__ttlSeconds=1), "ttlSeconds must be 2..300"),
        (edited(algorithm="sonyflake"), "spec.algorithm must be one of"),
        ("kind: Deployment\nmetadata: {name: x}\n", "expected kind NebulaIdPool"),
        ("spec: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_pools_are_rejected_with_a_message(cli: Cli, text: str, message: str) -> None:
    result = cli.run("apply", "-f", cli.write(text))
    assert result.returncode == 2
    assert message in result.stderr
    assert cli.run("get", "orders").returncode == 1


def test_dry_run_validates_without_etcd(cli: Cli) -> None:
    result = cli.run(
        "apply",
        "--dry-run",
        "-f",
        cli.write(POOL_YAML),
        env={"NEBULA_ETCD_ENDPOINTS": f"127.0.0.1:{processes.free_port()}"},
    )
    assert result.returncode == 0, result.stderr
    assert "dry run, nothing written" in result.stdout
    assert cli.run("get", "orders").returncode == 1


def test_namespaces_and_stdin(cli: Cli) -> None:
    path = cli.write(POOL_YAML)
    with open(path) as f:
        piped = subprocess.run(
            [
                str(Path(sys.executable).parent / "nebula-id"),
                "pool",
                "apply",
                "-f",
                "-",
                "-n",
                "team",
            ],
            stdin=f,
            capture_output=True,
            text=True,
            env=os.environ
            | {"NEBULA_ETCD_ENDPOINTS": cli.endpoint, "NEBULA_ETCD_PREFIX": cli.prefix},
            timeout=60,
            check=False,
        )
    assert piped.returncode == 0, piped.stderr
    assert "pool team/orders created" in piped.stdout
    assert cli.run("get", "orders", "-n", "team").returncode == 0
    assert cli.run("get", "orders").returncode == 1
    conflict = cli.run(
        "apply",
        "-f",
        cli.write(POOL_YAML.replace("name: orders", "name: orders\n  namespace: prod")),
        "-n",
        "team",
    )
    assert conflict.returncode == 2
    assert "namespace" in conflict.stderr


async def test_delete_removes_config_and_claims_but_keeps_marks(cli: Cli) -> None:
    assert cli.run("apply", "-f", cli.write(POOL_YAML)).returncode == 0
    keys = pool_keys.PoolKeys("default", "orders", prefix=cli.prefix)
    async with cli.client() as c:
        lease = await c.grant(30)
        await c.put(keys.worker(0, 3), b"{}", lease=lease.id)
        await c.put(keys.clock(0, 3), b'{"ms": 1}')
        deleted = await asyncio.to_thread(cli.run, "delete", "orders")
        assert deleted.returncode == 0, deleted.stderr
        assert "1 worker claims removed" in deleted.stdout
        assert await c.get(keys.config) is None
        assert await c.get(keys.worker(0, 3)) is None
        assert await c.get(keys.clock(0, 3)) is not None
        await c.revoke(lease.id)
    missing = await asyncio.to_thread(cli.run, "delete", "orders")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_unreachable_etcd_exits_3_with_a_message(cli: Cli) -> None:
    env = {"NEBULA_ETCD_ENDPOINTS": f"127.0.0.1:{processes.free_port()}"}
    for args in (("apply", "-f", cli.write(POOL_YAML)), ("get", "orders"), ("delete", "orders")):
        result = cli.run(*args, env=env)
        assert result.returncode == 3
        assert "etcd unreachable" in result.stderr
    no_etcd = cli.run("get", "orders", env={"NEBULA_ETCD_ENDPOINTS": ""})
    assert no_etcd.returncode == 2
    assert "--etcd-endpoints" in no_etcd.stderr


async def test_concurrent_writers_never_lose_an_update(cli: Cli) -> None:
    """Each writer replaces the datacenter list; with compare-and-swap every removed ID is
    retired, so no datacenter ID is ever handed out twice."""
    keys = pool_keys.PoolKeys("default", "race", prefix=cli.prefix)

    async def write(i: int) -> None:
        async with cli.client() as c:
            await pool_store.apply(c, keys, {"datacenters": [{"name": f"dc-{i}"}]})

    await asyncio.gather(*(write(i) for i in range(5)))
    async with cli.client() as c:
        stored = await pool_store.get(c, keys)
    assert stored is not None
    (last,) = stored.config.datacenters
    assert last.id == 4
    assert stored.config.retired_datacenter_ids == (0, 1, 2, 3)


async def test_the_writer_refuses_an_unsafe_change(cli: Cli) -> None:
    keys = pool_keys.PoolKeys("default", "unsafe", prefix=cli.prefix)
    async with cli.client() as c:
        await pool_store.apply(c, keys, {"snowflake": {"epoch": "2024-06-01T00:00:00Z"}})
        with pytest.raises(errors.InvalidPool, match="cannot change"):
            await pool_store.apply(c, keys, {"snowflake": {"epoch": "2024-07-01T00:00:00Z"}})


def test_apply_provisions_the_segment_databases(cli: Cli, postgres: PostgresCluster) -> None:
    dsn_a = postgres.create_database(f"poolcli_a_{uuid.uuid4().hex[:8]}")
    dsn_b = postgres.create_database(f"poolcli_b_{uuid.uuid4().hex[:8]}")
    env = {"NEBULA_DATABASE_URLS": f"dc-a={dsn_a},dc-b={dsn_b}"}
    first = cli.run("apply", "-f", cli.write(POOL_YAML), env=env)
    assert first.returncode == 0, first.stderr
    assert "segment tables in datacenter dc-a: tags created: order" in first.stdout
    assert "segment tables in datacenter dc-b: tags created: order" in first.stdout
    again = cli.run(
        "apply", "-f", cli.write(POOL_YAML), "--database-url", dsn_a, "--datacenter", "dc-a"
    )
    assert again.returncode == 0, again.stderr
    assert "tags created: none; already there: order" in again.stdout
    wrong = cli.run(
        "apply", "-f", cli.write(POOL_YAML), env={"NEBULA_DATABASE_URLS": f"dc-x={dsn_a}"}
    )
    assert wrong.returncode == 2
    assert "no datacenter 'dc-x'" in wrong.stderr
