"""The OpenAPI document matches the sidecar: schemathesis against a live one, auth on.

A real `nebula-id serve` (Snowflake by default, a segment tag, API keys, a
rate limit) serves `/openapi.json`; schemathesis generates requests from it,
valid and invalid, and checks every answer: no 5xx, status codes, content
types, headers and bodies as documented, auth really enforced.  The run is
bounded (a fixed seed and example count, well under a minute here).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import http, processes

BIN = pathlib.Path(sys.executable).parent
KEY = "schema-key-0123456789"


@pytest.fixture
def sidecar(tmp_path: pathlib.Path) -> Iterator[str]:
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(tmp_path / "data"),
        "NEBULA_TAGS": "orders",
        "NEBULA_AUTH_API_KEYS_FILE": str(keys),
        "NEBULA_RATE_LIMIT_RPS": "100000",
        "NEBULA_RATE_LIMIT_BURST": "100000",
    }
    log = tmp_path / "serve.log"
    proc = processes.spawn([str(BIN / "nebula-id"), "serve"], log_path=log, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(
            lambda: http.get(base + "/readyz")[0] == 200,
            what="nebula-id serve",
            proc=proc,
            log_path=log,
            timeout=20,
        )
        yield base
    finally:
        processes.stop(proc)


def test_the_document_is_served_without_a_key_and_names_the_real_limits(sidecar: str) -> None:
    status, body = http.get(sidecar + "/openapi.json")
    assert status == 200
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    count = doc["paths"]["/v1/ids"]["get"]["parameters"][0]
    assert count["schema"]["maximum"] == 1000
    assert doc["security"] == [{"apiKey": []}, {"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    # aiohttp's parser refuses oversized requests on every path, in the error shape.
    unparsable = doc["paths"]["/healthz"]["get"]["responses"]["400"]
    assert "8190 bytes" in unparsable["description"]
    assert unparsable["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_schemathesis_finds_no_answer_outside_the_schema(
    sidecar: str, tmp_path: pathlib.Path
) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(BIN / "st"), "run", sidecar + "/openapi.json",
            "--header", f"X-API-Key: {KEY}",
            "--checks", "all",
            "--max-examples", "40",
            "--seed", "20261130",
            "--max-response-time", "5",
            "--workers", "1",
        ],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )  # fmt: skip
    took = time.monotonic() - started
    summary = proc.stdout[-3000:]
    print(f"schemathesis took {took:.1f} s\n{summary}")
    assert proc.returncode == 0, summary + proc.stderr[-2000:]
    assert "Tested: 12" in proc.stdout
    assert "No issues found" in proc.stdout or " passed" in proc.stdout
