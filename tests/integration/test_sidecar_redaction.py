"""No database secret reaches a sidecar's answers, logs, metrics or audit log.

A real `nebula-id serve` gets a DSN (URL or libpq keywords) that carries a
recognisable marker in every field, pointing at a real PostgreSQL that refuses
it; every answer, the log, /metrics and the audit log are searched for the marker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import processes
from tests.support.postgres import PostgresCluster
from tests.support.waiting import eventually_async

NEBULA_ID = str(Path(sys.executable).parent / "nebula-id")
MARK = "Qw7pSIDECARLEAK"
KEY = "test-key-0123456789abcdef"


@pytest.mark.parametrize("form", ["url", "keywords"])
async def test_no_planted_dsn_secret_reaches_answers_logs_metrics_or_audit(
    tmp_path: Path, postgres: PostgresCluster, form: str
) -> None:
    dsn = (
        f"postgresql://postgres:pw{MARK}@127.0.0.1:{postgres.port}/missing{MARK}"
        f"?password={MARK}&application_name={MARK}"
        if form == "url"
        else f"host=127.0.0.1 port={postgres.port} user=u{MARK} password={MARK} dbname=d{MARK}"
    )
    port = processes.free_port()
    audit = tmp_path / "audit.log"
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(KEY + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_ALGORITHM": "segment",
        "NEBULA_TAGS": "orders:500:4000",
        "NEBULA_DATABASE_URL": dsn,
        "NEBULA_AUDIT_LOG": str(audit),
        "NEBULA_AUTH_API_KEYS": KEY,
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(tmp_path / "data"),
        "NEBULA_LOG_LEVEL": "debug",
    }
    log_path = tmp_path / "sidecar.log"
    proc = processes.spawn([NEBULA_ID, "serve"], log_path=log_path, env=env)
    answers: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def up_or_exited() -> bool:
                if proc.poll() is not None:
                    return True  # its log is checked all the same
                async with session.get(url + "/healthz") as response:
                    return response.status == 200

            try:
                await eventually_async(
                    up_or_exited,
                    30,
                    what="the sidecar to answer or exit",
                    interval=0.2,
                    ignoring=(aiohttp.ClientError,),
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\n{processes.log_tail(log_path)}") from None
            if proc.poll() is None:
                headers = {"X-API-Key": KEY}
                for path in (
                    "/v1/ids/segment/orders",
                    "/v1/ids/segment/orders?count=5",
                    "/v1/ids",
                    "/readyz",
                    "/v1/info",
                    "/metrics",
                ):
                    async with session.get(url + path, headers=headers) as response:
                        body = await response.text()
                        answers.append(f"{path} {response.status} {body}")
                assert any(a.startswith("/v1/ids/segment/orders 503") for a in answers), answers
    finally:
        processes.stop(proc)
    logs = log_path.read_text()
    audit_text = audit.read_text() if audit.exists() else ""
    assert answers or "Error" in logs, logs
    for where, text in {"answers": "\n".join(answers), "logs": logs, "audit": audit_text}.items():
        assert MARK not in text, f"the planted secret leaked into the sidecar's {where}"
    # Still useful: the host and the error class are named.
    assert f"127.0.0.1:{postgres.port}" in "\n".join(answers) + logs
