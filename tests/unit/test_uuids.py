"""The UUID guarantees we rely on uuid-utils for: format, order, fork safety, randomness."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import uuid

import pytest

from nebula_id.core import uuids

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_version(text: str, version: int) -> uuid.UUID:
    assert CANONICAL.match(text), text
    value = uuid.UUID(text)
    assert value.version == version
    assert value.variant == uuid.RFC_4122  # the two variant bits are 10
    return value


def unix_ms_of(text: str) -> int:
    return uuid.UUID(text).int >> 80


def test_uuid7_is_rfc_9562_version_7() -> None:
    before = time.time_ns() // 1_000_000
    value = uuids.uuid7()
    after = time.time_ns() // 1_000_000
    check_version(value, 7)
    assert before <= unix_ms_of(value) <= after + 1


def test_uuid7_batch_is_version_7() -> None:
    batch = uuids.uuid7_batch(1000)
    assert len(batch) == 1000
    for value in batch:
        check_version(value, 7)
    assert uuids.uuid7_batch(0) == []


def test_uuid7_strictly_increases_across_a_million() -> None:
    made: list[str] = []
    while len(made) < 1_000_000:
        made.extend(uuids.uuid7_batch(997))
        made.append(uuids.uuid7())
    # Canonical lowercase strings sort like the 128-bit values they encode.
    assert all(a < b for a, b in itertools.pairwise(made))
    assert unix_ms_of(made[-1]) >= unix_ms_of(made[0])


def test_uuid7_order_holds_across_threads() -> None:
    lock = threading.Lock()
    made: list[str] = []

    def work() -> None:
        for _ in range(20_000):
            with lock:
                made.append(uuids.uuid7())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 80_000
    assert all(a < b for a, b in itertools.pairwise(made))


def _in_child(produce: int) -> tuple[list[str], list[str]]:
    """Fork; the child and the parent each make UUIDs; return (parent's, child's)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its UUIDs and leave without running pytest's teardown
        try:
            os.close(read_end)
            first4 = uuids.uuid4()
            made = [first4, *uuids.uuid7_batch(produce)]
            with os.fdopen(write_end, "w") as out:
                out.write("\n".join(made))
        finally:
            os._exit(0)
    os.close(write_end)
    parent = [uuids.uuid4(), *uuids.uuid7_batch(produce)]
    with os.fdopen(read_end) as inp:
        child = inp.read().split("\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return parent, child


def test_a_forked_child_never_repeats_the_parent() -> None:
    last_before_fork = uuids.uuid7()
    parent, child = _in_child(50_000)
    assert len(child) == 50_001
    # Without a re-seed the child would replay the parent's random stream, and
    # the very first UUIDv4 after the fork would be identical.
    assert parent[0] != child[0]
    check_version(child[0], 4)
    assert not set(parent) & set(child)
    # The child continues after everything the parent made before the fork.
    assert child[1] > last_before_fork
    assert all(a < b for a, b in itertools.pairwise(child[1:]))


def test_uuid4_is_version_4_and_random() -> None:
    value = check_version(uuids.uuid4(), 4)
    batch = uuids.uuid4_batch(100_000)
    assert len(set(batch)) == 100_000
    for text in batch[:1000]:
        check_version(text, 4)
    assert value not in {uuid.UUID(t) for t in batch}
    assert uuids.uuid4_batch(0) == []


def test_uuid4_bits_look_uniform() -> None:
    # 122 random bits: across 10 000 UUIDs every random bit is set close to half the time.
    values = [uuid.UUID(t).int for t in uuids.uuid4_batch(10_000)]
    fixed = {76, 77, 78, 79, 62, 63}  # version (4 bits) and variant (2 bits)
    for bit in range(128):
        ones = sum((v >> bit) & 1 for v in values)
        if bit in fixed:
            continue
        assert 4_500 < ones < 5_500, f"bit {bit} set {ones} times out of 10000"


@pytest.mark.parametrize("make", [uuids.uuid7, uuids.uuid4])
def test_strings_are_lowercase(make: object) -> None:
    assert callable(make)
    text = make()
    assert isinstance(text, str)
    assert text == text.lower()
