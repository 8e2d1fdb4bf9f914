"""Our own cost per single-ID request, in process, against a plain aiohttp handler.

The wire benchmarks (`bench.http`) compare whole servers, so every figure
carries the machine's noise: on a shared machine the floor's CPU time per
request moved between 21 and 34 us from one run to the next.  This part takes
the network, the parser and the writer out: it builds the real app
(`build_app`, standalone, metrics on) and an aiohttp app whose one handler
returns a constant, and times ``Application._handle`` (routing, our wrappers,
the handler, the answer object) on prebuilt requests, the best of several
rounds.  The difference is what our code adds per request; set against the
floor's CPU time per request on the wire (from `bench.http`), it gives the
ratio the 0.9x target is about: ``floor / (floor + difference)``.

    python -m bench.overhead [--requests 3000] [--rounds 9] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from nebula_id.config import serve as settings_mod
from nebula_id.http.app import build_app

PATHS = {"snowflake": "/v1/ids", "segment": "/v1/ids/segment/bench"}
HEADERS = {"Accept": "text/plain"}
BATCH = 100  # requests between yields, so the Snowflake mark writer keeps up


async def best_us(app: web.Application, path: str, requests: int, rounds: int) -> float:
    """Best over `rounds` of the mean time per request of `app` answering `path`.

    A round with a refusal (a 503 while a starved Snowflake mark writer lags
    the clock) is thrown away and run again after a pause.
    """
    best = float("inf")
    done = refused = 0
    while done < rounds:
        prepared = []
        for _ in range(0, requests, BATCH):  # slow (mocks): yields so the mark writer runs
            prepared += [
                make_mocked_request("GET", path, headers=HEADERS, app=app) for _ in range(BATCH)
            ]
            await asyncio.sleep(0)
        handle = app._handle
        spent = 0.0
        status = 200
        for start in range(0, requests, BATCH):
            await asyncio.sleep(0.001)  # not timed: lets background tasks run
            began = time.perf_counter()
            for request in prepared[start : start + BATCH]:
                answer = await handle(request)
            spent += time.perf_counter() - began
            status = answer.status
            if status != 200:
                break
        if status != 200:
            refused += 1
            if refused > 50:
                raise SystemExit(f"{path} keeps answering {status}")
            await asyncio.sleep(0.2)
            continue
        done += 1
        best = min(best, spent / requests * 1e6)
    return best


async def measure(requests: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nebula-bench-overhead-") as tmp:
        settings = settings_mod.load({"data_dir": tmp, "tags": "bench:100000:1000000"}, {})
        app = build_app(settings, registry=CollectorRegistry())
        runner = web.AppRunner(app)
        await runner.setup()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        floor_app = web.Application()
        floor_app.router.add_get("/", hello)
        floor_runner = web.AppRunner(floor_app)
        await floor_runner.setup()
        try:
            figures = {"floor_us": 0.0}
            for _ in range(2):  # interleaved; the best of both passes
                floor = await best_us(floor_app, "/", requests, rounds)
                figures["floor_us"] = min(figures["floor_us"] or floor, floor)
                for name, path in PATHS.items():
                    took = await best_us(app, path, requests, rounds)
                    figures[f"{name}_us"] = min(figures.get(f"{name}_us", took), took)
        finally:
            await runner.cleanup()
            await floor_runner.cleanup()
    for name in PATHS:
        figures[f"{name}_extra_us"] = figures[f"{name}_us"] - figures["floor_us"]
    return figures


def report(figures: dict[str, float]) -> None:
    print(f"{'in process, Application._handle per request (best of rounds)':62} {'us':>7}")
    print(f"{'floor: aiohttp handler returning a constant':62} {figures['floor_us']:>7.2f}")
    for name in PATHS:
        extra = figures[f"{name}_extra_us"]
        print(
            f"{name + ' single ID (routing, wrappers, metrics, handler)':62} "
            f"{figures[f'{name}_us']:>7.2f}  (+{extra:.2f} over the floor)"
        )
    for name in PATHS:
        extra = figures[f"{name}_extra_us"]
        ratios = ", ".join(
            f"{wire / (wire + extra):.2f}x at {wire:g} us" for wire in (21.0, 25.0, 29.0)
        )
        print(f"{name}: floor / (floor + {extra:.2f} us), by the floor's wire CPU: {ratios}")
    print(
        "(the floor's CPU per request on the wire, from bench.http, was 21-29 us in the "
        f"runs of the README; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (best taken)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, _ = parser.parse_known_args(argv)
    figures = asyncio.run(measure(max(BATCH, args.requests), max(1, args.rounds)))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
