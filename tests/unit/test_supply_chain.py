"""Supply chain of the images: a digest-pinned base, locked and hashed dependencies, no pip.

The images are built for real by the node tier (buildah); this checks the
contract that makes those builds reproducible and the runtime images inert.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"sidecar": "grpc,fast", "operator": "operator"}
REQUIREMENT = re.compile(r"^([a-z0-9][a-z0-9._-]*)==([^\s\\]+) \\\n    --hash=sha256:[0-9a-f]{64}$")


def lock_entries(image: str) -> dict[str, str]:
    text = (REPO / f"requirements-{image}.lock").read_text()
    body = [b for b in text.split("\n\n", 1)[1].strip().split("\n") if b]
    entries: dict[str, str] = {}
    for first, second in zip(body[::2], body[1::2], strict=True):
        match = REQUIREMENT.match(f"{first}\n{second}")
        assert match, f"requirements-{image}.lock: {first!r} has no sha256 hash"
        entries[match.group(1)] = match.group(2)
    return entries


def normalized(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("image", IMAGES)
def test_every_dependency_of_the_image_is_locked_with_a_hash(image: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = {normalized(r) for r in project["project"]["dependencies"]}
    for extra in IMAGES[image].split(","):
        wanted |= {
            normalized(r)
            for r in project["project"]["optional-dependencies"][extra]
            if not r.startswith("nebula-id")
        }
    wanted |= {normalized(r) for r in project["build-system"]["requires"]}
    locked = lock_entries(image)
    assert wanted <= set(locked), wanted - set(locked)


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_installs_only_locked_hashes_and_keeps_no_pip(image: str) -> None:
    dockerfile = (REPO / f"Dockerfile.{image}").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=\S+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert f"--require-hashes -r requirements-{image}.lock" in dockerfile
    installs = re.findall(r"pip install ([^\n\\]*)", dockerfile)
    assert installs
    for args in installs:
        # The lock, or the package itself without dependencies and without a build env.
        assert "--require-hashes" in args or (
            "--no-deps" in args and "--no-build-isolation" in args
        ), args
    build, runtime = dockerfile.split("AS runtime", 1)
    assert "pip uninstall -y -q pip" in build  # the venv copied into the image has none
    assert "site-packages/pip" in runtime
    assert "ensurepip" in runtime
    assert "pip install" not in runtime
