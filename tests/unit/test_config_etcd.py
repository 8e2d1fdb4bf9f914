"""One etcd endpoint parser for every process: same settings, same URLs, same TLS choice."""

from __future__ import annotations

import argparse

import pytest

from nebula_id import cli as sidecar_cli
from nebula_id import errors
from nebula_id.config import etcd as etcd_config
from nebula_id.config import operator as operator_config
from nebula_id.config import poolcmd, serve
from nebula_id.core import poolspec
from nebula_id.etcd import client as etcd_client
from nebula_id_operator import injection

CA = "/etc/ca.pem"


def sidecar_etcd(env: dict[str, str]) -> etcd_config.EtcdSettings:
    settings = serve.load({}, {"NEBULA_POOL": "ns/p", **env})
    assert settings.etcd is not None
    return settings.etcd


def operator_etcd(env: dict[str, str]) -> etcd_config.EtcdSettings:
    return operator_config.load({}, env).etcd


def pool_command_etcd(env: dict[str, str]) -> etcd_config.EtcdSettings:
    return poolcmd.load({}, env).require_etcd()


@pytest.mark.parametrize(
    ("env", "urls", "tls"),
    [
        # A CA file says the server speaks TLS: a bare endpoint is dialled over https.
        ({"NEBULA_ETCD_ENDPOINTS": "etcd:2379", "NEBULA_ETCD_CA_FILE": CA},
         ("https://etcd:2379",), True),
        ({"NEBULA_ETCD_ENDPOINTS": "etcd:2379"}, ("http://etcd:2379",), False),
        # An explicit scheme always wins.
        ({"NEBULA_ETCD_ENDPOINTS": "http://etcd:2379/", "NEBULA_ETCD_CA_FILE": CA},
         ("http://etcd:2379",), True),
        ({"NEBULA_ETCD_ENDPOINTS": " https://a:1, b:2 ,"}, ("https://a:1", "http://b:2"), False),
        (
            {
                "NEBULA_ETCD_ENDPOINTS": "a:1,b:2",
                "NEBULA_ETCD_CERT_FILE": "/c.pem",
                "NEBULA_ETCD_KEY_FILE": "/k.pem",
            },
            ("https://a:1", "https://b:2"),
            True,
        ),
    ],
)  # fmt: skip
def test_sidecar_operator_and_pool_command_dial_the_same_urls(
    env: dict[str, str], urls: tuple[str, ...], tls: bool
) -> None:
    seen = [load(env) for load in (sidecar_etcd, operator_etcd, pool_command_etcd)]
    assert seen[0] == seen[1] == seen[2]
    for settings in seen:
        assert settings.urls == urls
        assert settings.tls is tls


def test_the_same_flags_give_the_same_urls_in_every_process() -> None:
    argv = ["--etcd-endpoints", "etcd-0:2379,etcd-1:2379", "--etcd-ca-file", CA]
    parser = sidecar_cli.build_parser()
    sidecar = serve.load(parser.parse_args(["serve", "--pool", "ns/p", *argv]), {})
    operator = operator_config.load(parser.parse_args(["operator", *argv]), {})
    pool = poolcmd.load(parser.parse_args(["pool", "get", "p", *argv]), {})
    assert sidecar.etcd == operator.etcd == pool.etcd
    assert operator.etcd.urls == ("https://etcd-0:2379", "https://etcd-1:2379")


def test_the_client_takes_the_one_settings_class_and_parser() -> None:
    # The dialling itself: tests/integration/test_etcd_client.py (a TLS etcd).
    assert etcd_client.EtcdSettings is etcd_config.EtcdSettings
    assert etcd_client.parse_endpoints is etcd_config.parse_endpoints


def test_an_injected_sidecar_dials_what_its_operator_dials() -> None:
    operator = operator_config.load(
        {},
        {
            "NEBULA_ETCD_ENDPOINTS": "etcd:2379",
            "NEBULA_ETCD_CA_FILE": CA,
            "NEBULA_SIDECAR_ETCD_TLS_SECRET": "etcd-tls",
        },
    )
    pool = poolspec.parse_spec({}, namespace="shop", name="orders")
    container = injection.build(pool, operator.injection).container
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    sidecar = sidecar_etcd(env)
    assert sidecar.urls == operator.etcd.urls == ("https://etcd:2379",)
    assert sidecar.tls


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEBULA_ETCD_ENDPOINTS": "ftp://etcd:2379"}, "NEBULA_ETCD_ENDPOINTS: endpoint"),
        ({"NEBULA_ETCD_ENDPOINTS": "a:1", "NEBULA_ETCD_CERT_FILE": "/c"}, "etcd_key_file"),
        ({"NEBULA_ETCD_ENDPOINTS": "a:1", "NEBULA_ETCD_USERNAME": "u"}, "etcd_password"),
    ],
)
def test_bad_etcd_settings_fail_alike_everywhere(env: dict[str, str], message: str) -> None:
    for load in (sidecar_etcd, operator_etcd, pool_command_etcd):
        with pytest.raises(errors.ConfigError, match=message):
            load(env)


def test_without_endpoints_the_sidecar_is_standalone_and_the_others_say_how() -> None:
    assert serve.load({}, {"NEBULA_ETCD_CA_FILE": CA}).etcd is None
    with pytest.raises(errors.ConfigError, match="--etcd-endpoints"):
        operator_config.load({}, {})
    with pytest.raises(errors.ConfigError, match="--etcd-endpoints"):
        poolcmd.load(argparse.Namespace(), {}).require_etcd()
