"""Requests aiohttp cannot parse get the API's JSON 400, on every listener of a real sidecar.

A request line or header line over 8190 bytes, or more than 128 headers, is
refused by aiohttp's parser before any route runs; the sidecar still answers
it in its ``{"error": {...}}`` shape, counts it in its metrics, logs one line
without the request's bytes, and keeps serving and shutting down as before.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import sys
from collections.abc import Iterator

import pytest

from tests.support import http, processes

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")

MARK = b"q7Zx"  # a recognisable filler: it must not reach the log
OVERSIZED = {
    "a 9000-byte path": b"GET /" + MARK * 2250 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a 9000-byte header": b"GET /v1/ids HTTP/1.1\r\nHost: x\r\nX-Big: " + MARK * 2250 + b"\r\n\r\n",
    "200 headers": b"GET /v1/ids HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, MARK) for i in range(200))
    + b"\r\n",
}


class Served:
    """`nebula-id serve` with a probe port and a Unix socket."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.port, self.probe = processes.free_port(), processes.free_port()
        self.socket = str(tmp_path / "nebula-id.sock")
        self.log = tmp_path / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        self.proc = processes.spawn(
            [
                str(NEBULA_ID),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--probe-host",
                "127.0.0.1",
                "--probe-port",
                str(self.probe),
                "--unix-socket",
                self.socket,
                "--data-dir",
                str(tmp_path / "data"),
            ],
            log_path=self.log,
            env=env,
        )
        processes.wait_until(
            lambda: http.get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200,
            what="nebula-id serve",
            proc=self.proc,
            log_path=self.log,
            timeout=20,
        )


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[Served]:
    server = Served(tmp_path)
    try:
        yield server
    finally:
        processes.stop(server.proc)


def exchange(address: tuple[str, int] | str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw `request` on a new connection; the status, headers and body of the answer."""
    if isinstance(address, str):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(address)
    else:
        conn = socket.create_connection(address, timeout=10)
    with conn:
        conn.sendall(request)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if sep and length and len(body) >= length[0]:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("listener", ["api", "probe", "unix"])
def test_oversized_requests_get_the_json_400(served: Served, listener: str) -> None:
    addresses: dict[str, tuple[str, int] | str] = {
        "api": ("127.0.0.1", served.port),
        "probe": ("127.0.0.1", served.probe),
        "unix": served.socket,
    }
    address = addresses[listener]
    for what, request in OVERSIZED.items():
        status, headers, body = exchange(address, request)
        assert status == 400, (what, body)
        assert headers["content-type"].startswith("application/json"), (what, headers)
        assert headers["server"] == "nebula-id", (what, headers)
        error = json.loads(body)["error"]
        assert set(error) == {"code", "reason", "message"}, (what, error)
        assert error["code"] == error["reason"] == "invalid_argument", (what, error)
        expected = "headers than the limit" if what == "200 headers" else "longer than 8190 bytes"
        assert expected in error["message"], (what, error)
        assert MARK.decode() not in error["message"]
    status, _, body = exchange(address, b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    assert json.loads(body)["error"]["message"] == "malformed request (BadHttpMethod)"
    # A normal request on a new connection is served.
    fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, body = exchange(address, fine)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_they_are_counted_logged_in_one_line_and_shutdown_stays_graceful(
    served: Served,
) -> None:
    for request in OVERSIZED.values():
        assert exchange(("127.0.0.1", served.port), request)[0] == 400
    status, metrics = http.get(f"http://127.0.0.1:{served.port}/metrics")
    assert status == 200
    assert (
        'nebula_id_http_errors_total{code="invalid_argument",'
        'reason="invalid_argument",status="400"} 3.0'
    ) in metrics.decode()
    served.proc.terminate()
    assert served.proc.wait(timeout=15) == 0
    log = served.log.read_text()
    assert log.count("unparsable request from 127.0.0.1 answered 400") == 3, log
    assert "Traceback" not in log, log
    assert MARK.decode() not in log, log
    assert not os.path.exists(served.socket)
