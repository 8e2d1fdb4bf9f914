"""Where the single-ID path's cost over the aiohttp floor goes, on the wire.

`bench.http` compares whole servers: the sidecar against a plain aiohttp app
returning a constant.  This part splits the difference.  One sidecar process
(the real app from `build_app`, standalone, metrics on, served by
`nebula_id.http.server` on uvloop) also registers a few extra routes, each
adding one piece of the single-ID path to a constant answer:

- ``/hello``: a constant, in our process, through our router and runner;
- ``/guarded``: the constant through the error guard (the request's one coroutine);
- ``/timed``: the guard and the latency histogram;
- ``/bare-id``: ``next_id()`` and the text answer with our headers, no guard, no stats;
- ``/guarded-id``: the real Snowflake handler through the guard (no latency timing);
- ``/v1/ids/snowflake``: the real route.

Each is measured as server CPU time per request under ``wrk -t1 -c16`` (server
on core 0, wrk on core 1), against the plain "hello" app in the same rounds.
If ``/hello`` costs what the floor costs, the process, its runner and its
router add nothing, and the gap is the per-request work of the route.

    python -m bench.gap [--seconds 3] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile

from bench.http import HELLO_APP, free_port, pinned, start, stop, wait_for, wrk

VARIANTS_APP = """
import sys, tempfile
from aiohttp import web
from nebula_id.config import serve
from nebula_id.http import app as app_mod, errors as http_errors, keys, latency, listen
from nebula_id.http import routes, server

def hello(request):
    return web.Response(text="hello")

async def async_hello(request):
    return hello(request)

async def bare_id(request):
    value = request.app[keys.SNOWFLAKE].next_id()
    return web.Response(body=b"%d\\n" % value, headers=routes._TEXT_HEADERS)

port = int(sys.argv[1])
settings = serve.load({"data_dir": tempfile.mkdtemp(), "port": port}, {})
app = app_mod.build_app(settings)
timing = latency.RequestLatency()
app.router.add_get("/hello", async_hello)
app.router.add_get("/guarded", http_errors.guarded(hello))
app.router.add_get("/timed", http_errors.guarded(timing.timed("/v1/ids/snowflake", hello)))
app.router.add_get("/bare-id", bare_id)
app.router.add_get("/guarded-id", http_errors.guarded(routes.snowflake))
server.run(app, host="127.0.0.1", port=port, loop=listen.new_event_loop())
"""

PATHS = ("/hello", "/guarded", "/timed", "/bare-id", "/guarded-id", "/v1/ids/snowflake")
HEADERS = ("-H", "Accept: text/plain")


def measure(seconds: float, rounds: int) -> dict[str, float]:
    """Median server CPU µs per request of the floor and of each path, interleaved."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="nebula-bench-gap-"))
    (workdir / "hello.py").write_text(HELLO_APP)
    (workdir / "variants.py").write_text(VARIANTS_APP)
    floor_port, ours_port = free_port(), free_port()
    floor = start(
        [*pinned(0), sys.executable, str(workdir / "hello.py"), str(floor_port), "uvloop"],
        workdir / "hello.log",
    )
    ours = start(
        [*pinned(0), sys.executable, str(workdir / "variants.py"), str(ours_port)],
        workdir / "variants.log",
    )
    runs: dict[str, list[float]] = {"floor": [], **{path: [] for path in PATHS}}
    try:
        wait_for(f"http://127.0.0.1:{floor_port}/", floor)
        wait_for(f"http://127.0.0.1:{ours_port}/readyz", ours)
        for _ in range(rounds):
            got = wrk(
                f"http://127.0.0.1:{floor_port}/",
                seconds=seconds,
                connections=16,
                server_pid=floor.pid,
                headers=HEADERS,
            )
            runs["floor"].append(got["cpu_us"])
            for path in PATHS:
                got = wrk(
                    f"http://127.0.0.1:{ours_port}{path}",
                    seconds=seconds,
                    connections=16,
                    server_pid=ours.pid,
                    headers=HEADERS,
                )
                if got["non_2xx"]:
                    raise SystemExit(f"bench.gap: {path} answered {got['non_2xx']:.0f} errors")
                runs[path].append(got["cpu_us"])
    finally:
        stop(floor)
        stop(ours)
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gap", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = measure(args.seconds, args.rounds)
    if args.json:
        print(json.dumps(figures))
        return 0
    floor = figures["floor"]
    print(f"{'server CPU us per request (median of rounds)':52s} {'us':>7s} {'over floor':>11s}")
    print(f"{'floor: plain aiohttp hello on uvloop':52s} {floor:7.2f}")
    for path in PATHS:
        cost = figures[path]
        print(f"{'ours ' + path:52s} {cost:7.2f} {cost - floor:+10.2f}  ({floor / cost:.2f}x)")
    load = os.getloadavg()[0]
    print(f"(wrk -t1 -c16 on core 1, servers on core 0; load average {load:.1f} on 2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
