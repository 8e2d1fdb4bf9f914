"""Model checking: spin searches the Promela models in models/ exhaustively.

Each model is compiled with `spin -a` and `gcc`, and `pan` explores every state within
the bounds below (safety mode: assertions only; blocked processes are not errors, since
a holder waiting forever for a claim is allowed).  The correct protocol must verify with
0 errors.  Every bug switch brings back one known bug, and spin must then find a
counterexample: that shows the model can fail, and that the invariant it checks is the
one the bug breaks.

The bounds are compile-time defines; they are documented in each model's header.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.models

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
PAN_TIMEOUT_S = 300

# The bounds shared by every slice of the Snowflake model (see its header).
SNOWFLAKE_BOUNDS = ("-DTMAX=4", "-DTTL=2", "-DMARGIN=0", "-DMAXSKEW=1")
ONE_CLAIM_EACH = ("-DMAXLEASE=2", "-DRESTARTS=0")
SNOWFLAKE_SLICES = {
    "delays": (*ONE_CLAIM_EACH, "-DNO_OPERATOR", "-DCLOCK_EVENTS=1"),
    "waits": (*ONE_CLAIM_EACH, "-DNO_OPERATOR", "-DNO_DELAY", "-DWAITS", "-DCLOCK_EVENTS=1"),
    "lifecycle": (*ONE_CLAIM_EACH, "-DNO_DELAY", "-DCLOCK_EVENTS=0"),
    "restarts": ("-DMAXLEASE=3", "-DRESTARTS=1", "-DNO_OPERATOR", "-DNO_DELAY", "-DCLOCK_EVENTS=0"),
}
# Each bug switch and the slice in which spin must find its counterexample.
SNOWFLAKE_BUGS = {
    "BUG_DROP_LIVE": "lifecycle",
    "BUG_NO_IDENTITY": "lifecycle",
    "BUG_STALE_LEADER": "lifecycle",
    "BUG_NO_RECHECK": "waits",
    "BUG_MARK_DOWN": "delays",
}
# pan's search order (-DREVERSE: processes in reverse order) changes only how soon the
# first counterexample is met, not what is searched.
REVERSE_SEARCH = frozenset({"BUG_NO_IDENTITY"})
# Most counterexamples are met within a few thousand states: an unoptimised pan compiles
# 2 s faster than it would search.  These searches are long enough to want -O2.
LONG_BUG_SEARCH = frozenset({"BUG_MARK_DOWN"})


@dataclasses.dataclass(frozen=True)
class Result:
    errors: int
    states: int
    depth: int
    seconds: float
    trail_steps: int | None
    output: str


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    if match is None:
        raise AssertionError(f"pan printed no {pattern!r}:\n{text}")
    return int(float(match.group(1)))


def check(
    model: str,
    defines: tuple[str, ...],
    workdir: pathlib.Path,
    *,
    reverse: bool = False,
    optimize: bool = True,
) -> Result:
    """Compile `model` with `defines` and search it exhaustively; parse what pan reports."""
    spin = shutil.which("spin")
    assert spin is not None, "spin is not installed (scripts/test.sh installs Debian's spin)"
    source = workdir / f"{model}.pml"
    shutil.copy(MODELS / f"{model}.pml", source)
    subprocess.run(
        [spin, *defines, "-a", source.name], cwd=workdir, check=True, capture_output=True
    )
    subprocess.run(
        [
            "gcc",
            "-O2" if optimize else "-O0",
            "-w",
            "-DSAFETY",
            "-DCOLLAPSE",
            *(["-DREVERSE"] if reverse else []),
            "-o",
            "pan",
            "pan.c",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    started = time.monotonic()
    pan = subprocess.run(
        ["./pan", "-E", "-m200000", "-w24"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=PAN_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    output = pan.stdout + pan.stderr
    assert "max search depth too small" not in output, output
    errors = _number(r"errors: (\d+)", output)
    trail_steps = None
    if errors:
        replay = subprocess.run(
            [spin, *defines, "-t", source.name],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        trail_steps = _number(r"trail ends after (\d+) steps", replay.stdout + replay.stderr)
    return Result(
        errors=errors,
        states=_number(r"([\d.e+]+) states, stored", output),
        depth=_number(r"depth reached (\d+)", output),
        seconds=seconds,
        trail_steps=trail_steps,
        output=output,
    )


def report(name: str, result: Result) -> None:
    trail = "" if result.trail_steps is None else f", trail of {result.trail_steps} steps"
    print(
        f"{name}: {result.errors} errors, {result.states} states stored, "
        f"depth {result.depth}, {result.seconds:.1f} s{trail}"
    )


@pytest.mark.parametrize("slice_name", sorted(SNOWFLAKE_SLICES))
def test_snowflake_protocol_verifies(slice_name: str, tmp_path: pathlib.Path) -> None:
    defines = SNOWFLAKE_BOUNDS + SNOWFLAKE_SLICES[slice_name]
    result = check("snowflake", defines, tmp_path)
    report(f"snowflake/{slice_name}", result)
    assert result.errors == 0, result.output
    assert result.states > 10_000, "the search explored suspiciously little"


@pytest.mark.parametrize("bug", sorted(SNOWFLAKE_BUGS))
def test_snowflake_bug_is_found(bug: str, tmp_path: pathlib.Path) -> None:
    defines = SNOWFLAKE_BOUNDS + SNOWFLAKE_SLICES[SNOWFLAKE_BUGS[bug]] + (f"-D{bug}=1",)
    result = check(
        "snowflake",
        defines,
        tmp_path,
        reverse=bug in REVERSE_SEARCH,
        optimize=bug in LONG_BUG_SEARCH,
    )
    report(f"snowflake/{bug}", result)
    assert result.errors > 0, f"spin found no counterexample with {bug}:\n{result.output}"
    assert "assertion violated" in result.output or result.trail_steps, result.output


SEGMENT_BOUNDS = ("-DMAXC=6", "-DALLOCS=5")
SEGMENT_BUGS = ("BUG_STALE_LEADER", "BUG_ROW_AT_ONE", "BUG_FLOOR_MAX")


def test_segment_protocol_verifies(tmp_path: pathlib.Path) -> None:
    result = check("segment", SEGMENT_BOUNDS, tmp_path)
    report("segment", result)
    assert result.errors == 0, result.output
    assert result.states > 10_000, "the search explored suspiciously little"


@pytest.mark.parametrize("bug", SEGMENT_BUGS)
def test_segment_bug_is_found(bug: str, tmp_path: pathlib.Path) -> None:
    result = check("segment", (*SEGMENT_BOUNDS, f"-D{bug}=1"), tmp_path, optimize=False)
    report(f"segment/{bug}", result)
    assert result.errors > 0, f"spin found no counterexample with {bug}:\n{result.output}"
