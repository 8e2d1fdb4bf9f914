"""The audit log, and start-up refusals that protect the data dir's state."""

from __future__ import annotations

import json
import pathlib

import pytest

from nebula_id import errors
from nebula_id.standalone import mark as marks
from tests.api.conftest import MakeClient


async def test_audit_log_has_one_json_line_per_request_without_the_key(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    client = await make_client(audit_log=str(audit), auth_api_keys="top-secret")
    await client.get("/v1/ids?count=2", headers={"X-API-Key": "top-secret"})
    await client.get("/v1/ids/uuid7")
    await client.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["path"], r["status"]) for r in records] == [
        ("/v1/ids?count=2", 200),
        ("/v1/ids/uuid7", 401),
    ]
    assert records[0]["key"] is not None
    assert records[1]["key"] is None
    assert "top-secret" not in audit.read_text()


async def test_unopenable_audit_log_fails_at_start(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(errors.ConfigError, match="audit_log"):
        await make_client(audit_log=str(tmp_path / "missing" / "audit.jsonl"))


async def test_damaged_mark_file_refuses_to_start(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / marks.MARK_FILE).write_text("{not json")
    with pytest.raises(errors.ConfigError, match="damaged"):
        await make_client(data_dir=str(data))


async def test_epoch_in_the_future_fails_at_start(make_client: MakeClient) -> None:
    with pytest.raises(errors.ConfigError, match="snowflake_epoch"):
        await make_client(snowflake_epoch="2999-01-01T00:00:00Z")


async def test_mark_on_disk_stays_ahead_of_every_issued_id(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    from nebula_id.core import layout as layouts

    client = await make_client()
    ids = [int(v) for v in (await (await client.get("/v1/ids?count=1000")).json())["ids"]]
    stored = marks.MarkFile(tmp_path / "data").read()
    assert stored is not None
    assert layouts.SnowflakeLayout().parse(ids[-1]).timestamp_ms <= stored


async def test_changing_the_layout_of_a_used_data_dir_refuses(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    client = await make_client()
    assert (await client.get("/v1/ids")).status == 200
    await client.close()
    with pytest.raises(errors.ConfigError, match="could repeat IDs"):
        await make_client(snowflake_epoch="2025-01-01T00:00:00Z")
    with pytest.raises(errors.ConfigError, match="could repeat IDs"):
        await make_client(snowflake_worker_bits="6", snowflake_sequence_bits="11")
    again = await make_client()  # the original layout still starts
    assert (await again.get("/v1/ids")).status == 200
