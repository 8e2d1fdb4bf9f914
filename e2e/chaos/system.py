"""The whole system under chaos, all of it real, and the faults one can throw at it.

Two operator replicas (against the real kube-apiserver) share one private etcd;
two PostgreSQL servers are the datacenters dc-a and dc-b; six `nebula-id serve`
sidecars (three per datacenter) reach etcd each through its own `TcpProxy`, so a
partition of one sidecar is one `cut()`.  Two of the sidecars run under
libfaketime with a timestamp file the suite rewrites (a backward clock jump).

Every method here is blocking; the test runs them in a thread so the client load
keeps running on the event loop while a fault is injected.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.k8s import operator_helpers as helpers
from tests.support import processes
from tests.support.controlplane import ControlPlane
from tests.support.etcd import EtcdServer
from tests.support.postgres import PostgresCluster
from tests.support.tcpproxy import TcpProxy

NAMESPACE = "chaos"
POOL = "ids"
PREFIX = "/nebula-id-chaos"
TAG = "orders"
TTL_S = 3
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
DATACENTERS = ("dc-a", "dc-b")


def pool_manifest(*, max_step: int = 2000, hold_down_s: float = 2.0) -> str:
    """The chaos pool; `max_step` and `hold_down_s` are what a config change moves."""
    return textwrap.dedent(
        f"""\
        apiVersion: nebula-id.io/v1alpha1
        kind: NebulaIdPool
        metadata: {{name: {POOL}, namespace: {NAMESPACE}}}
        spec:
          algorithm: snowflake
          lease: {{ttlSeconds: {TTL_S}}}
          failover:
            failureThreshold: 2
            probeIntervalSeconds: 0.5
            recoverySeconds: 2
            holdDownSeconds: {hold_down_s}
            healthMaxAgeSeconds: 5
          datacenters:
            - {{name: dc-a, id: 1, databaseSecretRef: {{name: dc-a-db}}}}
            - {{name: dc-b, id: 2, databaseSecretRef: {{name: dc-b-db}}}}
          segment:
            tags: [{{name: {TAG}, step: 200, maxStep: {max_step}}}]
        """
    )


class Sidecar:
    """One `nebula-id serve` process of the pool, restartable on the same port."""

    def __init__(
        self,
        index: int,
        datacenter: str,
        proxy: TcpProxy,
        dsns: dict[str, str],
        workdir: Path,
        *,
        faketime: bool,
    ) -> None:
        self.index = index
        self.name = f"sidecar-{index}-{datacenter}"
        self.datacenter = datacenter
        self.proxy = proxy
        self.port = processes.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.incarnation = 0
        self.log_path = workdir / f"{self.name}.log"
        self.clock_file: Path | None = workdir / f"{self.name}.faketime" if faketime else None
        self.proc: subprocess.Popen[bytes] | None = None
        others = ",".join(f"{dc}={dsn}" for dc, dsn in dsns.items() if dc != datacenter)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        self.env |= {
            "NEBULA_ETCD_ENDPOINTS": proxy.endpoint,
            "NEBULA_ETCD_PREFIX": PREFIX,
            "NEBULA_POOL": f"{NAMESPACE}/{POOL}",
            "NEBULA_DATACENTER": datacenter,
            "NEBULA_DATABASE_URL": dsns[datacenter],
            "NEBULA_DATABASE_URLS": others,
            "NEBULA_PORT": str(self.port),
            "NEBULA_DATA_DIR": str(workdir / self.name),
            "NEBULA_LOG_LEVEL": "warning",
        }
        if self.clock_file is not None:
            assert LIBFAKETIME.exists(), "libfaketime is missing: apt-get install -y faketime"
            self.clock_file.write_text("+0\n")
            self.env |= {
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                "FAKETIME_NO_CACHE": "1",
                # Lease deadlines run on the real monotonic clock, as on a real host.
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            }

    def start(self) -> None:
        self.incarnation += 1
        nebula_id = str(Path(sys.executable).parent / "nebula-id")
        self.proc = processes.spawn([nebula_id, "serve"], log_path=self.log_path, env=self.env)

    def kill9(self) -> None:
        if self.proc is not None:
            processes.kill(self.proc)
            self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def set_clock_offset(self, seconds: float) -> None:
        """libfaketime's offset of this sidecar's wall clock (negative: in the past).

        Written aside and renamed: libfaketime re-reads the file at every clock
        call, and a half-written file would read as a jump of its own.
        """
        assert self.clock_file is not None
        staged = self.clock_file.with_suffix(".new")
        staged.write_text(f"{seconds:+.3f}s\n")
        os.replace(staged, self.clock_file)

    def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            processes.stop(self.proc)
            self.proc = None


class System:
    """Everything the chaos suite starts, and the faults."""

    def __init__(
        self,
        plane: ControlPlane,
        kubeconfig: str,
        etcd: EtcdServer,
        dcs: dict[str, PostgresCluster],
        workdir: Path,
        *,
        sidecars_per_datacenter: int = 3,
    ) -> None:
        self.plane = plane
        self.etcd = etcd
        self.dcs = dcs
        self.workdir = workdir
        self.operators = [
            helpers.Operator(
                kubeconfig=kubeconfig,
                etcd_endpoint=etcd.endpoint,
                workdir=workdir,
                identity=f"chaos-operator-{i}",
                prefix=PREFIX,
                extra_env={"NEBULA_OPERATOR_NAMESPACES": NAMESPACE},
            )
            for i in range(2)
        ]
        for op in self.operators:
            # The probe interval is the pool's spec.failover, not an operator override.
            op.env.pop("NEBULA_OPERATOR_HEALTH_INTERVAL_SECONDS", None)
        self.proxies: list[TcpProxy] = []
        self.sidecars: list[Sidecar] = []
        dsns = {name: cluster.dsn() for name, cluster in dcs.items()}
        index = 0
        for dc in DATACENTERS:
            for slot in range(sidecars_per_datacenter):
                proxy = TcpProxy("127.0.0.1", etcd.client_port).start()
                self.proxies.append(proxy)
                self.sidecars.append(Sidecar(index, dc, proxy, dsns, workdir, faketime=slot == 0))
                index += 1
        self.config_version = 0

    # -- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        helpers.install_crd(self.plane)
        self.plane.kubectl("create", "namespace", NAMESPACE, check=False)
        for name, cluster in self.dcs.items():
            self.plane.kubectl(
                "create", "secret", "generic", f"{name}-db", "-n", NAMESPACE,
                f"--from-literal=dsn={cluster.dsn()}",
            )  # fmt: skip
        for op in self.operators:
            op.start()
        self.wait_for_leader(timeout=30)
        helpers.apply(self.plane, pool_manifest())
        helpers.eventually(self.pool_ready, timeout=60, what="the chaos pool to be Ready")
        for sidecar in self.sidecars:
            sidecar.start()

    def close(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        self.etcd_resume()
        if self.etcd.running is False:
            self.etcd.start()
        self.ensure_operators()
        self.plane.kubectl("delete", "nip", "--all", "-n", NAMESPACE, "--timeout=60s", check=False)
        for op in self.operators:
            op.stop()
        for proxy in self.proxies:
            proxy.close()

    # -- observations -----------------------------------------------------------------

    def pool_ready(self) -> bool:
        pool = helpers.get_json(self.plane, "nip", POOL, "-n", NAMESPACE)
        return helpers.condition(pool, "Ready").get("status") == "True"

    def leader(self) -> helpers.Operator | None:
        return next((op for op in self.operators if op.proc and op.is_leader()), None)

    def wait_for_leader(self, *, timeout: float) -> helpers.Operator:
        return helpers.eventually(self.leader, timeout=timeout, what="an operator leader")

    def ensure_operators(self) -> None:
        """Restart an operator that exited (a leader that lost etcd exits, as in a pod)."""
        for op in self.operators:
            if op.proc is None or op.proc.poll() is not None:
                op.stop()
                op.start()

    # -- faults: each returns what heals it --------------------------------------------

    def etcd_kill(self) -> None:
        self.etcd.kill()

    def etcd_start(self) -> None:
        self.etcd.start()

    def etcd_pause(self) -> None:
        self._etcd_signal(signal.SIGSTOP)

    def etcd_resume(self) -> None:
        self._etcd_signal(signal.SIGCONT)

    def _etcd_signal(self, sig: signal.Signals) -> None:
        self.etcd.send_signal(sig)

    def database_kill(self, dc: str) -> None:
        self.dcs[dc].kill()

    def database_start(self, dc: str) -> None:
        self.dcs[dc].start()

    def leader_kill(self) -> str:
        leader = self.wait_for_leader(timeout=30)
        leader.kill()
        leader.proc = None
        return leader.identity

    def config_change(self) -> str:
        """A change the validator allows: the tag's maxStep and the hold-down."""
        self.config_version += 1
        odd = self.config_version % 2 == 1
        manifest = pool_manifest(max_step=3000 if odd else 2000, hold_down_s=3 if odd else 2)
        helpers.apply(self.plane, manifest)
        return "maxStep 3000, holdDown 3 s" if odd else "maxStep 2000, holdDown 2 s"

    def pool_delete(self) -> None:
        self.plane.kubectl("delete", "nip", POOL, "-n", NAMESPACE, "--timeout=60s")

    def pool_create(self) -> None:
        helpers.apply(self.plane, pool_manifest(max_step=2000, hold_down_s=2))
        self.config_version = 0
        helpers.eventually(self.pool_ready, timeout=60, what="the re-created pool to be Ready")
