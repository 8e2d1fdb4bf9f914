"""UUIDv7 and UUIDv4 as canonical lowercase strings.

Why uuid-utils does the work: in pure Python the hex formatting alone of a
128-bit value into the canonical form runs at about 2 M/s here, so a pure-Python
UUIDv7 (counter, random bits, formatting) cannot reach 0.8 x uuid-utils, while
`str(uuid_utils.uuid7())` runs at 4-6 M/s.  Our functions return strings, so the
peer they are measured against is that same string (`bench/core.py` also shows
the bare object call, about twice as fast because it skips `str()`).
uuid-utils keeps the guarantees we need, and `tests/unit/test_uuids.py` checks
each of them:

* **UUIDv7, RFC 9562, method 1 of section 6.2.**  `uuid7()` is `Uuid::now_v7`,
  which draws from one process-wide, mutex-guarded `ContextV7`: a 42-bit
  counter re-seeded at random each millisecond and incremented within it (the
  timestamp is bumped when the counter wraps), followed by 32 random bits.
  The crate guarantees that all UUIDs of a process are ordered by creation,
  from every thread.
* **Safe after fork.**  The child re-seeds the random generator
  (`os.register_at_fork`; uuid-utils 1.x registers the same hook, and we do
  not rely on that), so a child never replays the parent's random stream: the
  random tail differs from the first UUID on, and the counter is re-seeded at
  the next millisecond.
* **UUIDv4 from a CSPRNG.**  `Uuid::new_v4` takes its 122 random bits from
  rand's `ThreadRng` (ChaCha, seeded from the operating system), the same
  re-seeded generator.

The batch functions loop in C (`map`, `starmap`), which is why they are not
written as comprehensions.
"""

from __future__ import annotations

import itertools
import os

import uuid_utils

_uuid7 = uuid_utils.uuid7
_uuid4 = uuid_utils.uuid4
_no_args: tuple[()] = ()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=uuid_utils.reseed_rng)


def uuid7() -> str:
    """One UUIDv7, later than every UUIDv7 this process made before."""
    return str(_uuid7())


def uuid7_batch(n: int) -> list[str]:
    """`n` UUIDv7s in strictly increasing order."""
    return list(map(str, itertools.starmap(_uuid7, itertools.repeat(_no_args, n))))


def uuid4() -> str:
    """One random UUIDv4."""
    return str(_uuid4())


def uuid4_batch(n: int) -> list[str]:
    """`n` random UUIDv4s."""
    return list(map(str, itertools.starmap(_uuid4, itertools.repeat(_no_args, n))))
