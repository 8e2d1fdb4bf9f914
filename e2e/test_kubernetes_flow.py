"""The whole Kubernetes path against the real kube-apiserver, etcd and PostgreSQL.

What a user does -- `helm install`, create Secrets and pools, deploy a labelled
app, call the sidecar -- with the kubelet's part played honestly on this host
(`e2e.kubelet`): the operator runs as a process with the environment of the
Helm-rendered Deployment and the chart's ServiceAccount (so its RBAC is the
chart's), and each injected sidecar runs as a process with the environment the
kubelet would resolve from the Pod object and the real Secrets.  etcd has
authentication on, so the credentials travel through Secrets end to end.  The
app namespace enforces the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import waiting
from tests.support.controlplane import ControlPlane, run_cli
from tests.support.matching import is_subset
from tests.support.processes import free_port

from e2e import kubelet
from nebula_id.core import access, crd, poolspec
from nebula_id.core import keys as pool_keys
from nebula_id_operator import injection

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "nebula-id"
EXAMPLES = REPO / "examples"
ETCD_PASSWORD = "e2e-" + uuid.uuid4().hex[:12]
DC_A = [{"name": "dc-a", "id": 1, "databaseSecretRef": {"name": "nebula-id-db-dc-a"}}]


# --- small helpers ---------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], Any], *, timeout: float = 60) -> Any:
    """`waiting.eventually` for kubectl probes: an exception counts as "not yet"."""
    return waiting.eventually(check, timeout, what=what, interval=0.3, ignoring=(Exception,))


def http_get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        ctype = response.getheader("Content-Type") or ""
        return response.status, json.loads(body) if "json" in ctype else body.decode()
    finally:
        conn.close()


def etcd_post(endpoint: str, path: str, body: Mapping[str, Any], token: str | None = None) -> Any:
    request = urllib.request.Request(
        endpoint + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return json.loads(response.read())


def etcd_token(endpoint: str) -> str:
    auth = {"name": "root", "password": ETCD_PASSWORD}
    return str(etcd_post(endpoint, "/v3/auth/authenticate", auth)["token"])


def etcd_leases(endpoint: str) -> set[int]:
    got = etcd_post(endpoint, "/v3/lease/leases", {}, token=etcd_token(endpoint))
    return {int(lease["ID"]) for lease in got.get("leases", [])}


def etcd_keys(endpoint: str, prefix: str) -> list[str]:
    token = {"token": etcd_token(endpoint)}
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    got = etcd_post(
        endpoint,
        "/v3/kv/range",
        {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True},
        token=token["token"],
    )
    return [base64.b64decode(kv["key"]).decode() for kv in got.get("kvs", [])]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kube_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)


def secret_reader(plane: ControlPlane, namespace: str) -> kubelet.SecretReader:
    def read(name: str) -> Mapping[str, str] | None:
        got = plane.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
        return json.loads(got.stdout).get("data") or {} if got.returncode == 0 else None

    return read


def process_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: no proxies, nothing of the test runner's but PATH and HOME.

    PYTHONPATH is kept so that the processes run this checkout's code even when
    the venv's editable install points at another one.
    """
    names = ("PATH", "HOME", "LANG", "TZ", "PYTHONPATH")
    keep = {k: v for k, v in os.environ.items() if k in names}
    return {**keep, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}


