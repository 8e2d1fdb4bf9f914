"""Where the sidecar's CPU goes on the single-ID path: py-spy on the running server.

Starts `nebula-id serve` (standalone) pinned to core 0, drives one path with
wrk from core 1, and samples the server with py-spy (``py-spy record --pid``,
native-free Python stacks, 1000 Hz) for the same seconds.  Prints, per path,
the functions with the most samples on top of the stack ("self") and in the
stack at all ("total"), as shares of all samples.

    python -m bench.profile [--seconds 5] [--paths /v1/ids,/v1/ids/segment/bench]
        [--top 15] [--flags "--auth-api-keys k"]
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from bench.http import free_port, pinned, start, stop, wait_for

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
PY_SPY = pathlib.Path(sys.executable).with_name("py-spy")


def frame_name(frame: str) -> str:
    """``function (path/to/file.py:12)`` -> ``function (file.py)``: lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = pathlib.PurePath(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def top(collapsed: str, count: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self shares, total shares) of the `count` busiest functions."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        weight = int(n)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        samples += weight
        own[frames[-1]] += weight
        for name in set(frames):
            total[name] += weight
    if not samples:
        return [], []
    return (
        [(name, n / samples) for name, n in own.most_common(count)],
        [(name, n / samples) for name, n in total.most_common(count)],
    )


# Frames of ours that only start the loop: every sample of the server has them.
_ENTRY = ("nebula_id/cli.py", "nebula_id/http/server.py")


def ours(collapsed: str) -> float:
    """Share of samples with a frame of nebula-id's own code on the stack.

    The entry frames (the CLI and the loop's start in ``http/server.py``) are
    on every stack and do not count.
    """
    samples = mine = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples += int(n)
        if any("nebula_id/" in f and not any(e in f for e in _ENTRY) for f in stack.split(";")):
            mine += int(n)
    return mine / samples if samples else float("nan")


def profile(path: str, seconds: float, flags: list[str], workdir: pathlib.Path) -> str:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [*pinned(0), str(NEBULA_ID), "serve", "--port", str(port), "--log-level", "warning"]
    argv += ["--data-dir", str(workdir / f"data-{port}"), "--tags", "bench:100000:1000000"]
    sidecar = start([*argv, *flags], workdir / "sidecar.log")
    try:
        wait_for(base + "/readyz", sidecar)
        headers = ["-H", "Accept: text/plain"]
        key = next((flags[i + 1] for i, f in enumerate(flags) if f == "--auth-api-keys"), None)
        if key:
            headers += ["-H", f"X-API-Key: {key.split(',')[0]}"]
        load = [*pinned(1), "wrk", "-t1", "-c16", f"-d{round(seconds) + 2}s", *headers]
        wrk = subprocess.Popen([*load, base + path], stdout=subprocess.DEVNULL)
        time.sleep(1.0)  # past wrk's connection set-up
        out = workdir / f"profile-{port}.txt"
        subprocess.run(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(sidecar.pid),
                "--duration",
                str(round(seconds)),
                "--rate",
                "1000",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        wrk.wait()
        return out.read_text()
    finally:
        stop(sidecar)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--paths", default="/v1/ids,/v1/ids/segment/bench")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--flags", default="", help="extra `nebula-id serve` flags")
    args, _ = parser.parse_known_args(argv)
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        print("bench.profile: py-spy is missing (pip install py-spy)", file=sys.stderr)
        return 1
    if shutil.which("wrk") is None:
        print("bench.profile: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 1
    flags = shlex.split(args.flags)
    with tempfile.TemporaryDirectory(prefix="nebula-bench-profile-") as tmp:
        for path in args.paths.split(","):
            collapsed = profile(path, max(2.0, args.seconds), flags, pathlib.Path(tmp))
            own, total = top(collapsed, args.top)
            print(f"\n--- py-spy, GET {path} {' '.join(flags)} (share of samples)")
            print(f"{ours(collapsed):6.1%}  nebula-id's own code (a frame of it on the stack)")
            print(f"{'self':>6}  function")
            for name, share in own:
                print(f"{share:6.1%}  {name}")
            print(f"{'total':>6}  function")
            for name, share in total:
                print(f"{share:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
