"""IDs/s against one and against two sidecar processes on this machine, same run.

Two standalone sidecars (worker IDs 0 and 1, own data dirs), unpinned: the
scheduler spreads them and the load over the cores.  Each kind of load runs
against one sidecar, then against both at once (one wrk each, started
together, summed), round-robin for `--repeats` rounds, medians reported:

* batches of 1000 as big-endian int64s (what the clients fetch): IDs/s;
* single IDs per request: req/s.

A worker issues at most 4,096 IDs per millisecond (4.096 M/s, the sequence
bits), so one sidecar can never pass that, and N sidecars scale the ceiling
by N; on 2 cores the load generators compete with the sidecars for CPU.

    python -m bench.scaling [--seconds 3] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

from bench.http import free_port, start, stop, wait_for

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
PER_WORKER_CEILING = 4_096_000
BINARY = ["-H", "Accept: application/octet-stream"]
TEXT = ["-H", "Accept: text/plain"]


def wrk_many(urls: list[str], headers: list[str], seconds: float, connections: int) -> float:
    """Requests/s summed over one wrk per URL, all running at once."""
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", *headers, url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate()
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total += float(match[1]) if match else 0.0
    return total


def measure(seconds: float, repeats: int, workdir: pathlib.Path) -> dict[str, float]:
    bases, procs = [], []
    try:
        for worker in (0, 1):
            port = free_port()
            argv = [str(NEBULA_ID), "serve", "--port", str(port), "--log-level", "warning"]
            argv += ["--data-dir", str(workdir / f"w{worker}"), "--worker-id", str(worker)]
            proc = start(argv, workdir / f"w{worker}.log")
            procs.append(proc)
            bases.append(f"http://127.0.0.1:{port}")
            wait_for(bases[-1] + "/readyz", proc)
        batch = [b + "/v1/ids/snowflake?count=1000" for b in bases]
        single = [b + "/v1/ids/snowflake" for b in bases]
        kinds = {
            "batch_1": (batch[:1], BINARY, 8),
            "batch_2": (batch, BINARY, 8),
            "single_1": (single[:1], TEXT, 16),
            "single_2": (single, TEXT, 16),
        }
        for urls, headers, connections in kinds.values():
            wrk_many(urls, headers, 1, connections)
        runs: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(repeats):
            for name, (urls, headers, connections) in kinds.items():
                runs[name].append(wrk_many(urls, headers, seconds, connections))
    finally:
        for proc in procs:
            stop(proc)
    figures = {name: statistics.median(found) for name, found in runs.items()}
    figures["batch_1"] *= 1000
    figures["batch_2"] *= 1000
    figures["batch_2_vs_1"] = figures["batch_2"] / figures["batch_1"]
    figures["single_2_vs_1"] = figures["single_2"] / figures["single_1"]
    return figures


def report(f: dict[str, float], seconds: float, repeats: int) -> None:
    print(f"{'sidecars on this machine (unpinned)':44} {'1 sidecar':>12} {'2 sidecars':>12}  2 / 1")
    print(
        f"{'batches of 1000 (binary), IDs/s':44} {f['batch_1']:>12,.0f} {f['batch_2']:>12,.0f}"
        f"  {f['batch_2_vs_1']:.2f}x"
    )
    print(
        f"{'single IDs, req/s':44} {f['single_1']:>12,.0f} {f['single_2']:>12,.0f}"
        f"  {f['single_2_vs_1']:.2f}x"
    )
    print(
        f"ceiling by the layout: {PER_WORKER_CEILING:,} IDs/s per worker "
        f"({2 * PER_WORKER_CEILING:,} for two)"
    )
    print(
        f"(median of {repeats} interleaved runs of {seconds:g} s; {os.cpu_count()} cores shared "
        f"by sidecars and wrk; load average {os.getloadavg()[0]:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args, _ = parser.parse_known_args(argv)
    seconds, repeats = max(1.0, args.seconds), max(1, args.repeats)
    with tempfile.TemporaryDirectory(prefix="nebula-bench-scaling-") as tmp:
        figures = measure(seconds, repeats, pathlib.Path(tmp))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures, seconds, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
