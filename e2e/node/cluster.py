"""A real single-node Kubernetes cluster in a private namespace, and its teardown.

The node tier runs pods for real: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd (with runc and the CNI bridge) and the kubelet all run
inside one ``unshare --net --mount`` namespace (`namespace.sh` sets it up), with
the images built by `images.sh` imported into containerd.  This module writes the
configuration and PKI into a private state directory, starts the namespace, runs
commands inside it (``nsenter``), and tears everything down in order: pods,
kubelet, every other process of the namespace, then the kubelet's cgroups.

The host is never changed: `HostSnapshot` records the global sysctls the kubelet
would set and the fixed paths it and containerd would write, so a test can
compare them before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.support import pki
from tests.support.controlplane import CommandFailed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_IP = "10.77.0.2"
GATEWAY_IP = "10.77.0.1"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/24"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the kubelet writes on a node if nothing stops it (see namespace.sh).
GLOBAL_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/usr/libexec/kubernetes",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
)
_START_TIMEOUT = 240.0


class NodeError(RuntimeError):
    """The node did not come up or did not go away cleanly; carries the logs' tails."""


@dataclass(frozen=True)
class HostSnapshot:
    """The parts of the host a node could change: global sysctls and fixed paths."""

    sysctls: dict[str, str]
    paths: dict[str, bool]
    cgroups: frozenset[str]
    links: frozenset[str]
    iptables: str

    @classmethod
    def take(cls, cgroup_name: str) -> HostSnapshot:
        sysctls = {k: (Path("/proc/sys") / k).read_text().strip() for k in GLOBAL_SYSCTLS}
        paths = {p: os.path.lexists(p) for p in FIXED_PATHS}
        cgroups = frozenset(str(p) for p in CGROUP_ROOT.glob(f"*/{cgroup_name}"))
        links = frozenset(os.listdir("/sys/class/net"))
        rules = [
            subprocess.run(
                ["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout
            for table in ("filter", "nat")
        ]
        return cls(sysctls, paths, cgroups, links, "".join(rules))


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _kubeconfig(path: Path, ca: bytes, user: pki.Pem, server: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "node", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {
                "name": "user",
                "user": {
                    "client-certificate-data": _b64(user.cert),
                    "client-key-data": _b64(user.key),
                },
            }
        ],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": "user"}}],
        "current-context": "node",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _processes_in_netns(inode: str) -> list[int]:
    """Every process whose network namespace is `inode` (``net:[N]``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "net") == inode:
                found.append(int(entry.name))
    return found


def _cgroup_dirs(name: str) -> list[Path]:
    """Our cgroup trees under every v1 hierarchy (and the unified one), deepest first."""
    dirs: list[Path] = []
    for top in CGROUP_ROOT.glob(f"*/{name}"):
        dirs.extend(p for p in top.rglob("*") if p.is_dir())
        dirs.append(top)
    return sorted(set(dirs), key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(name):
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return pids


def _kill(pids: set[int] | list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Node:
    """One single-node cluster; `start` it, run commands with `sh`/`kubectl`, `close` it."""

    bin_dir: Path
    state: Path
    images: dict[str, Any]
    name: str = "nebula-node"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    holder: subprocess.Popen[bytes] | None = None
    netns: str = ""
    ns_pid: int = 0
    start_seconds: float = 0.0

    @property
    def cgroup_name(self) -> str:
        return f"nebula-id-node-{self.tag}"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    # -- configuration -------------------------------------------------------------

    def _write_pki(self) -> None:
        d = self.state / "pki"
        d.mkdir(parents=True)
        ca = pki.CertificateAuthority("nebula-id-node-ca")
        ca.pem.write(d, "ca")
        ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", NODE_IP, SERVICE_IP),
            server=True,
        ).write(d, "apiserver")
        ca.issue("kube-apiserver-kubelet-client", organization="system:masters").write(
            d, "apiserver-kubelet"
        )
        pki.signing_key().write(d, "sa")
        server = "https://127.0.0.1:6443"
        users = {
            "admin": ca.issue("admin", organization="system:masters"),
            "controller-manager": ca.issue("system:kube-controller-manager"),
            "scheduler": ca.issue("system:kube-scheduler"),
            "kubelet": ca.issue(f"system:node:{self.name}", organization="system:nodes"),
        }
        for user, pem in users.items():
            _kubeconfig(self.state / f"{user}.kubeconfig", ca.pem.cert, pem, server)

    def _write_configs(self) -> None:
        s = self.state
        (s / "cni" / "net.d").mkdir(parents=True)
        (s / "cni" / "net.d" / "10-bridge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "nebula-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(s / "cni" / "ipam"),
                            },
                        }
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (s / "containerd.toml").write_text(
            f"""version = 2
root = "{s}/containerd/root"
state = "{s}/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{s}/containerd.sock"
[ttrpc]
  address = "{s}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{s}/containerd/opt"
[{cri}]
  sandbox_image = "{self.images["pause"]}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{s}/cni/net.d"
"""
        )
        socket = f"unix://{s}/containerd.sock"
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(s / "pki" / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_name}",
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": socket,
            "imageServiceEndpoint": socket,
            "volumePluginDir": str(s / "volume-plugins"),
            "podLogsDir": str(s / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "clusterDNS": [NODE_IP],
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "protectKernelDefaults": False,
            "maxPods": 60,
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
        }
        (s / "kubelet.yaml").write_text(yaml.safe_dump(kubelet))
        env = {
            "BIN_DIR": str(self.bin_dir),
            "NODE_NAME": self.name,
            "NODE_IP": NODE_IP,
            "GATEWAY_IP": GATEWAY_IP,
            "SERVICE_CIDR": SERVICE_CIDR,
            "SERVICE_IP": SERVICE_IP,
            "IMAGE_ARCHIVES": " ".join(self.images["archives"]),
            "CGROUP_NAME": self.cgroup_name,
        }
        (s / "env.sh").write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> Node:
        began = time.monotonic()
        self.state.mkdir(parents=True, exist_ok=False)
        self._write_pki()
        self._write_configs()
        for top in CGROUP_ROOT.iterdir():
            if top.is_dir() and not top.is_symlink() and (top / "cgroup.procs").exists():
                (top / self.cgroup_name).mkdir()
                cpuset = top / self.cgroup_name / "cpuset.cpus"
                if cpuset.exists():
                    cpuset.write_text((top / "cpuset.cpus").read_text())
                    (top / self.cgroup_name / "cpuset.mems").write_text(
                        (top / "cpuset.mems").read_text()
                    )
        log = (self.state / "namespace.log").open("wb")
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--fork",
                "--propagation",
                "private",
                "bash",
                str(HERE / "namespace.sh"),
                str(self.state),
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not (self.state / "ready").exists():
            if self.holder.poll() is not None or (self.state / "failed").exists():
                self._remember_netns()
                raise NodeError(f"the node did not come up:\n{self.logs()}")
            if time.monotonic() > deadline:
                self._remember_netns()
                raise NodeError(
                    f"the node was not ready after {_START_TIMEOUT:.0f} s:\n{self.logs()}"
                )
            self._remember_netns()
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - began
        return self

    def _remember_netns(self) -> None:
        if self.netns:
            return
        with contextlib.suppress(OSError, ValueError):
            self.ns_pid = int((self.state / "namespace.pid").read_text())
            self.netns = (self.state / "netns").read_text().strip()

    def logs(self, lines: int = 25) -> str:
        parts = []
        for path in sorted([self.state / "namespace.log", *(self.state / "logs").glob("*.log")]):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> list[str]:
        """Tear everything down; returns what could not be cleaned (empty when all went)."""
        problems: list[str] = []
        self._remember_netns()
        # Pods first: the kubelet stops them gracefully if it can.
        if (
            self.holder is not None
            and self.holder.poll() is None
            and (self.state / "ready").exists()
        ):
            with contextlib.suppress(Exception):
                self.kubectl(
                    "delete",
                    "pods",
                    "--all",
                    "--all-namespaces",
                    "--grace-period=1",
                    "--wait=false",
                    timeout=30,
                    check=False,
                )
                # The pods' processes (only they live in our cgroups) go, or
                # namespace.sh kills them.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and self._pod_pids():
                    time.sleep(0.5)
        # Then namespace.sh tears down (kubelet, pods, the rest) once its stdin closes.
        if self.holder is not None:
            with contextlib.suppress(OSError):
                if self.holder.stdin:
                    self.holder.stdin.close()
            try:
                self.holder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("namespace.sh did not finish its teardown in 60 s")
        # Whatever is still there (namespace.sh killed before its teardown): by PID.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = self._pod_pids() | set(self._ns_pids())
            if not left:
                break
            _kill(self._pod_pids(), signal.SIGKILL)
            _kill(left, signal.SIGTERM if time.monotonic() < deadline - 10 else signal.SIGKILL)
            time.sleep(0.3)
        if self.holder is not None and self.holder.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(timeout=10)
        left = self._pod_pids() | set(self._ns_pids())
        if left:
            problems.append(f"processes left: {sorted(left)}")
        for d in _cgroup_dirs(self.cgroup_name):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                problems.append(f"cgroup left: {d}")
        mounts = Path("/proc/self/mountinfo").read_text()
        if str(self.state) in mounts:
            problems.append("mounts of the state dir left on the host")
        return problems

    def _pod_pids(self) -> set[int]:
        return _cgroup_pids(self.cgroup_name)

    def _ns_pids(self) -> list[int]:
        if not self.netns:
            return []
        return _processes_in_netns(self.netns)

    # -- commands inside --------------------------------------------------------------

    def sh(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's network and mount namespaces."""
        full = ["nsenter", "-t", str(self.ns_pid), "-n", "-m", "--", *argv]
        proc = subprocess.run(
            full, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, full, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.sh(
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            check=check,
            input=input,
            timeout=timeout,
        )

    def kube_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.sh(
            "env",
            f"KUBECONFIG={self.kubeconfig}",
            f"HELM_CACHE_HOME={self.state}/helm/cache",
            f"HELM_CONFIG_HOME={self.state}/helm/config",
            f"HELM_DATA_HOME={self.state}/helm/data",
            str(self.bin_dir / "helm"),
            *args,
            timeout=timeout,
        )


@contextlib.contextmanager
def running_node(bin_dir: Path, workdir: Path, images: dict[str, Any]) -> Iterator[Node]:
    node = Node(bin_dir=bin_dir, state=workdir / "node", images=images)
    try:
        yield node.start()
    finally:
        problems = node.close()
        if problems:
            raise NodeError("teardown left things behind: " + "; ".join(problems))
        shutil.rmtree(node.state, ignore_errors=True)
