"""A Segment pool on the real node: DSNs from mounted Secrets, IDs from PostgreSQL.

The pool of `examples/pool-segment.yaml` names one Secret per datacenter; the
injected sidecar gets its own datacenter's DSN as an environment variable and
every datacenter's as a file of a projected Secret volume, which it reads as
uid 65532.  PostgreSQL runs inside the node's namespace, on the node IP, as a
datacenter's database would run outside the cluster.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import binaries

from e2e.node import support
from e2e.node.cluster import NODE_IP, POD_CIDR, REPO, Node
from nebula_id.core import crd
from nebula_id_operator import injection

pytestmark = pytest.mark.e2e

NS = "billing"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def postgres_on_node(node: Node) -> Iterator[dict[str, str]]:
    """A PostgreSQL server in the node's namespace, listening on the node IP."""
    pg_bin = binaries.postgres_bin_dir()
    postgres = pwd.getpwnam("postgres")
    workdir = Path(tempfile.mkdtemp(prefix="nebula-node-pg-"))
    workdir.chmod(0o755)
    data = workdir / "data"
    os.chown(workdir, postgres.pw_uid, postgres.pw_gid)
    subprocess.run(
        [str(pg_bin / "initdb"), f"--pgdata={data}", "--username=postgres", "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync"],
        user="postgres", check=True, capture_output=True,
    )  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        # The pods, and psql on the node itself.
        hba.write(f"host all all {POD_CIDR} trust\nhost all all {NODE_IP}/32 trust\n")
    log = (workdir / "postgres.log").open("wb")
    argv = [
        "nsenter", "-t", str(node.ns_pid), "-n", "-m", "--",
        "runuser", "-u", "postgres", "--",
        str(pg_bin / "postgres"), "-D", str(data),
        "-c", f"listen_addresses={NODE_IP}", "-c", "port=5432",
        "-c", f"unix_socket_directories={workdir}", "-c", "fsync=off",
        "-c", "max_connections=100", "-c", "shared_buffers=32MB",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:

        def psql(sql: str, db: str = "postgres") -> str:
            return node.sh(
                "runuser", "-u", "postgres", "--", str(pg_bin.parent / "bin" / "psql"),
                "-h", NODE_IP, "-p", "5432", "-U", "postgres", "-d", db, "-Atc", sql,
            ).stdout  # fmt: skip

        support.wait_until("PostgreSQL on the node IP", lambda: psql("SELECT 1").strip() == "1")
        psql("CREATE DATABASE dc_a")
        psql("CREATE DATABASE dc_b")
        yield {
            "dc-a": f"postgresql://postgres@{NODE_IP}:5432/dc_a",
            "dc-b": f"postgresql://postgres@{NODE_IP}:5432/dc_b",
            "psql": psql,  # type: ignore[dict-item]
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def test_segment_pool_serves_from_postgres_with_dsns_from_mounted_secrets(
    node: Node, release: dict[str, Any], postgres_on_node: dict[str, Any]
) -> None:
    with support.explained(node, NS):
        node.kubectl("create", "namespace", NS)
        node.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
        secret = yaml.safe_load((EXAMPLES / "database-secret.yaml").read_text())
        for dc in ("dc-a", "dc-b"):
            secret["metadata"]["name"] = f"nebula-id-db-{dc}"
            secret["stringData"]["dsn"] = postgres_on_node[dc]
            node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(secret))
        node.kubectl("apply", "-n", NS, "-f", str(EXAMPLES / "pool-segment.yaml"))
        node.kubectl(
            "wait", "-n", NS, "nip/invoices", "--for=condition=Ready", "--timeout=120s", timeout=150
        )
        app = yaml.safe_load((EXAMPLES / "app-deployment.yaml").read_text())
        app["metadata"]["name"] = "billing"
        app["spec"]["replicas"] = 1
        app["spec"]["template"]["metadata"]["annotations"][crd.POOL_ANNOTATION] = "invoices"
        node.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(app))
        node.kubectl(
            "rollout", "status", "-n", NS, "deployment/billing", "--timeout=180s", timeout=240
        )
        (pod,) = support.running_pods(node, NS, "app=web")
        name = pod["metadata"]["name"]

        # The sidecar runs as 65532 and reads every datacenter's DSN from its files.
        def in_sidecar(*argv: str) -> str:
            return node.kubectl(
                "exec", "-n", NS, name, "-c", injection.CONTAINER_NAME, "--", *argv
            ).stdout

        assert in_sidecar("id", "-u").strip() == "65532"
        for dc in ("dc-a", "dc-b"):
            assert in_sidecar("cat", f"{injection.DATABASES_DIR}/{dc}") == postgres_on_node[dc]

        # IDs of both tags, from inside the app container, through PostgreSQL.
        first = support.exec_json(
            node,
            NS,
            name,
            "web",
            "curl",
            "-fsS",
            "http://127.0.0.1:8080/v1/ids/segment/invoice?count=5",
        )
        ids = [int(i) for i in first["ids"]]
        assert ids == sorted(set(ids))
        payment = support.exec_json(
            node, NS, name, "web", "curl", "-fsS", "http://127.0.0.1:8080/v1/ids/segment/payment"
        )
        assert int(payment["id"]) > 0
        rows = postgres_on_node["psql"](
            "SELECT tag, datacenter FROM nebula_segments ORDER BY tag", db="dc_a"
        )
        assert "invoice|dc-a" in rows, rows
