"""The one loader: flag > env > TOML > default for every concern, errors naming the source."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from nebula_id import cli as sidecar_cli
from nebula_id import errors
from nebula_id.config import loader
from nebula_id.config import operator as operator_config

ETCD = {"NEBULA_ETCD_ENDPOINTS": "etcd:2379"}


def operator_args(*argv: str) -> argparse.Namespace:
    return sidecar_cli.build_parser().parse_args(["operator", *argv])


# --- the mechanism -------------------------------------------------------------------


def test_sources_are_asked_in_order_and_name_themselves(tmp_path: pathlib.Path) -> None:
    field = loader.Field("port", loader.integer, ("app.port",))
    path = tmp_path / "config.toml"
    path.write_text("[app]\nport = 3\n")
    kwargs = {"config_file": path, "toml_fields": (field,)}
    both = loader.sources({"port": "1"}, {"NEBULA_PORT": "2"}, **kwargs)
    assert both.lookup(field) == ("1", "--port")
    assert loader.sources({}, {"NEBULA_PORT": "2"}, **kwargs).lookup(field) == ("2", "NEBULA_PORT")
    assert loader.sources({}, {}, **kwargs).lookup(field) == (3, f"{path} [app] port")
    assert loader.sources({}, {}).lookup(field) is None
    path.write_text('[app]\nport = "three"\n')
    with pytest.raises(errors.ConfigError, match=r"config.toml \[app\] port: must be an integer"):
        loader.sources({}, {}, **kwargs).value(field)


def test_credentials_can_be_kept_off_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    fields = (loader.Field("user", loader.text), loader.Field("password", loader.text))
    loader.add_arguments(parser, fields, without_flag={"password"})
    assert parser.parse_args(["--user", "u"]).user == "u"
    with pytest.raises(SystemExit):
        parser.parse_args(["--password", "p"])
    # The sidecar's etcd password and API keys come from env or file only.
    with pytest.raises(SystemExit):
        sidecar_cli.build_parser().parse_args(["serve", "--etcd-password", "p"])


# --- the operator --------------------------------------------------------------------


def test_operator_flags_beat_env_beat_defaults() -> None:
    env = {
        **ETCD,
        "NEBULA_OPERATOR_LEADER_TTL_SECONDS": "9",
        "NEBULA_OPERATOR_PROBE_PORT": "9000",
        "NEBULA_LOG_LEVEL": "warning",
        "NEBULA_LOG_FORMAT": "json",
    }
    loaded = operator_config.load(
        operator_args("--leader-ttl-seconds", "7", "--log-level", "debug"), env
    )
    assert loaded.leader_ttl_seconds == 7  # flag
    assert loaded.probe_port == 9000  # env
    assert loaded.resync_seconds == 30.0  # default
    assert (loaded.log.level, loaded.log.format) == ("debug", "json")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (("--probe-port", "http"), {}, "--probe-port"),
        ((), {"NEBULA_OPERATOR_PROBE_PORT": "http"}, "NEBULA_OPERATOR_PROBE_PORT"),
        ((), {"NEBULA_OPERATOR_WEBHOOK_ENABLED": "maybe"}, "NEBULA_OPERATOR_WEBHOOK_ENABLED"),
        ((), {"NEBULA_LOG_FORMAT": "yaml"}, "NEBULA_LOG_FORMAT"),
        (("--log-level", "loud"), {}, "--log-level"),
        ((), {"NEBULA_OPERATOR_LEADER_TTL_SECONDS": "1"}, "leader_ttl_seconds must be 2..60"),
    ],
)
def test_operator_errors_name_their_source(
    argv: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        operator_config.load(operator_args(*argv), {**ETCD, **env})


# --- the webhook ---------------------------------------------------------------------


def test_webhook_settings_come_with_the_operators() -> None:
    loaded = operator_config.load(
        operator_args("--webhook-port", "9555"),
        {
            **ETCD,
            "NEBULA_OPERATOR_WEBHOOK_ENABLED": "true",
            "NEBULA_OPERATOR_WEBHOOK_PORT": "1",
            "NEBULA_POD_NAMESPACE": "ids-system",
            "NEBULA_WEBHOOK_SECRET_NAME": "tls",
            "NEBULA_WEBHOOK_URL": "",  # blank: not given
        },
    )
    hook = loaded.webhook
    assert (hook.enabled, hook.port) == (True, 9555)  # the operator's flag wins over its env
    assert hook.namespace == "ids-system"  # the pod's namespace by default
    assert hook.secret_name == "tls"
    assert hook.url is None
    own = operator_config.load(
        {}, {**ETCD, "NEBULA_POD_NAMESPACE": "a", "NEBULA_WEBHOOK_NAMESPACE": "b"}
    )
    assert own.webhook.namespace == "b"


def test_webhook_errors_name_their_source() -> None:
    with pytest.raises(errors.ConfigError, match="NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS"):
        operator_config.load({}, {**ETCD, "NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS": "soon"})
    with pytest.raises(errors.ConfigError, match="webhook_check_interval_seconds"):
        operator_config.load({}, {**ETCD, "NEBULA_WEBHOOK_CHECK_INTERVAL_SECONDS": "0"})


# --- the injected sidecars -----------------------------------------------------------


def test_injected_sidecars_follow_the_operators_etcd_unless_told_otherwise() -> None:
    env = {**ETCD, "NEBULA_ETCD_PREFIX": "/env", "NEBULA_DATACENTER": "dc-b"}
    loaded = operator_config.load(
        operator_args("--etcd-endpoints", "flag:2379", "--etcd-pool-users", "true"), env
    )
    sidecar = loaded.injection
    assert sidecar.etcd_endpoints == ("flag:2379",)  # the operator's, flag over env
    assert sidecar.etcd_prefix == "/env"
    assert sidecar.datacenter == "dc-b"
    assert sidecar.etcd_pool_users
    own = operator_config.load(
        {},
        {
            **env,
            "NEBULA_SIDECAR_ETCD_ENDPOINTS": "http://inside:2379",
            "NEBULA_SIDECAR_ETCD_PREFIX": "/own",
            "NEBULA_SIDECAR_DATACENTER": "dc-c",
            "NEBULA_SIDECAR_PROBE_PORT": " ",  # blank: the default
        },
    ).injection
    assert (own.etcd_endpoints, own.etcd_prefix, own.datacenter) == (
        ("http://inside:2379",),
        "/own",
        "dc-c",
    )
    assert own.probe_port == 9180


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NEBULA_SIDECAR_PROBE_PORT": "http"}, "NEBULA_SIDECAR_PROBE_PORT"),
        ({"NEBULA_SIDECAR_RESOURCES": "memory=1Gi"}, "NEBULA_SIDECAR_RESOURCES: must be JSON"),
        ({"NEBULA_SIDECAR_RESOURCES": "[1]"}, "NEBULA_SIDECAR_RESOURCES: must be a JSON object"),
        ({"NEBULA_SIDECAR_LOG_LEVEL": "loud"}, "NEBULA_SIDECAR_LOG_LEVEL"),
        ({"NEBULA_SIDECAR_ETCD_ENDPOINTS": "ftp://e:1"}, "NEBULA_SIDECAR_ETCD_ENDPOINTS"),
    ],
)
def test_injection_errors_name_their_source(env: dict[str, str], named: str) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        operator_config.load({}, {**ETCD, **env})
