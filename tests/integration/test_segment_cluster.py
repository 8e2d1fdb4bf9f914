"""Cluster mode end to end: `nebula-id pool apply` provisions two datacenters' databases, a
real `nebula-id serve` takes segments from dc-a, fails over to dc-b when dc-a's PostgreSQL
is killed, and never repeats an ID."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nebula_id.core import segment
from tests.support import http, processes
from tests.support.fixtures import PostgresFactory
from tests.support.services import EtcdServer

pytestmark = pytest.mark.integration

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
POOL_YAML = """\
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata: {name: failover, namespace: seg}
spec:
  algorithm: segment
  snowflake: {datacenterBits: 5, workerBits: 5}
  lease: {ttlSeconds: 3}
  datacenters:
    - {name: dc-a, id: 3}
    - {name: dc-b, id: 4}
  segment:
    tags:
      - {name: orders, step: 50, maxStep: 50}
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    return env | extra


@pytest.fixture
def sidecar_proc(tmp_path: pathlib.Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        processes.stop(proc, timeout=5)


def ids(base: str, count: int) -> list[int]:
    status, body = http.get(f"{base}/v1/ids/segment/orders?count={count}", timeout=10)
    assert status == 200, body
    return [int(v) for v in json.loads(body)["ids"]]


def info(base: str) -> dict[str, Any]:
    status, body = http.get(f"{base}/v1/info", timeout=5)
    assert status == 200, body
    source = json.loads(body)["segment"]["source"]
    assert isinstance(source, dict)
    return source


def test_pool_apply_provisions_and_the_sidecar_fails_over(
    tmp_path: pathlib.Path,
    etcd: EtcdServer,
    postgres_factory: PostgresFactory,
    sidecar_proc: list[subprocess.Popen[bytes]],
) -> None:
    dc_a, dc_b = postgres_factory(), postgres_factory()
    urls = f"dc-a={dc_a.dsn()},dc-b={dc_b.dsn()}"
    (tmp_path / "pool.yaml").write_text(POOL_YAML)
    applied = subprocess.run(
        [NEBULA_ID, "pool", "apply", "-f", str(tmp_path / "pool.yaml")],
        env=clean_env(NEBULA_ETCD_ENDPOINTS=etcd.endpoint, NEBULA_DATABASE_URLS=urls),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert "segment tables in datacenter dc-a: tags created: orders" in applied.stdout
    assert "segment tables in datacenter dc-b: tags created: orders" in applied.stdout
    for cluster in (dc_a, dc_b):
        assert cluster.psql("SELECT tag FROM nebula_segments", db="nebula").strip() == "orders"

    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    sidecar_proc.append(
        processes.spawn(
            [NEBULA_ID, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            log_path=tmp_path / "sidecar.log",
            env=clean_env(
                NEBULA_ETCD_ENDPOINTS=etcd.endpoint,
                NEBULA_POOL="seg/failover",
                NEBULA_DATACENTER="dc-a",
                NEBULA_DATABASE_URL=dc_a.dsn(),
                NEBULA_DATABASE_URLS=f"dc-b={dc_b.dsn()}",
                NEBULA_LOG_LEVEL="warning",
            ),
        )
    )
    processes.wait_until(
        lambda: http.get(base + "/readyz", timeout=1)[0] == 200,
        what="the sidecar",
        proc=sidecar_proc[0],
        log_path=tmp_path / "sidecar.log",
        timeout=30,
    )

    served = ids(base, 120)
    assert info(base)["tags"]["orders"]["datacenter"] == "dc-a"
    dc_a.kill()
    for _ in range(20):
        served += ids(base, 37)
    assert info(base)["tags"]["orders"]["datacenter"] == "dc-b"
    assert info(base)["failover"]["current"] == "dc-b"

    base_a, base_b = segment.datacenter_base(3, 5), segment.datacenter_base(4, 5)
    from_a = [v for v in served if base_a <= v < base_b]
    from_b = [v for v in served if v >= base_b]
    assert len(set(served)) == len(served), "an ID repeated"
    assert len(from_a) + len(from_b) == len(served)
    assert from_a
    assert from_b
    assert from_a == sorted(from_a)
    assert from_b == sorted(from_b)
    assert max(from_a) < base_b <= min(from_b) < base_b + segment.counter_limit(5)
