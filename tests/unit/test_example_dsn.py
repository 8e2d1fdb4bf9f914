"""The example database Secret asks for TLS with a verified server certificate."""

from __future__ import annotations

import urllib.parse

import yaml
from tests.support.binaries import REPO_ROOT


def test_the_example_dsn_verifies_the_server() -> None:
    secret = yaml.safe_load((REPO_ROOT / "examples" / "database-secret.yaml").read_text())
    dsn = urllib.parse.urlsplit(secret["stringData"]["dsn"])
    assert dsn.scheme == "postgresql"
    assert urllib.parse.parse_qs(dsn.query)["sslmode"] == ["verify-full"]
