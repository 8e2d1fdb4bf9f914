"""The chaos suite's checks catch what they claim to: duplicates, order, gaps."""

from __future__ import annotations

from e2e.chaos import ledger as ledgers

from nebula_id.core import layout as layouts
from nebula_id.core import segment

LAYOUT = layouts.SnowflakeLayout()


def snowflake(ms: int, worker: int, sequence: int = 0) -> int:
    return (
        (ms << LAYOUT.timestamp_shift)
        | (1 << LAYOUT.datacenter_shift)
        | (worker << LAYOUT.worker_shift)
        | sequence
    )


def answer(
    sent: float, ids: tuple[int, ...] = (), *, algorithm: str = "snowflake", sidecar: int = 0,
    received: float | None = None, reason: str = "",
) -> ledgers.Answer:  # fmt: skip
    done = sent + 0.01 if received is None else received
    return ledgers.Answer(sidecar, 1, algorithm, sent, done, ids, reason)


def test_a_repeated_id_is_counted_and_charged_to_its_fault() -> None:
    book = ledgers.Ledger()
    book.faults.append(ledgers.Fault("etcd kill -9", "etcd", injected=5.0))
    book.add(answer(1.0, (10, 11)))
    book.add(answer(6.0, (11, 12), sidecar=1))
    book.add(answer(6.0, (11,), algorithm="segment"))  # another sequence: no repeat
    assert book.duplicates() == {"snowflake": 1, "segment": 0}
    assert book.duplicates_by_fault() == {"etcd kill -9": 1}


def test_snowflake_ids_must_grow_in_real_time_order_per_worker() -> None:
    book = ledgers.Ledger()
    book.add(answer(1.0, (snowflake(100, 3), snowflake(100, 3, 1))))
    book.add(answer(2.0, (snowflake(101, 3),), sidecar=1))  # another holder, later: fine
    book.add(answer(2.0, (snowflake(50, 4),)))  # another worker: not compared
    assert book.snowflake_order_violations(LAYOUT) == []
    # Sent after an answer with a larger ID had arrived: backwards.
    book.add(answer(3.0, (snowflake(100, 3, 5),), sidecar=2))
    assert len(book.snowflake_order_violations(LAYOUT)) == 1


def test_a_late_answer_of_an_overlapping_request_is_not_called_backwards() -> None:
    book = ledgers.Ledger()
    book.add(answer(1.0, (snowflake(100, 3),), received=5.0))  # paused, answered late
    book.add(answer(2.0, (snowflake(101, 3),), sidecar=1, received=2.1))
    assert book.snowflake_order_violations(LAYOUT) == []


def test_segment_ids_must_grow_per_sidecar_and_datacenter() -> None:
    bits = LAYOUT.datacenter_bits
    dc_a, dc_b = segment.datacenter_base(1, bits), segment.datacenter_base(2, bits)
    book = ledgers.Ledger()
    book.add(answer(1.0, (dc_a + 1, dc_a + 2), algorithm="segment"))
    book.add(answer(2.0, (dc_b + 1,), algorithm="segment"))  # failed over: another slice
    book.add(answer(3.0, (dc_a + 40,), algorithm="segment"))  # back, a later range
    assert book.segment_order_violations(bits) == []
    book.add(answer(4.0, (dc_a + 3,), algorithm="segment"))
    assert len(book.segment_order_violations(bits)) == 1


def test_gaps_count_failures_and_late_answers_and_are_charged_by_their_end() -> None:
    book = ledgers.Ledger()
    book.faults.append(ledgers.Fault("sidecar kill -9", "s0", injected=1.5))
    book.add(answer(1.0, (1,)))
    book.add(answer(1.6, reason="connection"))
    book.add(answer(2.0, reason="connection"))
    book.add(answer(4.0, (2,)))
    book.add(answer(4.2, (3,), received=5.0))  # slow: 0.99 s after the previous success
    book.add(answer(5.1, (4,)))
    gaps = book.gaps()
    assert [(round(g.seconds, 2), g.reasons) for g in gaps] == [
        (3.0, ("connection", "connection")),
        (0.99, ("slow",)),
    ]
    fault = book.fault_of(gaps[0].end)
    assert fault is not None
    assert fault.kind == "sidecar kill -9"
