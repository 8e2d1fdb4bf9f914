"""`--log-format json`: one JSON object per line with stable keys, chosen through
the settings (flag > env > config.toml); the text format stays the default."""

from __future__ import annotations

import io
import json
import logging
import pathlib

import pytest

from nebula_id import errors, logs
from nebula_id.config import injection as injection_config
from nebula_id.config import loader
from nebula_id.config import serve as settings_mod
from nebula_id.core import poolspec
from nebula_id_operator import injection


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("nebula_id.test", logging.WARNING, __file__, 1, message, args, None)
    rec.created = 1_700_000_000.25
    rec.__dict__.update(extra)
    return rec


def test_a_json_line_has_the_stable_keys_in_order() -> None:
    line = logs.JsonFormatter(pool="shop/orders").format(record("hello %s", "world"))
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message", "pool"]
    assert entry == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "nebula_id.test",
        "message": "hello world",
        "pool": "shop/orders",
    }


def test_fields_follow_the_keys_and_cannot_replace_them() -> None:
    rec = record(fields={"method": "GET", "status": 200, "time": 1.5, "message": "x"})
    entry = json.loads(logs.JsonFormatter().format(rec))
    assert entry["method"] == "GET"
    assert entry["status"] == 200
    assert entry["message"] == "hello %s"
    assert entry["time"].endswith("Z")
    assert entry["pool"] is None


def test_the_pool_comes_from_the_record_or_kopfs_object_reference() -> None:
    formatter = logs.JsonFormatter(pool="default/p")
    assert json.loads(formatter.format(record(pool="shop/a")))["pool"] == "shop/a"
    kopf_ref = {"namespace": "shop", "name": "b", "uid": "1"}
    assert json.loads(formatter.format(record(k8s_ref=kopf_ref)))["pool"] == "shop/b"


def test_a_traceback_stays_inside_the_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), True)
        rec.exc_info = __import__("sys").exc_info()
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_configure_writes_text_by_default_and_json_when_asked() -> None:
    for fmt, is_json in (("text", False), ("json", True)):
        stream = io.StringIO()
        logs.configure("info", fmt, pool="shop/orders", stream=stream)
        logging.getLogger("nebula_id.test").info("ready")
        line = stream.getvalue().strip()
        if is_json:
            assert json.loads(line)["message"] == "ready"
        else:
            assert line.endswith("INFO nebula_id.test: ready")
    logging.getLogger().handlers.clear()


def test_the_format_is_a_setting_from_flag_env_or_config_toml(tmp_path: pathlib.Path) -> None:
    assert settings_mod.load({}, {}).log.format == "text"
    assert settings_mod.load({}, {"NEBULA_LOG_FORMAT": "json"}).log.format == "json"
    config = tmp_path / "config.toml"
    config.write_text('[app]\nlog_format = "json"\n')
    assert settings_mod.load({}, {}, config_file=config).log.format == "json"
    assert settings_mod.load({"log_format": "text"}, {}, config_file=config).log.format == "text"
    with pytest.raises(errors.ConfigError, match="NEBULA_LOG_FORMAT"):
        settings_mod.load({}, {"NEBULA_LOG_FORMAT": "yaml"})


def test_the_operator_passes_the_sidecar_log_format_to_injected_sidecars() -> None:
    pool = poolspec.parse_spec({}, namespace="shop", name="orders")
    default = injection.build(pool, injection_config.load(loader.sources({}, {})))
    names = [e["name"] for e in default.container["env"]]
    assert "NEBULA_LOG_FORMAT" not in names, "text is the sidecar's own default"
    settings = injection_config.load(loader.sources({}, {"NEBULA_SIDECAR_LOG_FORMAT": "json"}))
    env = {e["name"]: e.get("value") for e in injection.build(pool, settings).container["env"]}
    assert env["NEBULA_LOG_FORMAT"] == "json"
