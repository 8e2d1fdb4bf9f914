"""Fixtures of the node tier: the images, one real node per session, the chart on it.

The node is session-scoped (it takes seconds to start, the images minutes the
first time), and its teardown fails the run if it leaves a process, mount,
cgroup, sysctl or host path behind.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import binaries

from e2e.node.cluster import HERE, HostSnapshot, Node, NodeError, running_node

_EXTRA_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "pause")


@pytest.fixture(scope="session")
def node_bin_dir() -> Path:
    """etcd, kube-apiserver, kubectl, helm and the node's binaries, built and cached."""
    for name in ("etcd", "kube-apiserver", "kubectl", "helm", *_EXTRA_BINARIES):
        found = binaries.binary(name)
    return found.parent


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
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    """A real single-node cluster, Ready, with the images imported."""
    workdir = tmp_path_factory.mktemp("node")
    with running_node(node_bin_dir, workdir, node_images) as started:
        yield started
