"""Where the real test binaries live.

`e2e/controlplane/build.sh` builds etcd, kube-apiserver, kubectl and helm from Go
modules into a cache and prints the bin dir as its last line.  The ecosystem's
convention wins when set: ``KUBEBUILDER_ASSETS`` points at envtest binaries
(etcd, kube-apiserver, kubectl).  helm is not an envtest asset, so it comes
from there only if present and otherwise from the build script.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from tests.support.processes import ServiceStartError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "e2e" / "controlplane" / "build.sh"


@functools.cache
def _built(*names: str) -> Path:
    """Run the build script (a no-op when cached) and return its bin dir."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *names],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise ServiceStartError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{tail}")
    return Path(lines[-1])


def bin_dir() -> Path:
    """``KUBEBUILDER_ASSETS`` if set, else the build script's output dir."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Path(assets)
    return _built()


def binary(name: str) -> Path:
    """The path of one binary: from ``KUBEBUILDER_ASSETS`` if it has it, else built."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    path = _built(name) / name
    if not path.is_file():
        raise ServiceStartError(f"{name} not found in {path.parent}")
    return path


@functools.cache
def postgres_bin_dir() -> Path:
    """PostgreSQL's server binaries: ``NEBULA_PG_BIN`` or Debian's newest install."""
    explicit = os.environ.get("NEBULA_PG_BIN")
    if explicit:
        return Path(explicit)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    raise ServiceStartError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql; "
        "install Debian's `postgresql` package (scripts/test.sh does) or set NEBULA_PG_BIN"
    )
