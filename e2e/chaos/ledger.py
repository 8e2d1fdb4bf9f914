"""Every answer every chaos client received, and the checks over them.

Each request is recorded with its send and receive times (monotonic), the
sidecar and its incarnation, and the IDs or the 503 reason.  The checks:

* no ID twice: a pool's Snowflake IDs, and a tag's Segment IDs;
* a worker's Snowflake IDs never go backwards: when one request completed
  before another was sent, every ID of the later one is larger (real-time
  order, so a paused sidecar's late answer is judged fairly);
* a tag's Segment IDs never go backwards within one datacenter's range, as one
  client sees them from one sidecar process;
* unavailability: the longest time a sidecar gave no ID of an algorithm, each
  such gap charged to the fault injected last before it began.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from nebula_id.core import layout as layouts
from nebula_id.core import segment


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    sidecar: int
    incarnation: int
    algorithm: str  # "snowflake" or "segment"
    sent: float
    received: float
    ids: tuple[int, ...] = ()
    reason: str = ""  # a 503 reason, "timeout", "connection" or "http_<code>"


@dataclasses.dataclass(slots=True)
class Fault:
    kind: str
    target: str
    injected: float
    healed: float = 0.0
    settled: float = 0.0
    bound: float = 0.0
    """The longest stretch without IDs allowed on any sidecar for this fault (seconds)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    sidecar: int
    algorithm: str
    start: float  # the last success before it (or the first failure)
    first_failure: float
    end: float  # the next success
    reasons: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return self.end - self.start


STALL_S = 0.5
"""Two successes further apart than this are a gap even without a failed answer."""


class Ledger:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.faults: list[Fault] = []

    def add(self, answer: Answer) -> None:
        self.answers.append(answer)

    def ids_issued(self) -> int:
        return sum(len(a.ids) for a in self.answers)

    # -- uniqueness and order ------------------------------------------------------------

    def duplicates(self) -> dict[str, int]:
        """Per algorithm, how many IDs were received more than once."""
        result = {"snowflake": 0, "segment": 0}
        for algorithm, _ in self._repeats():
            result[algorithm] += 1
        return result

    def duplicates_by_fault(self) -> collections.Counter[str]:
        """Repeated IDs, each charged to the fault injected last before its second receipt."""
        charged: collections.Counter[str] = collections.Counter()
        for _, answer in self._repeats():
            fault = self.fault_of(answer.sent)
            charged[fault.kind if fault is not None else "(start-up)"] += 1
        return charged

    def _repeats(self) -> list[tuple[str, Answer]]:
        seen: dict[str, set[int]] = {"snowflake": set(), "segment": set()}
        repeats: list[tuple[str, Answer]] = []
        for answer in sorted(self.answers, key=lambda a: a.received):
            known = seen[answer.algorithm]
            for value in answer.ids:
                if value in known:
                    repeats.append((answer.algorithm, answer))
                known.add(value)
        return repeats

    def snowflake_order_violations(self, layout: layouts.SnowflakeLayout) -> list[str]:
        by_worker: dict[tuple[int, int], list[Answer]] = collections.defaultdict(list)
        problems: list[str] = []
        for answer in self.answers:
            if answer.algorithm != "snowflake" or not answer.ids:
                continue
            if list(answer.ids) != sorted(set(answer.ids)):
                problems.append(f"a batch of sidecar {answer.sidecar} is not increasing")
            parsed = layout.parse(answer.ids[0])
            by_worker[(parsed.datacenter, parsed.worker)].append(answer)
        for worker, answers in by_worker.items():
            by_sent = sorted(answers, key=lambda a: a.sent)
            by_received = sorted(answers, key=lambda a: a.received)
            highest, done = -1, 0
            for answer in by_sent:
                while done < len(by_received) and by_received[done].received < answer.sent:
                    highest = max(highest, by_received[done].ids[-1])
                    done += 1
                if answer.ids[0] <= highest:
                    problems.append(
                        f"worker {worker}: sidecar {answer.sidecar} issued {answer.ids[0]} "
                        f"after {highest} had been received"
                    )
        return problems

    def segment_order_violations(self, datacenter_bits: int) -> list[str]:
        shift = segment.ID_BITS - datacenter_bits
        last: dict[tuple[int, int, int], int] = {}
        problems: list[str] = []
        for answer in sorted(self.answers, key=lambda a: a.sent):
            if answer.algorithm != "segment":
                continue
            for value in answer.ids:
                key = (answer.sidecar, answer.incarnation, value >> shift)
                if value <= last.get(key, -1):
                    problems.append(
                        f"sidecar {answer.sidecar}: segment ID {value} after {last[key]} "
                        f"from the same datacenter"
                    )
                last[key] = value
        return problems

    # -- availability ---------------------------------------------------------------------

    def gaps(self) -> list[Gap]:
        """Stretches between two successes that held a failed answer or lasted `STALL_S`.

        A paused sidecar answers late rather than not at all, so a long wait for
        one success counts as unavailability too.
        """
        streams: dict[tuple[int, str], list[Answer]] = collections.defaultdict(list)
        for answer in self.answers:
            streams[(answer.sidecar, answer.algorithm)].append(answer)
        found: list[Gap] = []
        for (sidecar, algorithm), answers in streams.items():
            answers.sort(key=lambda a: a.sent)
            last_ok: float | None = None
            failing_since: float | None = None
            reasons: list[str] = []
            for answer in answers:
                if answer.ids:
                    start = last_ok if last_ok is not None else failing_since
                    if start is not None and (
                        failing_since is not None or answer.received - start > STALL_S
                    ):
                        found.append(
                            Gap(
                                sidecar,
                                algorithm,
                                start,
                                failing_since if failing_since is not None else answer.sent,
                                answer.received,
                                tuple(reasons) or ("slow",),
                            )
                        )
                    last_ok, failing_since, reasons = answer.received, None, []
                else:
                    if failing_since is None:
                        failing_since = answer.sent
                    reasons.append(answer.reason)
        return found

    def fault_of(self, moment: float) -> Fault | None:
        """The fault injected last at or before `moment`.

        Charge a gap by its end: the suite waits for every sidecar to serve again
        before the next fault, so every gap a fault causes ends before the next one.
        """
        chosen = None
        for fault in self.faults:
            if fault.injected <= moment:
                chosen = fault
        return chosen

    def in_window(self, fault: Fault) -> Sequence[Answer]:
        later = [f.injected for f in self.faults if f.injected > fault.injected]
        end = min(later) if later else float("inf")
        return [a for a in self.answers if fault.injected <= a.sent < end]
