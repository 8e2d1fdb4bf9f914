"""Only the pod itself can call the ID API; other clients reach health and nothing else.

A real `nebula-id serve` as the injection starts it: the ID API on 127.0.0.1,
the probe server on every address.  Another client of the machine, reaching it
through an address other than 127.0.0.1 (here 127.0.0.2, which a socket bound
to 127.0.0.1 does not accept, just as it does not accept the pod IP), gets no
connection to the ID API, and from the probe port only /healthz and /readyz.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import http, processes

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")


class Served:
    def __init__(self, tmp_path: pathlib.Path, *, metrics: bool) -> None:
        self.port, self.probe = processes.free_port(), processes.free_port()
        self.log = tmp_path / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env |= {
            "NEBULA_HOST": "127.0.0.1",
            "NEBULA_PORT": str(self.port),
            "NEBULA_PROBE_PORT": str(self.probe),
            "NEBULA_PROBE_METRICS": "true" if metrics else "false",
            "NEBULA_DATA_DIR": str(tmp_path / "data"),
        }
        self.proc = processes.spawn([str(NEBULA_ID), "serve"], log_path=self.log, env=env)
        processes.wait_until(
            lambda: http.get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200,
            what="nebula-id serve",
            proc=self.proc,
            log_path=self.log,
            timeout=20,
        )


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[Served]:
    server = Served(tmp_path, metrics=False)
    try:
        yield server
    finally:
        processes.stop(server.proc)


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (from /proc/net/tcp)."""
    found = set()
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state = fields[1], fields[3]
        host_hex, port_hex = address.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(host_hex)[::-1]))
    return found


def test_the_id_api_answers_on_loopback_only(served: Served) -> None:
    status, body = http.get(f"http://127.0.0.1:{served.port}/v1/ids/uuid4")
    assert status == 200
    assert json.loads(body)["id"]
    assert listening_addresses(served.port) == {"127.0.0.1"}
    assert listening_addresses(served.probe) == {"0.0.0.0"}
    assert refused("127.0.0.2", served.port)


def test_the_probe_port_serves_health_and_nothing_else(served: Served) -> None:
    probe = f"http://127.0.0.2:{served.probe}"
    assert http.get(probe + "/healthz")[0] == 200
    status, body = http.get(probe + "/readyz")
    assert status == 200, body
    assert json.loads(body)["status"] == "ready"
    for path in ("/v1/ids", "/v1/ids/uuid4", "/v1/ids/snowflake?count=10", "/v1/info", "/metrics"):
        status, body = http.get(probe + path)
        assert status == 404, (path, body)
        assert json.loads(body)["error"]["code"] == "not_found"
        assert b'"id"' not in body


def test_metrics_join_the_probe_port_only_when_asked(tmp_path: pathlib.Path) -> None:
    server = Served(tmp_path, metrics=True)
    try:
        started = time.monotonic()
        status, body = http.get(f"http://127.0.0.2:{server.probe}/metrics")
        assert status == 200
        assert b"# TYPE" in body
        assert http.get(f"http://127.0.0.2:{server.probe}/v1/ids")[0] == 404
        print(f"metrics on the probe port after {time.monotonic() - started:.3f} s")
    finally:
        processes.stop(server.proc)