class Processes:
    """Local stand-ins for containers; all stopped at the end, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, container: kubelet.LocalContainer, env: Mapping[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            container.argv,
            env=process_env({**container.env, **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, name: str, *, timeout: float = 20) -> int:
        proc = self.running.pop(name)
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def alive(self, name: str) -> bool:
        return self.running[name].poll() is None

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        for name in list(self.running):
            self.stop(name, timeout=5)


# --- the flow ----------------------------------------------------------------------------


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {
        "release": f"e2e{tag}",
        "system": f"nebula-id-{tag}",
        "app": f"shop-{tag}",
        "prefix": f"/e2e-{tag}",
        "database": f"e2e_{tag}",
    }


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def etcd_with_auth(etcd_factory: Callable[[], Any]) -> str:
    """A private etcd with a root user and authentication on."""
    endpoint = str(etcd_factory().endpoint)
    etcd_post(endpoint, "/v3/auth/user/add", {"name": "root", "password": ETCD_PASSWORD})
    etcd_post(endpoint, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    etcd_post(endpoint, "/v3/auth/enable", {})
    return endpoint


def render_chart(helm_bin: str, names: Mapping[str, str], values: Mapping[str, Any]) -> list[Any]:
    values_file = Path(f"/tmp/{names['release']}-values.yaml")
    values_file.write_text(yaml.safe_dump(values))
    try:
        out = run_cli(
            [helm_bin, "template", names["release"], str(CHART), "-n", names["system"],
             "--include-crds", "-f", str(values_file), "--set", "etcd.allowInsecure=true"]
        ).stdout  # fmt: skip
    finally:
        values_file.unlink()
    # `helm install` creates no `helm test` hooks: leave them out too.
    docs = [d for d in yaml.safe_load_all(out) if d]
    return [d for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]


def service_account_kubeconfig(
    plane: ControlPlane, kubeconfig: str, sa: str, ns: str, dest: Path
) -> str:
    token = plane.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": cluster["name"], "user": sa}}],
        "current-context": sa,
    }
    dest.write_text(yaml.safe_dump(config))
    return str(dest)


def pool_doc(path: Path, name: str, namespace: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"].update(changes)
    return doc


def pod_from_template(namespace: str, pool: str) -> dict[str, Any]:
    """The example Deployment's pod template, as the ReplicaSet would create it."""
    deployment = yaml.safe_load((EXAMPLES / "app-deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    metadata = dict(template["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), crd.POOL_ANNOTATION: pool}
    metadata["generateName"] = f"{deployment['metadata']['name']}-{pool}-"
    metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def test_install_pool_inject_serve_and_release(
    control_plane: ControlPlane,
    kubeconfig: str,
    helm_bin: str,
    etcd_with_auth: str,
    postgres: Any,
    names: dict[str, str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    plane, etcd = control_plane, etcd_with_auth
    system, app = names["system"], names["app"]
    webhook_port, probe_port = free_port(), free_port()
    cluster_scoped: list[tuple[str, str]] = []
    try:
        # 1. The chart, rendered and applied for real (a laptop would `helm install`).
        docs = render_chart(
            helm_bin,
            names,
            {
                "etcd": {
                    "endpoints": [etcd],
                    "prefix": names["prefix"],
                    "auth": {"secretName": "etcd-auth"},
                    "sidecar": {"authSecretName": "etcd-auth"},
                },
                "datacenter": "dc-a",
                "operator": {"metricsPort": probe_port, "leaderLeaseSeconds": 3},
                "webhook": {
                    "port": webhook_port,
                    "url": f"https://127.0.0.1:{webhook_port}",
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": app}},
                },
                "image": {"sidecar": {"repository": "nebula-id-sidecar", "tag": "e2e"}},
            },
        )
        plane.kubectl("create", "namespace", system)
        plane.kubectl("create", "namespace", app)
        plane.kubectl("label", "namespace", app, "pod-security.kubernetes.io/enforce=restricted")
        for ns in (system, app):
            plane.kubectl(
                "create", "secret", "generic", "etcd-auth", "-n", ns,
                "--from-literal=username=root", f"--from-literal=password={ETCD_PASSWORD}",
            )  # fmt: skip
        dsn = postgres.create_database(names["database"])
        plane.kubectl(
            "create",
            "secret",
            "generic",
            "nebula-id-db-dc-a",
            "-n",
            app,
            f"--from-literal=dsn={dsn}",
        )
        cluster_scoped = [
            (d["kind"], d["metadata"]["name"])
            for d in docs
            if d["kind"]
            in (
                "ClusterRole",
                "ClusterRoleBinding",
                "MutatingWebhookConfiguration",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            )
        ]
        plane.kubectl(
            "apply", "-n", system, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs)
        )

        # 2. The operator: the Deployment's container, as the chart's ServiceAccount.
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        pod_spec = deployment["spec"]["template"]["spec"]
        operator_pod = {
            "metadata": {
                "name": f"{names['release']}-op-0",
                "namespace": system,
                "uid": str(uuid.uuid4()),
            },
            "spec": pod_spec,
        }
        operator = kubelet.resolve(
            operator_pod,
            pod_spec["containers"][0],
            secrets=secret_reader(plane, system),
            root=tmp_path / "operator",
            host_overrides={
                # The pod's own network namespace, simulated by loopback.
                "NEBULA_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
                "NEBULA_OPERATOR_PROBE_HOST": "127.0.0.1",
            },
        )
        assert operator.argv[1:] == ["operator", "--log-level", "info"]
        assert operator.env["NEBULA_ETCD_USERNAME"] == "root"
        sa_config = service_account_kubeconfig(
            plane, kubeconfig, pod_spec["serviceAccountName"], system, tmp_path / "sa.kubeconfig"
        )
        processes.start("operator", operator, {"KUBECONFIG": sa_config})
        mwc_name = next(n for k, n in cluster_scoped if k == "MutatingWebhookConfiguration")
        wait_until(
            "the operator to set the webhook's caBundle",
            lambda: (
                processes.alive("operator")
                and kube_json(plane, "get", "mutatingwebhookconfiguration", mwc_name)["webhooks"][
                    0
                ]["clientConfig"].get("caBundle")
            ),
            timeout=60,
        )
        assert http_get(probe_port, "/healthz")[0] == 200

        # 3. Two pools from the examples, Ready.
        orders_port, invoices_port = free_port(), free_port()
        orders = pool_doc(
            EXAMPLES / "pool-snowflake.yaml", "orders", app,
            datacenters=DC_A,
            segment={"tags": [{"name": "orders", "step": 100}]},
            lease={"ttlSeconds": 3},
            sidecar={"port": orders_port},
        )  # fmt: skip
        invoices = pool_doc(
            EXAMPLES / "pool-segment.yaml", "invoices", app,
            datacenters=DC_A,
            sidecar={"port": invoices_port},
        )  # fmt: skip
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([orders, invoices]))
        for pool in ("orders", "invoices"):
            plane.kubectl(
                "wait",
                f"nip/{pool}",
                "-n",
                app,
                "--for=condition=Ready",
                "--timeout=90s",
                timeout=120,
            )
        stored = {p: kube_json(plane, "get", "nip", p, "-n", app) for p in ("orders", "invoices")}
        assert stored["orders"]["status"]["workers"]["active"] == 0

        # 4. The app's pods: created through the webhook, in a `restricted` namespace.
        sidecar_settings = injection.InjectionSettings(
            image="nebula-id-sidecar:e2e",
            etcd_endpoints=(etcd,),
            etcd_prefix=names["prefix"],
            etcd_auth_secret="etcd-auth",
            etcd_pool_users=True,
            datacenter="dc-a",
        )
        created: dict[str, dict[str, Any]] = {}
        for pool in ("orders", "invoices"):
            out = plane.kubectl(
                "create", "-o", "json", "-f", "-", input=json.dumps(pod_from_template(app, pool))
            )
            pod = json.loads(out.stdout)
            config = poolspec.parse_spec(stored[pool]["spec"], namespace=app, name=pool)
            expected = injection.build(config, sidecar_settings)
            (sidecar,) = pod["spec"]["initContainers"]
            assert is_subset(dict(expected.container), sidecar), json.dumps(sidecar, indent=1)
            assert [c["name"] for c in pod["spec"]["containers"]] == ["web"]
            env = {e["name"]: e for e in sidecar["env"]}
            # The pool's own etcd user (the chart turns etcd.poolUsers on with an etcd user).
            assert env["NEBULA_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
                access.secret_name(pool)
            )
            assert env["NEBULA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "nebula-id-db-dc-a",
                "key": "dsn",
            }
            created[pool] = pod

        # 5. The kubelet's part: start each injected container's command.
        ports = {"orders": orders_port, "invoices": invoices_port}
        for pool, pod in created.items():
            local = kubelet.resolve(
                pod,
                pod["spec"]["initContainers"][0],
                secrets=secret_reader(plane, app),
                root=tmp_path / pool,
                host_overrides={
                    "NEBULA_HOST": "127.0.0.1",
                    # Every sidecar here shares the machine's network namespace.
                    "NEBULA_PROBE_HOST": "127.0.0.1",
                    "NEBULA_PROBE_PORT": str(free_port()),
                },
            )
            assert local.env["NEBULA_POD_NAME"] == pod["metadata"]["name"]
            assert local.env["NEBULA_POD_UID"] == pod["metadata"]["uid"]
            assert local.env["NEBULA_DATABASE_URL"] == dsn
            assert (Path(local.env["NEBULA_DATABASE_URL_DIR"]) / "dc-a").read_text() == dsn
            processes.start(pool, local, {})
        for pool, port in ports.items():
            wait_until(f"the {pool} sidecar to be ready", _ready(processes, pool, port), timeout=60)

        # 6. It claimed a worker ID; status counts it; the pod is annotated; IDs of both kinds.
        status, info = http_get(orders_port, "/v1/info")
        assert status == 200, info
        worker = _worker_of(info)
        lease = int(info["snowflake"]["lease"]["id"], 16)
        assert lease in etcd_leases(etcd)
        orders_pod = created["orders"]["metadata"]["name"]
        wait_until(
            "status.workers.active == 1",
            lambda: (
                kube_json(plane, "get", "nip", "orders", "-n", app)["status"]["workers"]["active"]
                == 1
            ),
        )
        annotation = wait_until(
            "the worker-id annotation",
            lambda: (
                kube_json(plane, "get", "pod", orders_pod, "-n", app)["metadata"]
                .get("annotations", {})
                .get(crd.WORKER_ANNOTATION)
            ),
        )
        assert annotation == f"dc-a/{worker}"
        claims = etcd_keys(etcd, pool_keys.PoolKeys(app, "orders", names["prefix"]).workers_prefix)
        assert claims == [pool_keys.PoolKeys(app, "orders", names["prefix"]).worker(1, worker)]

        status, body = http_get(orders_port, "/v1/ids?count=5")
        assert status == 200, body
        snowflakes = [int(i) for i in body["ids"]]
        assert snowflakes == sorted(set(snowflakes))
        layout = poolspec.parse_spec(stored["orders"]["spec"], namespace=app, name="orders").layout
        parsed = layout.parse(snowflakes[0])
        assert (parsed.datacenter, parsed.worker) == (1, worker)
        status, body = http_get(orders_port, "/v1/ids/segment/orders?count=3")
        assert status == 200, body
        segment_ids = [int(i) for i in body["ids"]]
        assert segment_ids == sorted(set(segment_ids))
        status, body = http_get(invoices_port, "/v1/ids")
        assert status == 200, body
        assert int(body["id"]) > 0
        status, body = http_get(invoices_port, "/v1/ids/segment/payment")
        assert status == 200, body
        status, body = http_get(orders_port, "/v1/ids/uuid7")
        assert status == 200, body
        assert uuid.UUID(body["id"]).version == 7

        # 7. Delete the pod, stop its process: the lease and the status are released.
        plane.kubectl("delete", "pod", orders_pod, "-n", app, "--wait=false")
        assert processes.stop("orders") == 0, processes.log("orders")
        # Revoked on the way out, not left to expire (the TTL is 3 s; this is at once).
        assert lease not in etcd_leases(etcd)
        wait_until(
            "the claim to leave etcd",
            lambda: (
                etcd_keys(etcd, pool_keys.PoolKeys(app, "orders", names["prefix"]).workers_prefix)
                == []
            ),
            timeout=10,
        )
        wait_until(
            "status.workers.active == 0",
            lambda: (
                kube_json(plane, "get", "nip", "orders", "-n", app)["status"]["workers"]["active"]
                == 0
            ),
            timeout=30,
        )
    except BaseException:
        for name in list(processes.running):
            print(f"--- {name} log ---\n{processes.log(name)}")
        raise
    finally:
        processes.close()
        for kind, name in cluster_scoped:
            plane.kubectl("delete", kind.lower(), name, "--wait=false", check=False)
        for ns in (app, system):
            plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _ready(processes: Processes, name: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        return processes.alive(name) and http_get(port, "/readyz")[0] == 200

    return check


def _worker_of(info: Mapping[str, Any]) -> int:
    """The worker number the Snowflake source reports in /v1/info."""
    worker = (info.get("snowflake") or {}).get("worker")
    assert isinstance(worker, int), f"/v1/info names no worker: {info}"
    return worker
