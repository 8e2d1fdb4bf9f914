"""Operator settings: flags over env over defaults, and clear errors."""

from __future__ import annotations

import argparse

import pytest

from nebula_id import errors
from nebula_id.config import operator as operator_settings
from nebula_id_operator import cli


def test_env_and_defaults() -> None:
    loaded = operator_settings.load(
        {},
        {
            "NEBULA_ETCD_ENDPOINTS": "http://127.0.0.1:2379, http://127.0.0.2:2379",
            "NEBULA_OPERATOR_NAMESPACES": "a,b",
            "NEBULA_POD_NAME": "op-7",
        },
    )
    assert loaded.etcd.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.2:2379")
    assert loaded.namespaces == ("a", "b")
    assert loaded.identity == "op-7"
    assert loaded.leader_ttl_seconds == 5
    assert loaded.leader_key == "/nebula-id/operator/leader"
    assert loaded.keys("ns", "p").config == "/nebula-id/pools/ns/p/config"


def test_flags_win_over_env() -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    cli.add_parser(subparsers)
    args = parser.parse_args(
        [
            "operator",
            "--etcd-endpoints",
            "http://e:1",
            "--leader-ttl-seconds",
            "7",
            "--etcd-prefix",
            "/x",
        ]
    )
    loaded = operator_settings.load(
        args,
        {"NEBULA_ETCD_ENDPOINTS": "http://ignored:1", "NEBULA_OPERATOR_LEADER_TTL_SECONDS": "9"},
    )
    assert loaded.etcd.endpoints == ("http://e:1",)
    assert loaded.leader_ttl_seconds == 7
    assert loaded.leader_key == "/x/operator/leader"


def test_etcd_is_required() -> None:
    with pytest.raises(errors.ConfigError, match="needs etcd"):
        operator_settings.load({}, {})


def test_bad_values_name_their_source() -> None:
    env = {"NEBULA_ETCD_ENDPOINTS": "http://e:1", "NEBULA_OPERATOR_PROBE_PORT": "http"}
    with pytest.raises(errors.ConfigError, match="NEBULA_OPERATOR_PROBE_PORT"):
        operator_settings.load({}, env)
    with pytest.raises(errors.ConfigError, match="leader_ttl_seconds"):
        operator_settings.load(
            {}, {"NEBULA_ETCD_ENDPOINTS": "e:1", "NEBULA_OPERATOR_LEADER_TTL_SECONDS": "1"}
        )


def test_cli_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nebula_id_operator.cli; "
        "print(sorted(m for m in ('kopf', 'aiohttp', 'asyncpg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
