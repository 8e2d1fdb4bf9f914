"""`SyncIdClient` against the real app: threads share one ordered, repeat-free stream.

The app runs in the test's event loop, so every blocking call of the client
runs in a worker thread (`asyncio.to_thread`) while the loop serves it.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import re
import tempfile
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nebula_id import errors
from nebula_id.client import ClientClosed, SidecarUnreachable, SyncIdClient
from tests.api.conftest import MakeClient
from tests.api.test_unix_socket import serving
from tests.support import processes
from tests.support.waiting import eventually


def base_of(server: TestClient[Any, Any]) -> str:
    return str(server.make_url(""))


def increasing(values: list[Any]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


async def test_threads_share_one_stream_without_repeats_each_in_order(
    make_client: MakeClient,
) -> None:
    server = await make_client()
    client = SyncIdClient(base_of(server), batch_size=100, low_water=0.5)
    per_thread: dict[int, list[Any]] = {}
    start = threading.Barrier(8)

    def take(n: int) -> None:
        start.wait()
        per_thread[threading.get_ident()] = [client.next_id() for _ in range(n)]

    def run_threads() -> None:
        threads = [threading.Thread(target=take, args=(2_000,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        await asyncio.to_thread(run_threads)
    finally:
        await asyncio.to_thread(client.close)
    everything = [v for values in per_thread.values() for v in values]
    assert len(per_thread) == 8
    assert len(everything) == 16_000
    assert len(set(everything)) == 16_000
    assert all(increasing(values) for values in per_thread.values())
    # Two batches of 100 per round trip: about 80 trips, never one per ID.
    assert 16_000 // 200 <= client.requests <= 16_000 // 100 + 2


async def test_the_fetch_starts_below_low_water_before_the_buffer_is_empty(
    make_client: MakeClient,
) -> None:
    server = await make_client()

    def scenario() -> tuple[int, int]:
        with SyncIdClient(base_of(server), batch_size=100, low_water=0.5, pipeline=1) as client:
            first = client.next_id()
            assert isinstance(first, int)
            while client.buffered > 50:
                client.next_id()
            requests_at_mark = client.requests
            client.next_id()  # at the mark: wakes the fetcher
            eventually(lambda: client.buffered > 60, 10, what="the next batch, IDs still buffered")
            return requests_at_mark, client.buffered

    requests_at_mark, buffered = await asyncio.to_thread(scenario)
    assert requests_at_mark == 1
    assert buffered > 60, "the next batch arrived while IDs were still buffered"


async def test_uuids_segments_and_the_unix_socket(tmp_path: pathlib.Path) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="nid-") as folder,
        serving(tmp_path, pathlib.Path(folder) / "s.sock", "--tags", "orders:50") as base,
    ):
        path = str(pathlib.Path(folder) / "s.sock")

        def scenario() -> tuple[list[Any], list[Any], list[Any]]:
            with (
                SyncIdClient(f"unix://{path}", algorithm="snowflake", batch_size=10) as sock,
                SyncIdClient(base, algorithm="segment/orders", batch_size=10) as seg,
                SyncIdClient(unix_socket=path, algorithm="uuid7", batch_size=5) as uuid7,
            ):
                return sock.next_ids(35), seg.next_ids(35), uuid7.next_ids(12)

        snowflakes, segments, uuid7s = await asyncio.to_thread(scenario)
    assert increasing(snowflakes)
    assert segments == list(range(segments[0], segments[0] + 35))
    assert len(set(uuid7s)) == 12
    assert all(isinstance(u, str) and u[14] == "7" for u in uuid7s)


async def test_errors_map_to_our_types_and_are_not_sticky(make_client: MakeClient) -> None:
    server = await make_client(auth_api_keys="secret", tags="orders")
    base = base_of(server)

    def scenario() -> None:
        with SyncIdClient(base, batch_size=10) as anonymous:
            with pytest.raises(errors.Unauthorized):
                anonymous.next_id()
            with pytest.raises(errors.Unauthorized):
                anonymous.next_id()  # asked again, refused again
        with (
            SyncIdClient(base, algorithm="segment/nope", api_key="secret") as unknown,
            pytest.raises(errors.UnknownTag, match="known tags: orders"),
        ):
            unknown.next_id()
        with (
            SyncIdClient(base, batch_size=1001, api_key="secret") as too_big,
            pytest.raises(errors.InvalidArgument, match="maxBatchSize is 1000"),
        ):
            too_big.next_id()
        with SyncIdClient(base, batch_size=10, api_key="secret") as fine:
            assert isinstance(fine.next_id(), int)

    await asyncio.to_thread(scenario)


def test_an_unreachable_sidecar_and_a_closed_client() -> None:
    base = f"http://127.0.0.1:{processes.free_port()}"
    client = SyncIdClient(base, timeout=2.0)
    with pytest.raises(SidecarUnreachable, match=re.escape(base)) as refused:
        client.next_id()
    assert isinstance(refused.value, errors.Unavailable)
    client.close()
    with pytest.raises(ClientClosed):
        client.next_id()
    client.close()  # twice is fine


async def test_close_wakes_a_waiting_thread_with_client_closed(make_client: MakeClient) -> None:
    server = await make_client(rate_limit_rps="0.001", rate_limit_burst="5")
    client = SyncIdClient(base_of(server), batch_size=5, pipeline=1)
    outcome: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                client.next_id()
        except BaseException as e:
            outcome.append(e)

    first = await asyncio.to_thread(client.next_id)  # one batch: every token
    assert isinstance(first, int)
    with pytest.raises(errors.RateLimited):
        await asyncio.to_thread(lambda: [client.next_id() for _ in range(5)])
    thread = threading.Thread(target=drain)
    thread.start()
    await asyncio.to_thread(client.close)
    await asyncio.to_thread(thread.join, 10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], ClientClosed | errors.RateLimited)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"algorithm": "uuid9"}, "algorithm must be"),
        ({"batch_size": 0}, "batch_size"),
        ({"low_water": 1.5}, "low_water"),
        ({"timeout": 0}, "timeout"),
        ({"pipeline": 9}, "pipeline"),
    ],
)
def test_bad_settings_are_invalid_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=named):
        SyncIdClient(**kwargs)
