"""Settings precedence (flags > env > TOML > defaults) and start-up validation."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from nebula_id import errors
from nebula_id.config import serve as settings
from nebula_id.core import pool as pools

SEED_CONFIG = """
[app]
name = "nebula-id"
host = "0.0.0.0"
port = 9000

[algorithm]
type = "segment"

[database]
url = "postgresql://user:pass@localhost/nebula"
max_connections = 10

[redis]
url = "redis://localhost"

[etcd]
endpoints = ["http://localhost:2379"]

[auth]
api_key = "your-api-key-here"

[rate_limit]
requests_per_second = 1000
"""


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    s = settings.load({}, {})
    assert (s.http.host, s.http.port, s.algorithm) == ("127.0.0.1", 8080, "snowflake")
    assert s.etcd is None
    assert not s.cluster_mode
    assert s.data_dir == pathlib.Path(".nebula-id")
    assert s.segment.tags == (pools.Tag(name="default"),)
    assert s.http.max_batch_size == 1000


def test_seed_faq_config_is_read(tmp_path: pathlib.Path) -> None:
    s = settings.load({}, {}, config_file=write(tmp_path, SEED_CONFIG))
    assert (s.http.host, s.http.port, s.algorithm) == ("0.0.0.0", 9000, "segment")
    assert s.database.url == "postgresql://user:pass@localhost/nebula"
    assert s.etcd is not None
    assert s.etcd.urls == ("http://localhost:2379",)
    assert s.auth.api_keys == ("your-api-key-here",)
    assert s.auth.rate_limit_rps == 1000.0
    assert s.cluster_mode


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, '[app]\nport = 9000\nhost = "10.0.0.1"\nmax_batch_size = 50\n')
    env = {"NEBULA_PORT": "9100", "NEBULA_HOST": "10.0.0.2", "NEBULA_CONFIG": str(path)}
    s = settings.load({"port": "9200"}, env)
    assert s.http.port == 9200  # flag
    assert s.http.host == "10.0.0.2"  # env
    assert s.http.max_batch_size == 50  # file, found through NEBULA_CONFIG
    assert s.log.level == "info"  # default


def test_argparse_namespace_with_unset_flags() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    args = parser.parse_args(["--worker-id", "7", "--tags", "orders:10:100,users"])
    s = settings.load(args, {"NEBULA_WORKER_ID": "3"})
    assert s.snowflake.worker_id == 7
    assert s.segment.tags == (
        pools.Tag(name="orders", step=10, max_step=100),
        pools.Tag(name="users", step=pools.DEFAULT_STEP, max_step=pools.DEFAULT_MAX_STEP),
    )


def test_lists_maps_and_downward_api_from_env() -> None:
    env = {
        "NEBULA_ETCD_ENDPOINTS": "127.0.0.1:2379, https://etcd:2379/",
        "NEBULA_DATABASE_URLS": "dc-a=postgresql://a/x,dc-b=postgresql://b/x",
        "NEBULA_AUTH_API_KEYS": "k1,k2",
        "NEBULA_POD_NAME": "app-0",
        "NEBULA_POD_NAMESPACE": "shop",
        "NEBULA_POOL": "ids",
    }
    s = settings.load({}, env)
    assert s.etcd is not None
    assert s.etcd.urls == ("http://127.0.0.1:2379", "https://etcd:2379")
    assert s.database.urls == {"dc-a": "postgresql://a/x", "dc-b": "postgresql://b/x"}
    assert s.auth.api_keys == ("k1", "k2")
    assert s.pod.name == "app-0"
    assert s.pool_ref() == ("shop", "ids")
    assert s.pool_keys().config == "/nebula-id/pools/shop/ids/config"


def test_database_url_dir_files_and_map_merge(tmp_path: pathlib.Path) -> None:
    (tmp_path / "dc-a").write_text("postgresql://a/x\n")
    (tmp_path / "dc-b").write_text("postgresql://b/old")
    s = settings.load({"database_url_dir": str(tmp_path)}, {"NEBULA_DATABASE_URLS": "dc-b=pg://b"})
    assert s.database.dsns() == {"dc-a": "postgresql://a/x", "dc-b": "pg://b"}
    assert s.database.configured


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        ({"port": "http"}, {}, "--port"),
        ({}, {"NEBULA_PORT": "70000"}, "port must be 1..65535"),
        ({}, {"NEBULA_ALGORITHM": "ulid"}, "NEBULA_ALGORITHM"),
        ({"max_batch_size": "0"}, {}, "max_batch_size"),
        ({"worker_id": "32"}, {}, "worker_id 32"),
        ({"datacenter_id": "-1"}, {}, "datacenter_id -1"),
        ({"tags": "Bad Tag"}, {}, "--tags"),
        ({"tags": "a:10:5"}, {}, "maxStep"),
        ({"snowflake_worker_bits": "6"}, {}, "snowflake layout"),
        ({"tls_cert_file": "/c.pem"}, {}, "tls_key_file"),
        ({}, {"NEBULA_RATE_LIMIT_RPS": "-3"}, "rate_limit_rps"),
        ({}, {"NEBULA_LOG_LEVEL": "loud"}, "NEBULA_LOG_LEVEL"),
        ({"pool": "a/b/c"}, {}, "namespace/name"),
        ({"database_urls": "dc-a"}, {}, "datacenter=dsn"),
    ],
)
def test_invalid_values_fail_naming_the_setting(
    flags: dict[str, str], env: dict[str, str], named: str
) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        settings.load(flags, env)


def test_invalid_file_value_names_file_section_and_key(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, '[app]\nport = "eighty"\n')
    with pytest.raises(errors.ConfigError, match=r"\[app\] port"):
        settings.load({}, {}, config_file=path)


def test_unknown_key_in_known_section_fails(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "[rate_limit]\nrequests_per_secnd = 5\n")
    with pytest.raises(errors.ConfigError, match="requests_per_secnd"):
        settings.load({}, {}, config_file=path)


def test_missing_or_broken_file_fails(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot be read"):
        settings.load({}, {}, config_file=tmp_path / "nope.toml")
    with pytest.raises(errors.ConfigError, match="not valid TOML"):
        settings.load({}, {}, config_file=write(tmp_path, "[app\n"))


def test_segment_tags_as_toml_tables(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        '[segment]\ntags = [{name = "orders", step = 5, max_step = 50}, "users:7"]\n',
    )
    s = settings.load({}, {}, config_file=path)
    assert s.segment.tags == (
        pools.Tag(name="orders", step=5, max_step=50),
        pools.Tag(name="users", step=7, max_step=pools.DEFAULT_MAX_STEP),
    )


def test_standalone_pool_carries_layout_tags_and_batch_limit() -> None:
    s = settings.load(
        {"tags": "a:3", "max_batch_size": "10", "datacenter_id": "2", "algorithm": "segment"}, {}
    )
    pool = s.standalone_pool()
    assert pool.algorithm == "segment"
    assert pool.datacenters[0].id == 2
    assert pool.tag("a").step == 3
    assert pool.sidecar.max_batch_size == 10
    assert pool.layout == s.snowflake.layout()
