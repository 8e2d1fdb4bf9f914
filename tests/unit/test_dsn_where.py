"""`postgres.where` names a DSN's host and port and nothing else of it."""

from __future__ import annotations

import pytest

from nebula_id.storage import postgres

SECRET = "s3cretMARK"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            f"postgresql://u{SECRET}:{SECRET}@db.example:5433/d{SECRET}?password={SECRET}",
            "db.example:5433",
        ),
        (f"postgres://{SECRET}@10.0.0.7/x", "10.0.0.7"),
        (f"postgresql:///d{SECRET}?host=/run/postgresql&password={SECRET}", "/run/postgresql"),
        (
            f"host=pg.ns.svc port=5432 user={SECRET} password='{SECRET}' dbname={SECRET}",
            "pg.ns.svc:5432",
        ),
        (SECRET, "the configured database"),
        (f"postgresql://u:{SECRET}@[::1/{SECRET}", "the configured database"),
        (f"postgresql://u:{SECRET}@h{SECRET}'\"<x>:1/db", "the configured database"),
    ],
)
def test_where_names_only_the_host(dsn: str, expected: str) -> None:
    assert postgres.where(dsn) == expected


def test_failure_is_the_class_and_code_never_the_text() -> None:
    error = ConnectionRefusedError(111, f"connect to {SECRET} refused")
    assert postgres.failure(error) == "ConnectionRefusedError (ECONNREFUSED)"
    assert postgres.failure(ValueError(SECRET)) == "ValueError"
