"""The Dockerfiles' contract with the package, checked without building them.

The node tier (e2e/node) builds and runs both images; this tier checks, in
milliseconds, that each image runs the package's console script with a
subcommand the CLI really has, as a numeric non-root user, from pinned base
images, in more than one stage, and that the build context holds what the
Dockerfile copies.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

import pytest

from nebula_id import cli

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"Dockerfile.sidecar": "serve", "Dockerfile.operator": "operator"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def args_of(dockerfile: str) -> dict[str, str]:
    return {
        name: value
        for keyword, rest in instructions(REPO / dockerfile)
        if keyword == "ARG" and "=" in rest
        for name, _, value in [rest.partition("=")]
    }


def final(dockerfile: str, keyword: str) -> str:
    found = [rest for kw, rest in instructions(REPO / dockerfile) if kw == keyword]
    assert found, f"{dockerfile} has no {keyword}"
    return found[-1]


def console_script() -> str:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (name,) = [n for n, target in scripts.items() if target == "nebula_id.cli:main"]
    return str(name)


def subcommands() -> set[str]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


@pytest.mark.parametrize(("dockerfile", "subcommand"), IMAGES.items())
def test_entrypoint_and_cmd_are_the_console_script_and_its_subcommand(
    dockerfile: str, subcommand: str
) -> None:
    entrypoint = json.loads(final(dockerfile, "ENTRYPOINT"))
    cmd = json.loads(final(dockerfile, "CMD"))
    assert entrypoint == [console_script()]
    assert cmd == [subcommand]
    assert subcommand in subcommands()


def test_the_cli_really_has_both_subcommands() -> None:
    assert {"serve", "operator"} <= subcommands()


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_the_runtime_user_is_numeric_and_not_root(dockerfile: str) -> None:
    user = final(dockerfile, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The injected sidecar claims the same user for runAsNonRoot.
    if dockerfile == "Dockerfile.sidecar":
        from nebula_id_operator import injection

        assert int(uid) == injection.RUN_AS_USER


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_multi_stage_from_pinned_base_images(dockerfile: str) -> None:
    args = args_of(dockerfile)
    stages = [rest for kw, rest in instructions(REPO / dockerfile) if kw == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        pinned_digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        tag = image.rpartition(":")[2] if ":" in image else ""
        pinned_tag = re.fullmatch(r"\d+\.\d+\.\d+[-\w.]*", tag)
        assert pinned_digest or pinned_tag, f"{dockerfile}: {image} is not pinned"
    assert "COPY --from=build" in " ".join(
        f"{kw} {rest}" for kw, rest in instructions(REPO / dockerfile)
    )


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_the_build_context_holds_what_is_copied(dockerfile: str) -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    # pip needs the readme pyproject names; the README's author may not have written it yet.
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    for keyword, rest in instructions(REPO / dockerfile):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = rest.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (REPO / source).exists() or source == readme, f"{source} does not exist"


def test_the_operator_image_installs_the_operator_extra() -> None:
    runs = " ".join(rest for kw, rest in instructions(REPO / "Dockerfile.operator") if kw == "RUN")
    assert '".[operator]"' in runs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("kopf") for dep in extras["operator"])
