"""A real Kubernetes control plane for tests: its own etcd plus kube-apiserver.

Laid out like controller-runtime's envtest, with what our operator needs turned
on: the RBAC authoriser, the admission webhooks and PodSecurity, and a
service-account signing key.  The admin authenticates with a client
certificate in ``system:masters`` (in the kubeconfig) or a static token.

There is no controller-manager: no default service accounts (so the
``ServiceAccount`` admission plugin is off, as in envtest), no garbage
collection, and a deleted namespace stays ``Terminating``.  Use unique names.

With ``USE_EXISTING_CLUSTER=true`` `ControlPlane.existing` wraps ``KUBECONFIG``
instead of starting anything.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import yaml

from tests.support import http, pki, processes
from tests.support.etcd import EtcdServer

_START_TIMEOUT = 90.0
_PORT_ATTEMPTS = 3
_ISSUER = "https://kubernetes.default.svc.cluster.local"
_ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,DefaultStorageClass,DefaultTolerationSeconds,"
    "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,"
    "PodSecurity,ResourceQuota"
)
_LOCAL = ("127.0.0.1", "localhost", "::1")


class CommandFailed(subprocess.CalledProcessError):
    """A CLI call failed; unlike the base class, str() shows its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def ensure_no_proxy() -> None:
    """Make loopback bypass any HTTP proxy, for us and for every child we start.

    The API server calls local webhooks on 127.0.0.1; a proxy must not eat that.
    """
    for var in ("NO_PROXY", "no_proxy"):
        present = [p for p in os.environ.get(var, "").split(",") if p]
        os.environ[var] = ",".join(present + [h for h in _LOCAL if h not in present])


def run_cli(
    argv: list[str], *, check: bool = True, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a CLI, capture text output, raise `CommandFailed` when asked to check."""
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports with an admin kubeconfig."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.kubectl_binary = bin_dir / "kubectl"
        self.log_path = workdir / "kube-apiserver.log"
        self.kubeconfig = workdir / "kubeconfig"
        self.ca_file = workdir / "pki" / "ca.crt"
        self.token = secrets.token_hex(16)
        self.port = 0
        self.start_seconds = 0.0
        self.etcd: EtcdServer | None = None
        self._external = False
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def existing(cls, kubeconfig: Path, kubectl: Path) -> ControlPlane:
        """Wrap a running cluster (kind, a laptop's cluster); start/stop do nothing."""
        plane = cls(kubectl.parent, kubeconfig.parent)
        plane.kubectl_binary = kubectl
        plane.kubeconfig = kubeconfig
        plane._external = True
        return plane

    @property
    def server(self) -> str:
        """The API server URL, e.g. ``https://127.0.0.1:6443``."""
        if self._external:
            config = yaml.safe_load(self.kubeconfig.read_text())
            current = config.get("current-context")
            context = next(c for c in config["contexts"] if c["name"] == current)["context"]
            cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
            return str(cluster["cluster"]["server"])
        if not self.port:
            raise RuntimeError("the control plane has not been started yet")
        return f"https://127.0.0.1:{self.port}"

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin against this control plane."""
        argv = [str(self.kubectl_binary), f"--kubeconfig={self.kubeconfig}", *args]
        return run_cli(argv, check=check, input=input, timeout=timeout)

    # -- start-up ----------------------------------------------------------------

    def _write_pki(self) -> dict[str, Path]:
        directory = self.workdir / "pki"
        directory.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority()
        ca_cert, _ = ca.pem.write(directory, "ca")
        serving = ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", "10.0.0.1"),
            server=True,
        )
        serving_cert, serving_key = serving.write(directory, "serving")
        admin = ca.issue("admin", organization="system:masters")
        sa_pub, sa_key = pki.signing_key().write(directory, "sa")
        tokens = directory / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._write_kubeconfig(ca.pem.cert, admin)
        return {
            "ca": ca_cert,
            "serving_cert": serving_cert,
            "serving_key": serving_key,
            "sa_pub": sa_pub,
            "sa_key": sa_key,
            "tokens": tokens,
        }

    def _write_kubeconfig(self, ca_pem: bytes, admin: pki.Pem) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nebula-test",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": b64(ca_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(admin.cert),
                        "client-key-data": b64(admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "nebula-test",
                    "context": {"cluster": "nebula-test", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "nebula-test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _argv(self, files: dict[str, Path]) -> list[str]:
        assert self.etcd is not None
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd.endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--tls-cert-file={files['serving_cert']}",
            f"--tls-private-key-file={files['serving_key']}",
            f"--client-ca-file={files['ca']}",
            f"--token-auth-file={files['tokens']}",
            f"--service-account-key-file={files['sa_pub']}",
            f"--service-account-signing-key-file={files['sa_key']}",
            f"--service-account-issuer={_ISSUER}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--enable-admission-plugins={_ADMISSION_PLUGINS}",
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            "--v=1",
        ]

    def _ready(self, context: ssl.SSLContext) -> bool:
        status, _ = http.get(
            f"{self.server}/readyz",
            headers={"Authorization": f"Bearer {self.token}"},
            context=context,
            timeout=2.0,
        )
        return status == 200

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver and wait for ``/readyz`` (a few seconds)."""
        if self._external or (self._proc is not None and self._proc.poll() is None):
            return self
        ensure_no_proxy()
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(self.bin_dir, self.workdir / "etcd", name="control-plane")
        self.etcd.start()
        for attempt in range(_PORT_ATTEMPTS):
            # Another run may take the probed port before we bind it: retry.
            self.port = processes.free_port()
            files = self._write_pki()
            context = ssl.create_default_context(cafile=str(files["ca"]))
            self.log_path.write_bytes(b"")
            self._proc = processes.spawn(self._argv(files), log_path=self.log_path)
            try:
                processes.wait_until(
                    functools.partial(self._ready, context),
                    what=f"kube-apiserver on {self.server}",
                    proc=self._proc,
                    log_path=self.log_path,
                    timeout=_START_TIMEOUT,
                    interval=0.2,
                )
                break
            except processes.ServiceStartError as e:
                processes.kill(self._proc)
                self._proc = None
                if "address already in use" in str(e) and attempt + 1 < _PORT_ATTEMPTS:
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then its etcd."""
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None
        if self.etcd is not None:
            self.etcd.stop()

    def close(self) -> None:
        """Stop and delete everything this control plane wrote."""
        if self._external:
            return
        self.stop()
        if self.etcd is not None:
            self.etcd.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
