"""In-process benchmark of the ID core, with the peers measured in the same run.

DESIGN.md sets the targets as ratios to things measured here and now, because
the machine is shared and noisy: Snowflake against the 4.096 M/s limit of a
12-bit sequence, UUIDv7 against uuid-utils.  Each figure is the median of
several repeats, and the
candidates of one comparison are timed round-robin, so a peer and ours see the
same load.

    python -m bench.core [--repeats 7] [--seconds 0.2] [--json] [--check]

`--check` exits 1 when a target is missed; without it the run only reports.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sized

import uuid_utils

from nebula_id.clock import SystemClock
from nebula_id.core import pool as pools
from nebula_id.core import segment, uuids
from nebula_id.core.layout import SnowflakeLayout
from nebula_id.core.snowflake import SnowflakeGenerator

SEQUENCE_LIMIT = 4_096_000  # IDs per second one worker can issue with 12 sequence bits
SINGLE_TARGET = 2_000_000
BATCH_TARGET = 3_900_000
UUID7_RATIO_TARGET = 0.8
CHUNK = 50_000  # calls per timed chunk of the single-ID loops


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    rate: float  # IDs per second of wall time (median)
    cpu_rate: float  # IDs per second of CPU time this process got (median)
    target: str = ""
    ok: bool | None = None  # None: informational


@dataclasses.dataclass(frozen=True)
class Samples:
    """Per-repeat rates of one candidate: wall-clock and CPU-time based."""

    wall: list[float]
    cpu: list[float]

    @property
    def rate(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_rate(self) -> float:
        return statistics.median(self.cpu)


def timed(run: Callable[[], int], seconds: float) -> tuple[float, float]:
    """IDs per wall second and per CPU second of calling `run` for about `seconds`."""
    made = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + seconds
    while True:
        made += run()
        now = time.perf_counter()
        if now >= deadline:
            cpu = max(time.process_time() - cpu_started, 1e-9)
            return made / (now - started), made / cpu


def compare(
    runs: dict[str, Callable[[], int]], *, repeats: int, seconds: float
) -> dict[str, Samples]:
    """Rates of each run per repeat, taken round-robin so that all share the machine's load."""
    for run in runs.values():
        run()  # warm up
    samples = {name: Samples(wall=[], cpu=[]) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = timed(run, seconds)
            samples[name].wall.append(wall)
            samples[name].cpu.append(cpu)
    return samples


def ratio(ours: Samples, peer: Samples) -> float:
    """The median of the per-repeat ratios (robust to load that changes between repeats)."""
    return statistics.median(a / b for a, b in zip(ours.wall, peer.wall, strict=True))


def figure(name: str, samples: Samples, target: str = "", ok: bool | None = None) -> Figure:
    return Figure(name, samples.rate, samples.cpu_rate, target, ok)


def loop(call: Callable[[], object]) -> Callable[[], int]:
    """`call` CHUNK times in a plain for loop, as an application would."""

    def run() -> int:
        for _ in range(CHUNK):
            call()
        return CHUNK

    return run


def batches(call: Callable[[int], Sized], size: int) -> Callable[[], int]:
    def run() -> int:
        made = 0
        for _ in range(max(1, CHUNK // size)):
            made += len(call(size))
        return made

    return run


class NaiveSnowflake:
    """The textbook Python generator (no rollback, mark or lease checks): DESIGN.md's anchor."""

    def __init__(self) -> None:
        self.last = -1
        self.sequence = 0
        self.epoch_ms = SnowflakeLayout().epoch_ms

    def next_id(self) -> int:
        now = time.time_ns() // 1_000_000
        if now == self.last:
            self.sequence = (self.sequence + 1) & 4095
            if self.sequence == 0:
                while now <= self.last:
                    now = time.time_ns() // 1_000_000
        else:
            self.sequence = 0
        self.last = now
        return ((now - self.epoch_ms) << 22) | (1 << 12) | self.sequence


def generator(worker: int) -> SnowflakeGenerator:
    clock = SystemClock()
    gen = SnowflakeGenerator(SnowflakeLayout(), datacenter=0, worker=worker, clock=clock)
    gen.allow_until(clock.wall_ms() + 3_600_000)
    return gen


class MemoryStore:
    """A `SegmentStore` in memory: the allocator's own cost, without a database."""

    def __init__(self) -> None:
        self.next_start: dict[str, int] = {}

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange:
        start = self.next_start.get(tag, 0)
        self.next_start[tag] = start + step
        return segment.SegmentRange(start=start, end=start + step, datacenter="bench", step=step)


def segment_runs(size: int) -> tuple[Callable[[], int], Callable[[], None]]:
    """A run function over a started allocator, and a function that closes it."""
    event_loop = asyncio.new_event_loop()
    allocator = segment.SegmentAllocator(
        MemoryStore(),
        [pools.Tag(name="bench", step=10_000, max_step=1_000_000)],
        clock=SystemClock(),
    )
    event_loop.run_until_complete(allocator.start())
    calls = max(1, CHUNK // size)

    async def many() -> int:
        next_ids = allocator.next_ids
        made = 0
        for _ in range(calls):
            made += len(await next_ids("bench", size))
        return made

    def run() -> int:
        return event_loop.run_until_complete(many())

    def close() -> None:
        event_loop.run_until_complete(allocator.close())
        event_loop.close()

    return run, close


def measure(repeats: int, seconds: float) -> list[Figure]:
    figures: list[Figure] = []

    flake = compare(
        {
            "naive": loop(NaiveSnowflake().next_id),
            "single": loop(generator(1).next_id),
            "1000": batches(generator(2).next_ids, 1000),
            "4096": batches(generator(3).next_ids, 4096),
        },
        repeats=repeats,
        seconds=seconds,
    )
    figures.append(figure("naive Python Snowflake (peer)", flake["naive"]))
    single = flake["single"].rate
    figures.append(
        figure(
            "Snowflake next_id, one at a time",
            flake["single"],
            f">= {SINGLE_TARGET / 1e6:g} M/s ({single / SINGLE_TARGET:.2f}x; "
            f"{ratio(flake['single'], flake['naive']):.2f}x naive)",
            single >= SINGLE_TARGET,
        )
    )
    for label in ("1000", "4096"):
        batch = flake[label].rate
        figures.append(
            figure(
                f"Snowflake next_ids({label})",
                flake[label],
                f">= {BATCH_TARGET / 1e6:g} M/s ({batch / SEQUENCE_LIMIT:.1%} of the "
                f"{SEQUENCE_LIMIT / 1e6:g} M/s sequence limit)",
                batch >= BATCH_TARGET,
            )
        )

    v7 = compare(
        {
            "peer object": loop(uuid_utils.uuid7),
            "peer string": loop(lambda: str(uuid_utils.uuid7())),
            "ours": loop(uuids.uuid7),
            "ours batch": batches(uuids.uuid7_batch, 1000),
        },
        repeats=repeats,
        seconds=seconds,
    )
    vs_string = ratio(v7["ours"], v7["peer string"])
    figures.append(figure("uuid_utils.uuid7() (object, peer)", v7["peer object"]))
    figures.append(figure("str(uuid_utils.uuid7()) (string, peer)", v7["peer string"]))
    figures.append(
        figure(
            "uuids.uuid7() (string, ours)",
            v7["ours"],
            f">= {UUID7_RATIO_TARGET}x peer string: {vs_string:.2f}x "
            f"({ratio(v7['ours'], v7['peer object']):.2f}x the object call)",
            vs_string >= UUID7_RATIO_TARGET,
        )
    )
    figures.append(
        figure(
            "uuids.uuid7_batch(1000)",
            v7["ours batch"],
            f"{ratio(v7['ours batch'], v7['peer string']):.2f}x peer string",
        )
    )

    v4 = compare(
        {
            "stdlib": loop(uuid.uuid4),
            "peer string": loop(lambda: str(uuid_utils.uuid4())),
            "ours": loop(uuids.uuid4),
            "ours batch": batches(uuids.uuid4_batch, 1000),
        },
        repeats=repeats,
        seconds=seconds,
    )
    figures.append(figure("uuid.uuid4() (stdlib object, peer)", v4["stdlib"]))
    figures.append(figure("str(uuid_utils.uuid4()) (string, peer)", v4["peer string"]))
    figures.append(
        figure(
            "uuids.uuid4() (string, ours)",
            v4["ours"],
            f"{ratio(v4['ours'], v4['stdlib']):.1f}x stdlib, "
            f"{ratio(v4['ours'], v4['peer string']):.2f}x uuid-utils",
        )
    )
    figures.append(figure("uuids.uuid4_batch(1000)", v4["ours batch"]))

    closers: list[Callable[[], None]] = []
    try:
        runs: dict[str, Callable[[], int]] = {}
        for count in (1, 1000):
            run, close = segment_runs(count)
            closers.append(close)
            runs[str(count)] = run
        seg = compare(runs, repeats=repeats, seconds=seconds)
    finally:
        for close in closers:
            close()
    for label, samples in seg.items():
        figures.append(figure(f"SegmentAllocator next_ids(tag, {label}), in memory", samples))
    return figures


def report(figures: list[Figure], *, repeats: int, seconds: float) -> str:
    lines = [
        f"nebula-id core benchmark: median of {repeats} runs of ~{seconds:g} s each; "
        f"Python {platform.python_version()}, uuid-utils {uuid_utils.__version__}",
        "",
        f"{'what':44} {'IDs/s':>12} {'per CPU s':>12}  target / ratio",
    ]
    for each in figures:
        verdict = "" if each.ok is None else ("  ok" if each.ok else "  MISSED")
        lines.append(
            f"{each.name:44} {each.rate / 1e6:8.2f} M/s {each.cpu_rate / 1e6:8.2f} M/s  "
            f"{each.target}{verdict}".rstrip()
        )
    lines += [
        "",
        "IDs/s is per wall-clock second, as targeted; 'per CPU s' divides by the CPU time",
        "this process got, so it shows the code's own speed when the machine is busy.",
        "Snowflake figures can read a little above 100 %: a run may start in a millisecond",
        "whose sequence the previous run left partly unused.  UUID targets compare equal",
        "output (canonical strings); the object call is shown for reference.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.core", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of each run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    figures = measure(args.repeats, args.seconds)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in figures], indent=2))
    else:
        print(report(figures, repeats=args.repeats, seconds=args.seconds))
    missed = [each.name for each in figures if each.ok is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
