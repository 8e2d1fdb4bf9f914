"""The Python client (`nebula_id.client.IdClient`) against the real app.

Each test serves the app from `build_app` on a real loopback port
(`make_client`) and points an `IdClient` at it, so batches travel over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from nebula_id import errors
from nebula_id.client import BufferEmpty, ClientClosed, IdClient, SidecarUnreachable, answers
from nebula_id.clock import FakeClock
from nebula_id.http import errors as http_errors
from tests.api.conftest import MakeClient
from tests.support import processes
from tests.support.waiting import eventually_async

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def base_of(server: TestClient[Any, Any]) -> str:
    return str(server.make_url(""))


def counting_session() -> tuple[aiohttp.ClientSession, list[str]]:
    """A session that records the path of every request it sends."""
    sent: list[str] = []

    async def on_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        sent.append(params.url.path_qs)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace]), sent


def strictly_increasing(values: list[Any]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


# --- IDs ------------------------------------------------------------------------------


async def test_snowflake_ids_stay_unique_and_increasing_across_many_refills(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    async with IdClient(base_of(server), batch_size=50, low_water=0.25) as client:
        got = [await client.next_id() for _ in range(2_000)]
        got += await client.next_ids(1_234)
        got += [await client.next_id() for _ in range(766)]
        assert client.requests >= 4_000 // (50 * 2)  # two batches per round trip
    assert all(isinstance(v, int) and v > 0 for v in got)
    assert len(set(got)) == 4_000
    assert strictly_increasing(got)


async def test_concurrent_callers_share_one_ordered_stream(make_client: MakeClient) -> None:
    server = await make_client()
    async with IdClient(base_of(server), batch_size=40) as client:

        async def consume() -> list[Any]:
            mine = []
            for i in range(300):
                mine.append(await client.next_id())
                if i % 7 == 0:
                    await asyncio.sleep(0)  # interleave with the other callers
            return mine

        lists = await asyncio.gather(*(consume() for _ in range(8)))
        # One fetch at a time: no caller waited on a second, parallel request.
        assert client.requests <= 8 * 300 // 40 + 2
    everything = [v for mine in lists for v in mine]
    assert len(set(everything)) == 8 * 300
    assert all(strictly_increasing(mine) for mine in lists)


async def test_next_ids_spans_batches_in_order(make_client: MakeClient) -> None:
    server = await make_client()
    async with IdClient(base_of(server), batch_size=30, low_water=0.0) as client:
        assert await client.next_ids(0) == []
        first = await client.next_ids(100)
        second = await client.next_ids(5)
        with pytest.raises(errors.InvalidArgument, match="must not be negative"):
            await client.next_ids(-1)
    together = first + second
    assert len(together) == 105
    assert strictly_increasing(together)


async def test_segment_and_uuid7(make_client: MakeClient) -> None:
    server = await make_client(tags="orders:100,users")
    async with IdClient(base_of(server), algorithm="segment/orders", batch_size=40) as orders:
        ids = await orders.next_ids(250)  # more than two of the sidecar's 100-ID segments
    assert all(isinstance(v, int) for v in ids)
    assert len(set(ids)) == 250
    assert strictly_increasing(ids)
    async with IdClient(base_of(server), algorithm="segment", batch_size=5) as default_tag:
        assert isinstance(await default_tag.next_id(), int)
    async with IdClient(base_of(server), algorithm="uuid7", batch_size=100) as uuids:
        values = await uuids.next_ids(300)
    assert all(isinstance(v, str) and UUID.match(v) for v in values)
    assert len(set(values)) == 300


# --- prefetch -------------------------------------------------------------------------


async def test_prefetch_starts_below_low_water_before_the_buffer_is_empty(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    session, sent = counting_session()
    try:
        client = IdClient(base_of(server), batch_size=100, low_water=0.5, session=session)
        first = await client.next_id()  # the first batch: one request, awaited
        assert sent == ["/v1/ids/snowflake?count=100"]
        assert client.buffered == 99
        taken = [first] + [client.take() for _ in range(49)]
        assert client.buffered == 50  # at the low mark: nothing asked yet
        assert len(sent) == 1
        taken.append(client.take())  # below it: the next batch is on its way
        await eventually_async(lambda: client.buffered > 49, 10, what="the next batch")
        assert len(sent) == 2
        assert client.buffered == 149
        # The buffer never ran dry: every one of these is a pop, no request, no await.
        taken += [client.take() for _ in range(50)]
        assert len(sent) == 2
        # next_id on a full buffer completes on its first step: it never suspends.
        step = client.next_id()
        with pytest.raises(StopIteration) as done:
            step.send(None)
        taken.append(done.value.value)
        assert len(set(taken)) == len(taken) == 102
        assert client.buffered == 98
        assert strictly_increasing(taken)
        await client.close()
        assert not session.closed  # the caller's session is the caller's to close
    finally:
        await session.close()


async def test_a_tight_next_id_loop_sends_the_next_request_before_the_buffer_is_empty(
    make_client: MakeClient,
) -> None:
    """A loop that never awaits anything else still overlaps the fetch with its own work."""
    server = await make_client()
    left_at_send: list[int] = []
    client: IdClient | None = None

    async def on_sent(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        assert client is not None
        left_at_send.append(client.buffered)

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_sent)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = IdClient(base_of(server), batch_size=100, low_water=0.25, session=session)
        got = [await client.next_id() for _ in range(1_000)]
        await client.close()
    assert len(left_at_send) >= 10
    assert left_at_send[0] == 0  # the first batch: nothing to overlap with
    assert all(left > 0 for left in left_at_send[1:]), left_at_send
    assert strictly_increasing(got)


async def test_take_on_an_empty_buffer_raises_and_starts_a_fetch(make_client: MakeClient) -> None:
    server = await make_client()
    client = IdClient(base_of(server), batch_size=10)
    try:
        with pytest.raises(BufferEmpty, match="await next_id"):
            client.take()
        assert client.requests == 0  # the fetch is a task; it has not run yet
        first = await client.next_id()  # waits on that same fetch
        assert client.requests == 1
        assert isinstance(client.take(), int)
        assert isinstance(first, int)
    finally:
        await client.close()


async def test_a_failed_prefetch_keeps_the_buffer_and_the_empty_buffer_raises(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()  # frozen: the token bucket never refills
    # One batch of 10 IDs empties the bucket (the limit charges one token per ID).
    server = await make_client(clock=clock, rate_limit_rps="10", rate_limit_burst="10")
    client = IdClient(base_of(server), batch_size=10, low_water=0.5, pipeline=1)
    try:
        got = [await client.next_id() for _ in range(6)]  # below 5 left: prefetch, refused
        await eventually_async(
            lambda: client.requests == 2 and not prefetch_tasks(), 10, what="the refused prefetch"
        )
        got += [await client.next_id() for _ in range(4)]  # the buffer still serves
        assert client.requests == 2  # and, after a failure, the background stays quiet
        with pytest.raises(errors.RateLimited) as refused:
            await client.next_id()
        assert refused.value.retry_after == 1.0
        assert client.requests == 3  # the empty buffer asked again, in the foreground
        clock.advance(1.0)  # a batch's tokens back (and within the 2 s the mark is ahead)
        got.append(await client.next_id())  # errors are not sticky
        assert len(set(got)) == 11
        assert strictly_increasing(got)
    finally:
        await client.close()


async def test_one_fetch_pipelines_batches_in_order_and_keeps_those_before_a_refusal(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()  # frozen: the token bucket never refills
    # Room for three batches of 10 IDs (one token per ID).
    server = await make_client(clock=clock, rate_limit_rps="10", rate_limit_burst="30")
    async with IdClient(base_of(server), batch_size=10, low_water=0.0, pipeline=2) as client:
        # Trip 1 brings batches 1 and 2; trip 2 brings batch 3 and a 429, and
        # batch 3 still serves; trip 3 gets two 429s.
        got = await client.next_ids(30)
        assert client.requests == 2
        with pytest.raises(errors.RateLimited):
            await client.next_id()
        assert client.requests == 3
    assert len(got) == 30
    assert strictly_increasing(got)


async def test_the_unix_socket_and_pipeline_settings_are_checked() -> None:
    with pytest.raises(errors.InvalidArgument, match="pipeline must be from 1 to 8"):
        IdClient(pipeline=0)
    with pytest.raises(errors.InvalidArgument, match="unix:///absolute/path"):
        IdClient("unix://relative.sock")
    with pytest.raises(errors.InvalidArgument, match="must be http://, https:// or unix://"):
        IdClient("ftp://127.0.0.1")


# --- errors ---------------------------------------------------------------------------


async def test_unknown_tag_is_not_found(make_client: MakeClient) -> None:
    server = await make_client(tags="orders,users")
    async with IdClient(base_of(server), algorithm="segment/nope") as client:
        with pytest.raises(errors.NotFound) as missing:
            await client.next_id()
    assert isinstance(missing.value, errors.UnknownTag)
    assert missing.value.known == ["orders", "users"]
    assert "known tags: orders, users" in str(missing.value)


async def test_api_key(make_client: MakeClient) -> None:
    server = await make_client(auth_api_keys="k1")
    async with IdClient(base_of(server)) as anonymous:
        with pytest.raises(errors.Unauthorized, match="X-API-Key"):
            await anonymous.next_id()
    async with IdClient(base_of(server), api_key="wrong") as wrong:
        with pytest.raises(errors.Unauthorized):
            await wrong.next_id()
    async with IdClient(base_of(server), api_key="k1") as client:
        assert isinstance(await client.next_id(), int)


async def test_batch_larger_than_max_batch_size_is_invalid_argument(
    make_client: MakeClient,
) -> None:
    server = await make_client(max_batch_size="100")
    async with IdClient(base_of(server), batch_size=101) as client:
        with pytest.raises(errors.InvalidArgument, match="maxBatchSize is 100"):
            await client.next_id()


async def test_clock_moved_backward_is_raised_then_serving_resumes(
    make_client: MakeClient,
) -> None:
    clock = FakeClock(wall_ms=1_800_000_000_000)
    server = await make_client(clock=clock)
    async with IdClient(base_of(server), batch_size=10, low_water=0.0, pipeline=1) as client:
        before = await client.next_ids(10)
        clock.set_wall_ms(clock.wall_ms() - 50)
        with pytest.raises(errors.ClockMovedBackward) as refused:
            await client.next_id()
        assert isinstance(refused.value, errors.Unavailable)
        assert refused.value.behind_ms == 50
        assert refused.value.retry_after >= 1
        clock.advance(0.051)
        after = await client.next_id()
    assert isinstance(after, int)
    assert all(isinstance(v, int) and v < after for v in before)


async def test_connection_refused_is_unavailable_naming_the_address() -> None:
    base = f"http://127.0.0.1:{processes.free_port()}"
    async with IdClient(base, timeout=2.0) as client:
        with pytest.raises(SidecarUnreachable, match=re.escape(base)) as refused:
            await client.next_id()
        with pytest.raises(BufferEmpty):
            client.take()
    assert isinstance(refused.value, errors.Unavailable)
    assert refused.value.reason == "not_ready"
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidArgument("bad count"),
        errors.Unauthorized("who"),
        errors.NotFound("no route"),
        errors.UnknownTag("nope", ["a", "b"]),
        errors.RateLimited("slow down", retry_after=3),
        errors.LeaseLost("lease gone", retry_after=2),
        errors.WorkerIdsExhausted("all taken"),
        errors.SegmentExhausted("dry"),
        errors.NotReady("starting"),
        errors.ClockMovedBackward("the clock moved back 9 ms (tolerance 5 ms)", behind_ms=9),
        errors.StorageError("db down"),
    ],
)
def test_every_sidecar_error_maps_back_to_its_type(error: errors.NebulaIdError) -> None:
    """The sidecar's own mapping, read back by the client's: the same type and message."""
    response = http_errors.error_response(error)
    assert isinstance(response.body, bytes)
    back = answers.error_from(
        response.status,
        response.body,
        retry_after=response.headers.get("Retry-After"),
        tag="nope",
    )
    expected = errors.NotReady if isinstance(error, errors.StorageError) else type(error)
    assert type(back) is expected
    assert back.message == error.message
    if isinstance(error, errors.RateLimited | errors.Unavailable):
        assert isinstance(back, errors.RateLimited | errors.Unavailable)
        assert back.retry_after == max(1, error.retry_after)
    if isinstance(error, errors.ClockMovedBackward):
        assert isinstance(back, errors.ClockMovedBackward)
        assert back.behind_ms == 9


def test_answers_that_are_not_ours() -> None:
    proxy = answers.error_from(502, b"<html>Bad Gateway</html>", retry_after=None)
    assert type(proxy) is errors.NebulaIdError
    assert "502" in proxy.message
    assert "Bad Gateway" in proxy.message
    busy = answers.error_from(503, b"", retry_after="7")
    assert isinstance(busy, errors.NotReady)
    assert busy.retry_after == 7.0
    with pytest.raises(answers.BadAnswer, match="not a batch of IDs"):
        answers.ids_from(b'{"id": "1"}', numeric=True)
    with pytest.raises(answers.BadAnswer):
        answers.ids_from(b'{"ids": ["12", "x"]}', numeric=True)
    with pytest.raises(answers.BadAnswer):
        answers.ids_from(b'{"ids": [1, 2]}', numeric=False)
    assert answers.ids_from(b'{"ids": ["12", "13"]}', numeric=True) == [12, 13]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"algorithm": "ulid"}, "algorithm"),
        ({"algorithm": "uuid7/x"}, "algorithm"),
        ({"algorithm": "segment/"}, "algorithm"),
        ({"batch_size": 0}, "batch_size"),
        ({"low_water": 1.5}, "low_water"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_are_invalid_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=named):
        IdClient(**kwargs)


# --- closing --------------------------------------------------------------------------


def prefetch_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "nebula-id-prefetch"]


async def test_close_cancels_the_fetch_in_flight_and_the_waiters_get_client_closed(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    client = IdClient(base_of(server), batch_size=10)
    waiter = asyncio.create_task(client.next_id())
    for _ in range(2):  # the waiter starts the fetch, yields once, then waits on it
        await asyncio.sleep(0)
    assert len(prefetch_tasks()) == 1
    await client.close()
    assert prefetch_tasks() == []
    with pytest.raises(ClientClosed, match="closed while waiting"):
        await waiter
    assert client.closed
    with pytest.raises(ClientClosed):
        await client.next_id()
    with pytest.raises(ClientClosed):
        client.take()
    with pytest.raises(ClientClosed):
        await client.next_ids(3)
    await client.close()  # twice is fine


async def test_context_manager_closes_its_own_connection_and_cancels_the_prefetch(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    async with IdClient(base_of(server), batch_size=20, low_water=0.5) as client:
        await client.next_id()
        while client.buffered >= 10:
            client.take()
        assert len(prefetch_tasks()) == 1  # started, not yet answered
        connection = client._connection
        assert connection is not None
        assert connection.is_open
    assert prefetch_tasks() == []
    assert client.closed
    assert client.buffered == 0
    assert not connection.is_open


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_shared_fetch(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    async with IdClient(base_of(server), batch_size=10) as client:
        impatient = asyncio.create_task(client.next_id())
        patient = asyncio.create_task(client.next_id())
        await asyncio.sleep(0)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        value = await asyncio.wait_for(patient, timeout=5)
        assert isinstance(value, int)
        assert client.requests == 1
