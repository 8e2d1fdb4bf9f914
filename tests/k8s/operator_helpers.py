"""Helpers and fixtures of the operator's k8s tests: install the CRD, run
`nebula-id operator` as a real process, wait for conditions, read its metrics."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nebula_id.core import crd
from tests.support import processes, waiting
from tests.support.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "nebulaidpools.yaml"

T = TypeVar("T")


def install_crd(plane: ControlPlane) -> None:
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    plane.kubectl(
        "wait",
        "--for=condition=established",
        "--timeout=30s",
        f"crd/{crd.CRD_NAME}",
    )


def eventually(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.3
) -> T:
    """`waiting.eventually`, polling less often: most probes here run kubectl."""
    return waiting.eventually(probe, timeout, what=what, interval=interval)


def get_json(plane: ControlPlane, *args: str) -> Any:
    proc = plane.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def condition(pool: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((pool or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def apply(
    plane: ControlPlane, manifest: str, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("apply", "-f", "-", input=manifest, check=check)


class Operator:
    """One `nebula-id operator` process with its own probe port and log."""

    def __init__(
        self,
        *,
        kubeconfig: str,
        etcd_endpoint: str,
        workdir: Path,
        identity: str,
        prefix: str = "/nebula-id",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.identity = identity
        self.probe_port = processes.free_port()
        self.log_path = workdir / f"operator-{identity}.log"
        self.env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "NEBULA_ETCD_ENDPOINTS": etcd_endpoint,
            "NEBULA_ETCD_PREFIX": prefix,
            "NEBULA_OPERATOR_IDENTITY": identity,
            "NEBULA_OPERATOR_PROBE_HOST": "127.0.0.1",
            "NEBULA_OPERATOR_PROBE_PORT": str(self.probe_port),
            "NEBULA_OPERATOR_LEADER_TTL_SECONDS": "3",
            "NEBULA_OPERATOR_RESYNC_SECONDS": "2",
            "NEBULA_OPERATOR_HEALTH_INTERVAL_SECONDS": "2",
            "NEBULA_OPERATOR_WORKERS_INTERVAL_SECONDS": "1",
            "NEBULA_OPERATOR_DATABASE_TIMEOUT_SECONDS": "3",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        self.proc = processes.spawn(
            [str(Path(sys.executable).parent / "nebula-id"), "operator", "--log-level", "debug"],
            log_path=self.log_path,
            env=self.env,
        )
        processes.wait_until(
            lambda: self.probe("/healthz")[0] == 200,
            what=f"operator {self.identity}",
            proc=self.proc,
            log_path=self.log_path,
            timeout=30,
            interval=0.2,
        )
        return self

    def probe(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.probe_port}{path}", timeout=2
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def is_leader(self) -> bool:
        code, body = self.probe("/readyz")
        return code == 200 and json.loads(body).get("role") == "leader"

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        _, text = self.probe("/metrics")
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(
            rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$"
            if wanted
            else rf"^{re.escape(name)} (\S+)$",
            re.M,
        )
        match = pattern.search(text)
        return float(match.groups()[-1]) if match else 0.0

    def log_tail(self) -> str:
        return processes.log_tail(self.log_path, lines=60)

    def kill(self) -> None:
        if self.proc is not None:
            processes.kill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def leading_operator(
    plane: ControlPlane,
    *,
    kubeconfig: str,
    etcd_endpoint: str,
    workdir: Path,
    identity: str,
    prefix: str,
    namespace: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Operator]:
    """One operator watching `namespace`, leading; on exit its pools are deleted
    while it still runs the finalizers, then it stops."""
    op = Operator(
        kubeconfig=kubeconfig,
        etcd_endpoint=etcd_endpoint,
        workdir=workdir,
        identity=identity,
        prefix=prefix,
        extra_env={"NEBULA_OPERATOR_NAMESPACES": namespace, **(extra_env or {})},
    ).start()
    try:
        eventually(op.is_leader, timeout=20, what=f"the {identity} operator to lead")
        yield op
        plane.kubectl("delete", "nip", "--all", "-n", namespace, "--timeout=60s")
    finally:
        op.stop()


def module_operator(
    *,
    namespace: str,
    prefix: str,
    identity: str,
    kubeconfig_fixture: str = "kubeconfig",
    etcd_fixture: str = "etcd_endpoint",
    extra_env: Mapping[str, str] | None = None,
) -> Callable[..., Iterator[Operator]]:
    """A module-scoped `operator` fixture: the CRD installed, `namespace` created,
    and one leading operator watching it, with its own etcd `prefix`.

    The kubeconfig and the etcd endpoint come from the fixtures named, so a
    module can run the operator under a restricted account or against its own
    etcd.  Use as ``operator = helpers.module_operator(...)``.
    """

    @pytest.fixture(scope="module")
    def operator(
        request: pytest.FixtureRequest,
        control_plane: ControlPlane,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Operator]:
        install_crd(control_plane)
        control_plane.kubectl("create", "namespace", namespace, check=False)
        with leading_operator(
            control_plane,
            kubeconfig=str(request.getfixturevalue(kubeconfig_fixture)),
            etcd_endpoint=str(request.getfixturevalue(etcd_fixture)),
            workdir=tmp_path_factory.mktemp(f"operator-{identity}"),
            identity=identity,
            prefix=prefix,
            namespace=namespace,
            extra_env=dict(extra_env or {}),
        ) as op:
            yield op

    return operator
