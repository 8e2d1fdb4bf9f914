"""The chaos suite: every kind of fault, drawn from a seed, under client load.

The system (`e2e.chaos.system`) is all real: two operator replicas, etcd, two
PostgreSQL datacenters, six sidecars behind cuttable proxies.  Twelve clients
(Snowflake and Segment on every sidecar) record every answer in a `Ledger`
while faults are injected one after another, in an order and with targets and
durations drawn from a seed that is printed first (``NEBULA_CHAOS_SEED`` replays
a run; ``NEBULA_CHAOS_FAULTS`` changes how many).  After each fault is healed
the suite waits until every sidecar serves both algorithms again.

It fails on one duplicate ID, on a worker's Snowflake IDs or a datacenter's
Segment IDs going backwards, and on a stretch without IDs longer than the
bound documented for the fault (README, "Failure modes").  The table of
faults it prints is also written to ``chaos-table.md`` in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controlplane import ControlPlane
from tests.support.postgres import PostgresCluster

from e2e.chaos import ledger as ledgers
from e2e.chaos import system as chaos
from nebula_id.core import layout as layouts

pytestmark = pytest.mark.e2e

BATCH = 50
PAUSE_S = 0.1
REQUEST_TIMEOUT_S = 2.0
MIN_IDS = 200_000
SETTLE_GRACE_S = 30.0
QUIET_S = chaos.TTL_S + 1.0
LAYOUT = layouts.SnowflakeLayout()  # the pool's layout: the defaults (41/5/5/12)


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """One kind of fault: how long it is held, and the bound on a stretch without IDs."""

    name: str
    hold: tuple[float, float]
    bound: Callable[[float], float]
    """Longest allowed stretch without IDs on any sidecar, given the hold (seconds)."""
    rule: str
    """The bound as the README states it."""


KINDS = (
    Kind("sidecar kill -9", (0.5, 2.0), lambda hold: hold + 10, "down + 10"),
    Kind("sidecar SIGSTOP/SIGCONT", (1.0, 4.0), lambda hold: hold + 10, "paused + 10"),
    Kind("sidecar-etcd partition", (1.0, 5.0), lambda hold: hold + 10, "cut + 10"),
    Kind("sidecar clock back", (0.5, 2.0), lambda jump: jump + 3, "jump + 3"),
    Kind("etcd kill -9", (1.0, 3.0), lambda hold: hold + 12, "down + 12"),
    Kind("etcd SIGSTOP/SIGCONT", (1.0, 3.0), lambda hold: hold + 12, "paused + 12"),
    Kind("database kill -9", (2.0, 4.0), lambda hold: 5.0, "5"),
    Kind("operator leader kill -9", (1.0, 3.0), lambda hold: 3.0, "3"),
    Kind("pool config change", (0.0, 0.0), lambda hold: 3.0, "3"),
    Kind("pool delete + re-create", (0.0, 1.0), lambda hold: 45.0, "45"),
)


@dataclasses.dataclass(slots=True)
class Planned:
    kind: Kind
    hold: float
    sidecar: int
    datacenter: str


def plan(rng: random.Random, count: int, sidecars: int, clocked: list[int]) -> list[Planned]:
    """Every kind at least `count // len(KINDS)` times, the rest at random, shuffled."""
    kinds = [k for k in KINDS for _ in range(max(1, count // len(KINDS)))]
    kinds += rng.choices(KINDS, k=max(0, count - len(kinds)))
    rng.shuffle(kinds)
    planned = []
    for kind in kinds:
        target = rng.choice(clocked) if kind.name == "sidecar clock back" else None
        planned.append(
            Planned(
                kind=kind,
                hold=round(rng.uniform(*kind.hold), 2),
                sidecar=target if target is not None else rng.randrange(sidecars),
                datacenter=rng.choice(chaos.DATACENTERS),
            )
        )
    return planned


async def client(
    session: aiohttp.ClientSession,
    sidecar: chaos.Sidecar,
    algorithm: str,
    ledger: ledgers.Ledger,
    stop: asyncio.Event,
) -> None:
    """Ask one sidecar for IDs of one algorithm until `stop`, recording every answer."""
    path = (
        f"/v1/ids/snowflake?count={BATCH}"
        if algorithm == "snowflake"
        else f"/v1/ids/segment/{chaos.TAG}?count={BATCH}"
    )
    limit = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    while not stop.is_set():
        incarnation = sidecar.incarnation
        sent = time.monotonic()
        ids: tuple[int, ...] = ()
        reason = ""
        try:
            async with session.get(sidecar.base + path, timeout=limit) as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    ids = tuple(int(i) for i in body["ids"])
                elif response.status == 503:
                    reason = str(body["error"]["reason"])
                else:
                    reason = f"http_{response.status}"
        except TimeoutError:
            reason = "timeout"
        except (aiohttp.ClientError, ValueError, KeyError, TypeError):
            reason = "connection"
        ledger.add(
            ledgers.Answer(
                sidecar.index, incarnation, algorithm, sent, time.monotonic(), ids, reason
            )
        )
        await asyncio.sleep(PAUSE_S)


async def settled(
    ledger: ledgers.Ledger, system: chaos.System, since: float, *, within: float
) -> float:
    """Wait until every sidecar has served both algorithms after `since`, then quiet.

    Quiet: no failed answer on any sidecar for `QUIET_S` (longer than a lease
    TTL), so an after-effect of this fault (a lease etcd expires only once it
    runs again) is charged to it, not to the next one.
    """
    wanted = {
        (s.index, algorithm) for s in system.sidecars for algorithm in ("snowflake", "segment")
    }
    deadline = time.monotonic() + within
    checked = 0
    served: set[tuple[int, str]] = set()
    last_failure = since
    while time.monotonic() < deadline:
        answers = ledger.answers
        for answer in answers[checked:]:
            if answer.ids and answer.sent >= since:
                served.add((answer.sidecar, answer.algorithm))
            elif not answer.ids:
                last_failure = max(last_failure, answer.received)
        checked = len(answers)
        if served >= wanted and time.monotonic() - last_failure >= QUIET_S:
            return time.monotonic()
        await asyncio.sleep(0.1)
    missing = sorted(wanted - served)
    logs = "\n".join(
        f"--- {system.sidecars[i].name}\n{system.sidecars[i].log_path.read_text()[-1500:]}"
        for i in sorted({i for i, _ in missing})
    )
    raise AssertionError(
        f"not serving again (or not quiet for {QUIET_S:.0f} s) within {within:.0f} s: "
        f"{missing}\n{logs}"
    )


async def inject(system: chaos.System, step: Planned) -> tuple[str, float]:
    """Inject one fault, hold it, heal it; returns (target, the hold used for the bound)."""
    run: Callable[..., Awaitable[object]] = asyncio.to_thread
    kind, hold = step.kind.name, step.hold
    sidecar = system.sidecars[step.sidecar]
    if kind == "sidecar kill -9":
        sidecar.kill9()
        await asyncio.sleep(hold)
        sidecar.start()
        return sidecar.name, hold
    if kind == "sidecar SIGSTOP/SIGCONT":
        sidecar.signal(signal.SIGSTOP)
        await asyncio.sleep(hold)
        sidecar.signal(signal.SIGCONT)
        return sidecar.name, hold
    if kind == "sidecar-etcd partition":
        await run(sidecar.proxy.cut)
        await asyncio.sleep(hold)
        await run(sidecar.proxy.heal)
        return sidecar.name, hold
    if kind == "sidecar clock back":
        sidecar.set_clock_offset(-hold)
        await asyncio.sleep(hold + 2)
        sidecar.set_clock_offset(0)  # forward again: harmless, keeps later faults comparable
        return f"{sidecar.name} by {hold:.2f} s", hold
    if kind == "etcd kill -9":
        system.etcd_kill()
        await asyncio.sleep(hold)
        await run(system.etcd_start)
        return "etcd", hold
    if kind == "etcd SIGSTOP/SIGCONT":
        system.etcd_pause()
        await asyncio.sleep(hold)
        system.etcd_resume()
        return "etcd", hold
    if kind == "database kill -9":
        system.database_kill(step.datacenter)
        await asyncio.sleep(hold)
        await run(system.database_start, step.datacenter)
        return step.datacenter, hold
    if kind == "operator leader kill -9":
        killed = await run(system.leader_kill)
        await asyncio.sleep(hold)
        await run(system.ensure_operators)
        return str(killed), hold
    if kind == "pool config change":
        changed = await run(system.config_change)
        return str(changed), hold
    if kind == "pool delete + re-create":
        await run(system.pool_delete)
        await asyncio.sleep(hold)
        await run(system.pool_create)
        return chaos.POOL, hold
    raise AssertionError(f"unknown fault {kind}")


def table(ledger: ledgers.Ledger, seed: int, wall_s: float) -> tuple[str, list[str]]:
    """The Markdown table of the run, and every bound that was exceeded."""
    gaps_by_kind: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"snowflake": 0.0, "segment": 0.0}
    )
    over: list[str] = []
    for gap in ledger.gaps():
        fault = ledger.fault_of(gap.end)
        name = fault.kind if fault is not None else "(start-up)"
        longest = gaps_by_kind[name]
        longest[gap.algorithm] = max(longest[gap.algorithm], gap.seconds)
        if fault is not None and gap.seconds > fault.bound:
            over.append(
                f"{fault.kind} on {fault.target}: sidecar {gap.sidecar} gave no {gap.algorithm} "
                f"ID for {gap.seconds:.2f} s, {gap.start - fault.injected:+.2f} s to "
                f"{gap.end - fault.injected:+.2f} s from the injection (bound {fault.bound:.1f} s; "
                f"answers {collections.Counter(gap.reasons).most_common()})"
            )
    duplicates = ledger.duplicates_by_fault()
    rows = [
        "| fault | injected | IDs issued | duplicates | longest without Snowflake IDs (s) "
        "| longest without Segment IDs (s) | bound (s) | failed answers by reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        faults = [f for f in ledger.faults if f.kind == kind.name]
        issued = 0
        reasons: collections.Counter[str] = collections.Counter()
        for fault in faults:
            for answer in ledger.in_window(fault):
                issued += len(answer.ids)
                if not answer.ids:
                    reasons[f"{answer.algorithm} {answer.reason}"] += 1
        longest = gaps_by_kind.get(kind.name, {"snowflake": 0.0, "segment": 0.0})
        shown = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "none"
        rows.append(
            f"| {kind.name} | {len(faults)} | {issued:,} | {duplicates[kind.name]} "
            f"| {longest['snowflake']:.2f} "
            f"| {longest['segment']:.2f} | {kind.rule} | {shown} |"
        )
    total_dups = sum(duplicates.values())
    rows.append(
        f"| **all** | {len(ledger.faults)} | {ledger.ids_issued():,} | {total_dups} | "
        f"{max((g['snowflake'] for g in gaps_by_kind.values()), default=0):.2f} | "
        f"{max((g['segment'] for g in gaps_by_kind.values()), default=0):.2f} | | |"
    )
    header = (
        f"nebula-id chaos run: seed {seed}, {len(ledger.faults)} faults, "
        f"{ledger.ids_issued():,} IDs in {len(ledger.answers):,} answers, {wall_s:.0f} s"
    )
    return header + "\n\n" + "\n".join(rows) + "\n", over


@pytest.fixture
def system(
    control_plane: ControlPlane,
    kubeconfig: str,
    etcd_factory: Callable[[], object],
    postgres_factory: Callable[[], PostgresCluster],
    tmp_path: Path,
) -> Iterator[chaos.System]:
    etcd = etcd_factory()
    dcs = {dc: postgres_factory() for dc in chaos.DATACENTERS}
    built = chaos.System(control_plane, kubeconfig, etcd, dcs, tmp_path)  # type: ignore[arg-type]
    try:
        built.start()
        yield built
    finally:
        built.close()


@pytest.mark.timeout(1200)
async def test_chaos(
    system: chaos.System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("NEBULA_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    count = int(os.environ.get("NEBULA_CHAOS_FAULTS") or 32)
    with capsys.disabled():
        print(f"\nnebula-id chaos: seed {seed} (replay: NEBULA_CHAOS_SEED={seed})", file=sys.stderr)
    rng = random.Random(seed)
    clocked = [s.index for s in system.sidecars if s.clock_file is not None]
    steps = plan(rng, count, len(system.sidecars), clocked)
    ledger = ledgers.Ledger()
    stop = asyncio.Event()
    started = time.monotonic()
    offset = time.time() - started

    def wall(moment: float) -> str:
        """A monotonic moment as the wall-clock time the process logs show."""
        return time.strftime("%H:%M:%S", time.localtime(moment + offset)) + (
            f".{int((moment + offset) % 1 * 1000):03d}"
        )

    timeline = (tmp_path / "faults.log").open("w")
    async with aiohttp.ClientSession() as session:
        clients = [
            asyncio.create_task(client(session, sidecar, algorithm, ledger, stop))
            for sidecar in system.sidecars
            for algorithm in ("snowflake", "segment")
        ]
        try:
            await settled(ledger, system, started, within=90)
            for step in steps:
                if step.kind.name in {"operator leader kill -9", "pool config change",
                                      "pool delete + re-create"}:  # fmt: skip
                    await asyncio.to_thread(system.ensure_operators)
                    await asyncio.to_thread(system.wait_for_leader, timeout=30)
                fault = ledgers.Fault(step.kind.name, "", time.monotonic())
                ledger.faults.append(fault)
                fault.target, hold = await inject(system, step)
                fault.healed = time.monotonic()
                fault.bound = step.kind.bound(hold)
                timeline.write(
                    f"{wall(fault.injected)} inject {fault.kind} on {fault.target} "
                    f"(hold {hold:.2f} s); healed {wall(fault.healed)}\n"
                )
                timeline.flush()
                fault.settled = await settled(
                    ledger, system, fault.healed, within=fault.bound + SETTLE_GRACE_S
                )
                await asyncio.to_thread(system.ensure_operators)
            for _ in range(600):  # more load until the target, at most 5 minutes
                if ledger.ids_issued() >= MIN_IDS:
                    break
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
    timeline.close()
    elapsed = time.monotonic() - started

    report, over = table(ledger, seed, elapsed)
    (tmp_path / "chaos-table.md").write_text(report)
    with capsys.disabled():
        print("\n" + report + f"(written to {tmp_path / 'chaos-table.md'})", file=sys.stderr)

    assert ledger.duplicates() == {"snowflake": 0, "segment": 0}, f"seed {seed}"
    assert ledger.snowflake_order_violations(LAYOUT) == [], f"seed {seed}"
    assert ledger.segment_order_violations(LAYOUT.datacenter_bits) == [], f"seed {seed}"
    assert over == [], (
        f"seed {seed}: unavailable longer than the bound (faults with wall-clock times in "
        f"{tmp_path / 'faults.log'}, process logs beside it):\n" + "\n".join(over)
    )
    assert {f.kind for f in ledger.faults} == {k.name for k in KINDS}
    assert len(ledger.faults) >= 30
    assert ledger.ids_issued() >= MIN_IDS
