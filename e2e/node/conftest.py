"""Fixtures of the node tier: the images, one real node per session, the chart on it.

The node is session-scoped (it takes seconds to start, the images minutes the
first time), and its teardown fails the run if it leaves a process, mount,
cgroup, sysctl or host path behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import binaries

from e2e.node import support
from e2e.node.cluster import HERE, REPO, HostSnapshot, Node, NodeError, running_node

_EXTRA_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "pause")


@pytest.fixture(scope="session")
def node_bin_dir() -> Path:
    """etcd, kube-apiserver, kubectl, helm and the node's binaries, built and cached."""
    # One directory with all of them, whatever KUBEBUILDER_ASSETS says: the node
    # runs its own etcd and kube-apiserver from there.
    return binaries._built("etcd", "kube-apiserver", "kubectl", "helm", *_EXTRA_BINARIES)


@pytest.fixture(scope="session")
def node_images(node_bin_dir: Path) -> dict[str, Any]:
    """The base, pause, operator and sidecar images as archives (built once, cached)."""
    began = time.monotonic()
    proc = subprocess.run(
        ["bash", str(HERE / "images.sh"), str(node_bin_dir / "pause")],
        capture_output=True,
        text=True,
        check=False,
        timeout=3000,
    )
    if proc.returncode != 0:
        raise NodeError(f"images.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    images: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    images["seconds"] = time.monotonic() - began
    return images


@pytest.fixture(scope="session")
def host_before() -> HostSnapshot:
    return HostSnapshot.take("nebula-id-node-*")


@pytest.fixture(scope="session")
def node(
    node_bin_dir: Path,
    node_images: dict[str, Any],
    host_before: HostSnapshot,
) -> Iterator[Node]:
    """A real single-node cluster, Ready, with the images imported.

    Its state lives in a directory of its own, not under pytest's basetemp, which
    other pytest sessions on the machine may prune while the node still runs.
    """
    workdir = Path(tempfile.mkdtemp(prefix="nebula-id-node-"))
    try:
        with running_node(node_bin_dir, workdir, node_images) as started:
            yield started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def release(node: Node, node_images: dict[str, Any]) -> dict[str, Any]:
    """Step 1 of the README, `helm install`, as written but for the images and etcd.

    The images are the ones built from the Dockerfiles (`pullPolicy: Never`: the
    node has no registry), and etcd is the node's own, on the node IP.
    """
    (argv,) = [s for s in support.readme_steps() if s[0] == "helm"]
    argv = [
        a.replace("http://etcd.etcd.svc:2379", support.ETCD_ENDPOINT)
        for a in support.localize(argv)
    ]
    assert argv[:4] == ["helm", "install", "nebula-id", str(REPO / "helm" / "nebula-id")], argv
    began = time.monotonic()
    node.helm(*argv[1:], *support.image_values(node_images))
    namespace = argv[argv.index("-n") + 1]
    node.kubectl(
        "rollout", "status", "-n", namespace, "deployment/nebula-id", "--timeout=240s", timeout=300
    )
    return {"name": "nebula-id", "namespace": namespace, "seconds": time.monotonic() - began}
