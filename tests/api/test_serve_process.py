"""The real `nebula-id serve` as a subprocess: restarts, kill -9, the data-dir lock, TLS.

These are the standalone guarantees that only a process boundary can show: a
segment ID is never repeated after a restart, and Snowflake waits until the
clock has passed the stored high-water mark, whatever happened before.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nebula_id.core import layout as layouts
from nebula_id.standalone import mark as marks
from tests.support import http, pki, processes, waiting

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
LAYOUT = layouts.SnowflakeLayout()


class Sidecar:
    """One `nebula-id serve` process on a free port."""

    def __init__(self, data_dir: pathlib.Path, log: pathlib.Path, *flags: str) -> None:
        self.port = processes.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        self.proc = processes.spawn(
            [NEBULA_ID, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *flags],
            log_path=log,
            env=env,
        )

    def wait_up(self, path: str = "/healthz", timeout: float = 15.0) -> None:
        processes.wait_until(
            lambda: http.get(self.base + path, timeout=1.0)[0] == 200,
            what=f"the sidecar's {path}",
            proc=self.proc,
            log_path=self.log,
            timeout=timeout,
        )

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        status, body = http.get(self.base + path, timeout=5.0)
        return status, json.loads(body) if body else {}

    def ids(self, path: str) -> list[int]:
        status, body = self.get(path)
        assert status == 200, body
        values = body["ids"] if "ids" in body else [body["id"]]
        assert isinstance(values, list)
        return [int(v) for v in values]

    def terminate(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=15)
        processes.kill(self.proc)
        return code

    def kill9(self) -> None:
        processes.kill(self.proc)


@pytest.fixture
def sidecars(tmp_path: pathlib.Path) -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        processes.stop(sidecar.proc, timeout=5)


def start(sidecars: list[Sidecar], tmp_path: pathlib.Path, *flags: str) -> Sidecar:
    sidecar = Sidecar(tmp_path / "data", tmp_path / f"sidecar-{len(sidecars)}.log", *flags)
    sidecars.append(sidecar)
    sidecar.wait_up()
    return sidecar


def test_binary_is_installed() -> None:
    assert NEBULA_ID.exists(), f"{NEBULA_ID} missing: install the package (pip install -e .)"


def test_segment_ids_continue_after_restarts_without_repeating(
    sidecars: list[Sidecar], tmp_path: pathlib.Path
) -> None:
    seen: list[int] = []
    for round_ in range(3):
        sidecar = start(sidecars, tmp_path, "--tags", "orders:10:10")
        sidecar.wait_up("/readyz")
        for _ in range(5):
            seen += sidecar.ids("/v1/ids/segment/orders")
            seen += sidecar.ids("/v1/ids/segment/orders?count=6")
        if round_ == 1:
            sidecar.kill9()  # buffered ranges die with it: gaps, never repeats
        else:
            assert sidecar.terminate() == 0
    assert len(seen) == 105
    assert len(set(seen)) == len(seen)
    assert all(a < b for a, b in itertools.pairwise(seen))


def test_snowflake_after_kill9_waits_past_the_stored_mark(
    sidecars: list[Sidecar], tmp_path: pathlib.Path
) -> None:
    first = start(sidecars, tmp_path)
    first.wait_up("/readyz")
    before = first.ids("/v1/ids/snowflake?count=1000")
    first.kill9()
    stored = marks.MarkFile(tmp_path / "data").read()
    assert stored is not None
    assert stored >= LAYOUT.parse(before[-1]).timestamp_ms
    second = start(sidecars, tmp_path)
    after = poll_first_id(second)
    assert LAYOUT.parse(after).timestamp_ms > stored
    assert after > before[-1]


def test_restart_after_clock_rollback_serves_nothing_until_the_mark(
    sidecars: list[Sidecar], tmp_path: pathlib.Path
) -> None:
    """A mark 4 s ahead of the clock is what a restart after a 4 s rollback finds."""
    data = tmp_path / "data"
    data.mkdir()
    stored = time.time_ns() // 1_000_000 + 4000
    marks.MarkFile(data).write(stored)
    sidecar = start(sidecars, tmp_path)
    status, body = sidecar.get("/v1/ids/snowflake")
    assert status == 503
    error = body["error"]
    assert isinstance(error, dict)
    assert error["reason"] == "not_ready"
    assert sidecar.get("/readyz")[0] == 503
    value = poll_first_id(sidecar)
    assert LAYOUT.parse(value).timestamp_ms > stored


def poll_first_id(sidecar: Sidecar, timeout: float = 15.0) -> int:
    def first_id() -> int | None:
        status, body = sidecar.get("/v1/ids/snowflake")
        assert status in (200, 503), body
        return int(str(body["id"])) if status == 200 else None

    return waiting.eventually(first_id, timeout, what="Snowflake to become available")


def test_graceful_stop_persists_the_last_timestamp(
    sidecars: list[Sidecar], tmp_path: pathlib.Path
) -> None:
    sidecar = start(sidecars, tmp_path)
    sidecar.wait_up("/readyz")
    last = sidecar.ids("/v1/ids/snowflake?count=10")[-1]
    assert sidecar.terminate() == 0
    assert marks.MarkFile(tmp_path / "data").read() == LAYOUT.parse(last).timestamp_ms
    again = start(sidecars, tmp_path)
    assert again.ids("/v1/ids/snowflake")[0] > last


def test_second_process_on_the_same_data_dir_refuses(
    sidecars: list[Sidecar], tmp_path: pathlib.Path
) -> None:
    start(sidecars, tmp_path)
    result = subprocess.run(
        [
            NEBULA_ID,
            "serve",
            "--port",
            str(processes.free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")},
    )
    assert result.returncode == 2
    assert "is in use by another nebula-id process" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_setting_fails_at_start_naming_it(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    result = subprocess.run(
        [NEBULA_ID, "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, "NEBULA_PORT": "eighty"},
    )
    assert result.returncode == 2
    assert "NEBULA_PORT" in result.stderr


def test_tls_and_api_key(sidecars: list[Sidecar], tmp_path: pathlib.Path) -> None:
    ca = pki.CertificateAuthority()
    cert, key = ca.issue("localhost", ip_addresses=("127.0.0.1",), server=True).write(
        tmp_path, "server"
    )
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("s3cret\n")
    sidecar = Sidecar(
        tmp_path / "data",
        tmp_path / "tls.log",
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--auth-api-keys-file",
        str(keys_file),
    )
    sidecars.append(sidecar)
    sidecar.base = f"https://127.0.0.1:{sidecar.port}"
    context = ssl.create_default_context(cadata=ca.pem.cert.decode())
    processes.wait_until(
        lambda: http.get(sidecar.base + "/healthz", context=context)[0] == 200,
        what="the sidecar over TLS",
        proc=sidecar.proc,
        log_path=sidecar.log,
        timeout=15,
    )
    assert http.get(sidecar.base + "/v1/ids", context=context)[0] == 401
    status, body = http.get(
        sidecar.base + "/v1/ids", context=context, headers={"X-API-Key": "s3cret"}
    )
    assert status == 200
    assert json.loads(body)["id"].isdigit()
    assert http.get(f"http://127.0.0.1:{sidecar.port}/healthz")[0] == 0  # no plain HTTP


def test_parse_and_version_commands() -> None:
    value = LAYOUT.compose(timestamp_ms=1_800_000_000_123, datacenter=3, worker=9, sequence=42)
    result = subprocess.run(
        [NEBULA_ID, "parse", str(value)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["timestamp_ms"] == 1_800_000_000_123
    assert (parsed["datacenter"], parsed["worker"], parsed["sequence"]) == (3, 9, 42)
    custom = subprocess.run(
        [
            NEBULA_ID,
            "parse",
            "12345",
            "--snowflake-sequence-bits",
            "10",
            "--snowflake-worker-bits",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert custom.returncode == 0, custom.stderr
    assert json.loads(custom.stdout)["sequence"] == 12345 & 1023
    bad = subprocess.run([NEBULA_ID, "parse", "x1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert "not a decimal Snowflake ID" in bad.stderr
    version = subprocess.run([NEBULA_ID, "version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == "nebula-id 0.1.0"


def test_port_in_use_fails_with_a_clear_message(tmp_path: pathlib.Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [NEBULA_ID, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")},
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
