"""The suites' one polling helper: returns the first truthy value, fails with what it waited for."""

from __future__ import annotations

import itertools

import pytest
from tests.support.waiting import eventually, eventually_async


def test_eventually_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", 7, 8])
    assert eventually(lambda: next(values), 5, interval=0) == 7


def test_eventually_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"after 0\.01 s waiting for the moon; last: 0"):
        eventually(lambda: 0, 0.01, what="the moon", interval=0)


def test_only_the_ignored_exceptions_mean_not_yet() -> None:
    calls = itertools.count()

    def flaky() -> int:
        if next(calls) < 2:
            raise ConnectionRefusedError("not up")
        return 3

    assert eventually(flaky, 5, interval=0, ignoring=(OSError,)) == 3
    with pytest.raises(KeyError):
        eventually(lambda: {}["x"], 5, interval=0, ignoring=(OSError,))


async def test_eventually_async_awaits_a_coroutine_condition() -> None:
    seen: list[int] = []

    async def grows() -> int | None:
        seen.append(len(seen))
        return len(seen) if len(seen) >= 3 else None

    assert await eventually_async(grows, 5, interval=0) == 3
    assert await eventually_async(lambda: "plain", 5) == "plain"
    with pytest.raises(AssertionError, match="waiting for never"):
        await eventually_async(lambda: False, 0.01, what="never", interval=0)
