"""The sidecar's settings: one frozen object, built once at start-up.

Every setting is read, in this order, from a command-line flag, a ``NEBULA_*``
environment variable, the ``--config`` TOML file (the seed FAQ's sections), and
finally its default.  A bad value fails here, at start-up, with a message that
names where it came from (``--port``, ``NEBULA_PORT`` or ``config.toml [app]
port``), so nothing downstream has to re-validate.

The field table (`FIELDS`) is the single source of the flag names, the
environment names and the TOML keys; `add_arguments` turns it into argparse
flags so the CLI and the docs cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nebula_id import errors, logs
from nebula_id.core import failover as failovers
from nebula_id.core import keys as pool_keys
from nebula_id.core import layout as layouts
from nebula_id.core import pool as pools

ENV_PREFIX = "NEBULA_"
LOG_LEVELS = ("debug", "info", "warning", "error")
STANDALONE_NAMESPACE = "default"
STANDALONE_POOL = "standalone"


@dataclasses.dataclass(frozen=True, slots=True)
class EtcdSettings:
    """How to reach etcd: the view the etcd client needs, nothing more."""

    endpoints: tuple[str, ...]
    prefix: str = pool_keys.DEFAULT_PREFIX
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `nebula-id serve` needs; see README.md for the table."""

    host: str = "127.0.0.1"
    port: int = pools.DEFAULT_PORT
    unix_socket: str | None = None
    grpc_port: int | None = None
    # Bandit B104 accepted: health only; the ID API stays on `host`
    probe_host: str = "0.0.0.0"  # nosec B104
    probe_port: int | None = None
    probe_metrics: bool = False
    pool: str | None = None
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = pool_keys.DEFAULT_PREFIX
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = None
    datacenter: str | None = None
    database_url: str | None = None
    database_urls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    database_url_dir: str | None = None
    data_dir: pathlib.Path = pathlib.Path(".nebula-id")
    worker_id: int = 0
    datacenter_id: int = 0
    algorithm: str = "snowflake"
    tags: tuple[pools.Tag, ...] = (pools.Tag(name="default"),)
    max_batch_size: int = pools.DEFAULT_MAX_BATCH
    snowflake_epoch: str = layouts.DEFAULT_EPOCH
    snowflake_timestamp_bits: int = 41
    snowflake_datacenter_bits: int = 5
    snowflake_worker_bits: int = 5
    snowflake_sequence_bits: int = 12
    clock_backward_tolerance_ms: int = pools.DEFAULT_TOLERANCE_MS
    auth_api_keys: tuple[str, ...] = ()
    auth_api_keys_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None
    audit_log: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    pod_name: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None
    failover_failure_threshold: int | None = None
    failover_hold_down_seconds: float | None = None
    failover_probe_interval_seconds: float | None = None
    failover_health_max_age_seconds: float | None = None

    @property
    def cluster_mode(self) -> bool:
        """True when etcd coordinates worker IDs; otherwise the standalone mode."""
        return bool(self.etcd_endpoints)

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url or self.database_urls or self.database_url_dir)

    def etcd(self) -> EtcdSettings:
        return EtcdSettings(
            endpoints=self.etcd_endpoints,
            prefix=self.etcd_prefix,
            ca_file=self.etcd_ca_file,
            cert_file=self.etcd_cert_file,
            key_file=self.etcd_key_file,
            username=self.etcd_username,
            password=self.etcd_password,
        )

    def pool_ref(self) -> tuple[str, str]:
        """(namespace, name) of the pool; the pod's namespace fills a bare name."""
        if self.pool is None:
            return STANDALONE_NAMESPACE, STANDALONE_POOL
        if "/" not in self.pool and self.pod_namespace:
            return self.pod_namespace, self.pool
        return pool_keys.parse_pool_ref(self.pool)

    def pool_keys(self) -> pool_keys.PoolKeys:
        namespace, name = self.pool_ref()
        return pool_keys.PoolKeys(namespace=namespace, name=name, prefix=self.etcd_prefix)

    def layout(self) -> layouts.SnowflakeLayout:
        """The Snowflake layout of the flags/file (standalone mode and `nebula-id parse`)."""
        return layouts.SnowflakeLayout(
            timestamp_bits=self.snowflake_timestamp_bits,
            datacenter_bits=self.snowflake_datacenter_bits,
            worker_bits=self.snowflake_worker_bits,
            sequence_bits=self.snowflake_sequence_bits,
            epoch_ms=layouts.parse_epoch(self.snowflake_epoch),
        )

    def database_dsns(self) -> dict[str, str]:
        """Datacenter name -> DSN from `database_url_dir` files and `database_urls`.

        `database_url` (the own datacenter's DSN) is not included because only
        the pool knows the own datacenter's name when `datacenter` is unset.
        """
        dsns: dict[str, str] = {}
        if self.database_url_dir:
            folder = pathlib.Path(self.database_url_dir)
            try:
                entries = sorted(folder.iterdir())
            except OSError as e:
                raise errors.ConfigError(
                    f"database_url_dir {folder} cannot be read: {e.strerror}"
                ) from e
            for entry in entries:
                if entry.is_file() and not entry.name.startswith("."):
                    dsns[entry.name] = entry.read_text().strip()
        dsns.update(self.database_urls)
        return dsns

    def failover(self, pool_settings: failovers.FailoverSettings) -> failovers.FailoverSettings:
        """`pool_settings` (the pool's, or a datacenter's) with the locally given overrides."""
        overrides: dict[str, Any] = {
            attr: value
            for attr, value in (
                ("failure_threshold", self.failover_failure_threshold),
                ("hold_down_s", self.failover_hold_down_seconds),
                ("probe_interval_s", self.failover_probe_interval_seconds),
                ("health_max_age_s", self.failover_health_max_age_seconds),
            )
            if value is not None
        }
        return dataclasses.replace(pool_settings, **overrides) if overrides else pool_settings

    def standalone_pool(self) -> pools.PoolConfig:
        """The pool of standalone mode, built from these settings."""
        namespace, name = self.pool_ref()
        spec: dict[str, Any] = {
            "algorithm": self.algorithm,
            "snowflake": {
                "epoch": self.snowflake_epoch,
                "timestampBits": self.snowflake_timestamp_bits,
                "datacenterBits": self.snowflake_datacenter_bits,
                "workerBits": self.snowflake_worker_bits,
                "sequenceBits": self.snowflake_sequence_bits,
                "clockBackwardToleranceMs": self.clock_backward_tolerance_ms,
            },
            "datacenters": [{"name": self.datacenter or "default", "id": self.datacenter_id}],
            "segment": {
                "tags": [{"name": t.name, "step": t.step, "maxStep": t.max_step} for t in self.tags]
            },
            "sidecar": {"port": self.port, "maxBatchSize": self.max_batch_size},
        }
        return pools.parse_spec(spec, namespace=namespace, name=name)


# --- parsers: text (flag, env) or TOML value -> typed value ---------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    text = _text(value).strip()
    return text or None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(_text(value).strip())
    except ValueError as e:
        raise ValueError(f"must be an integer, got {value!r}") from e


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(_text(value).strip())
    except ValueError as e:
        raise ValueError(f"must be a number, got {value!r}") from e


def _list(value: Any) -> tuple[str, ...]:
    """A comma list (flag, env, TOML string) or a TOML array of strings."""
    if isinstance(value, list):
        return tuple(_text(item).strip() for item in value if _text(item).strip())
    return tuple(part.strip() for part in _text(value).split(",") if part.strip())


def _endpoints(value: Any) -> tuple[str, ...]:
    result = []
    for endpoint in _list(value):
        full = endpoint if "://" in endpoint else f"http://{endpoint}"
        if not full.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {endpoint!r} must be http:// or https://")
        result.append(full.rstrip("/"))
    return tuple(result)


def _dsn_map(value: Any) -> Mapping[str, str]:
    """``dc-a=dsn,dc-b=dsn`` or a TOML table ``{dc-a = "dsn"}``."""
    if isinstance(value, Mapping):
        return {str(k): _text(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for number, part in enumerate(_list(value), start=1):
        name, sep, dsn = part.partition("=")
        if not sep or not name.strip() or not dsn.strip():
            # Never the item itself: it may hold a password.
            raise ValueError(f"item {number} must be written as datacenter=dsn")
        result[name.strip()] = dsn.strip()
    return result


def _tags(value: Any) -> tuple[pools.Tag, ...]:
    """``name[:step[:maxStep]]`` comma list, or TOML tables ``{name, step, max_step}``."""
    items: list[Any] = value if isinstance(value, list) else list(_list(value))
    tags: list[pools.Tag] = []
    for item in items:
        if isinstance(item, Mapping):
            name = _text(item.get("name", ""))
            step = _int(item.get("step", pools.DEFAULT_STEP))
            max_step = _int(item.get("max_step", max(pools.DEFAULT_MAX_STEP, step)))
        else:
            parts = _text(item).strip().split(":")
            if len(parts) > 3:
                raise ValueError(f"tag {item!r} must be name[:step[:maxStep]]")
            name = parts[0]
            step = _int(parts[1]) if len(parts) > 1 else pools.DEFAULT_STEP
            max_step = _int(parts[2]) if len(parts) > 2 else max(pools.DEFAULT_MAX_STEP, step)
        if not pools.TAG_NAME.match(name):
            raise ValueError(f"tag name {name!r} must be lowercase letters, digits, '-', '_', '.'")
        if not 1 <= step <= max_step:
            raise ValueError(f"tag {name!r}: need 1 <= step ({step}) <= maxStep ({max_step})")
        if any(t.name == name for t in tags):
            raise ValueError(f"tag {name!r} appears twice")
        tags.append(pools.Tag(name=name, step=step, max_step=max_step))
    if not tags:
        raise ValueError("must name at least one tag")
    return tuple(tags)


def _path(value: Any) -> pathlib.Path:
    return pathlib.Path(_text(value)).expanduser()


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return text

    return parse


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One setting: its parser, where it lives in the TOML file, and its help."""

    name: str
    parse: Callable[[Any], Any]
    toml: tuple[str, ...] = ()
    help: str = ""
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("host", _text, ("app.host",), "address to listen on"),
    Field("port", _int, ("app.port",), "port to listen on"),
    Field("unix_socket", _optional_text, ("app.unix_socket",), "also serve HTTP on this socket"),
    Field("grpc_port", _int, ("grpc.port",), "serve gRPC on this port too (host as --host)"),
    Field("probe_host", _text, ("probe.host",), "address of the health-only probe server"),
    Field("probe_port", _int, ("probe.port",), "serve /healthz and /readyz alone on this port"),
    Field("probe_metrics", _bool, ("probe.metrics",), "serve /metrics on the probe port too"),
    Field("pool", _optional_text, ("app.pool",), "pool as namespace/name (cluster mode)"),
    Field("etcd_endpoints", _endpoints, ("etcd.endpoints",), "comma list; enables cluster mode"),
    Field("etcd_prefix", _text, ("etcd.prefix",), "etcd key prefix"),
    Field("etcd_ca_file", _optional_text, ("etcd.ca_file",), "CA bundle for etcd TLS"),
    Field("etcd_cert_file", _optional_text, ("etcd.cert_file",), "client certificate for etcd"),
    Field("etcd_key_file", _optional_text, ("etcd.key_file",), "client key for etcd"),
    Field("etcd_username", _optional_text, ("etcd.username",), "etcd user"),
    Field("etcd_password", _optional_text, ("etcd.password",), "etcd password", secret=True),
    Field("datacenter", _optional_text, ("app.datacenter",), "this sidecar's datacenter name"),
    Field("database_url", _optional_text, ("database.url",), "segment database DSN", secret=True),
    Field("database_urls", _dsn_map, ("database.urls",), "dc-a=dsn,dc-b=dsn", secret=True),
    Field("database_url_dir", _optional_text, ("database.url_dir",), "folder of DSN files"),
    Field("data_dir", _path, ("app.data_dir",), "standalone state and caches"),
    Field("worker_id", _int, ("snowflake.worker_id",), "standalone worker ID"),
    Field("datacenter_id", _int, ("snowflake.datacenter_id",), "standalone datacenter ID"),
    Field("algorithm", _choice(pools.ALGORITHMS), ("algorithm.type",), "default algorithm"),
    Field("tags", _tags, ("segment.tags",), "standalone tags: name[:step[:maxStep]],..."),
    Field("max_batch_size", _int, ("app.max_batch_size",), "largest ?count="),
    Field("snowflake_epoch", _text, ("snowflake.epoch",), "RFC 3339 epoch"),
    Field("snowflake_timestamp_bits", _int, ("snowflake.timestamp_bits",), "timestamp bits"),
    Field("snowflake_datacenter_bits", _int, ("snowflake.datacenter_bits",), "datacenter bits"),
    Field("snowflake_worker_bits", _int, ("snowflake.worker_bits",), "worker bits"),
    Field("snowflake_sequence_bits", _int, ("snowflake.sequence_bits",), "sequence bits"),
    Field(
        "clock_backward_tolerance_ms",
        _int,
        ("snowflake.clock_backward_tolerance_ms",),
        "wait for rollbacks up to this",
    ),
    Field(
        "auth_api_keys",
        _list,
        ("auth.api_keys", "auth.api_key"),
        "comma list of API keys",
        secret=True,
    ),
    Field("auth_api_keys_file", _optional_text, ("auth.api_keys_file",), "file, one key a line"),
    Field("tls_cert_file", _optional_text, ("tls.cert_file",), "serve HTTPS with this cert"),
    Field("tls_key_file", _optional_text, ("tls.key_file",), "and this key"),
    Field("rate_limit_rps", _float, ("rate_limit.requests_per_second",), "requests per second"),
    Field("rate_limit_burst", _int, ("rate_limit.burst",), "bucket size"),
    Field("audit_log", _optional_text, ("audit.log",), "audit log path, or - for stderr"),
    Field("log_level", _choice(LOG_LEVELS), ("app.log_level",), "log level"),
    Field("log_format", _choice(logs.FORMATS), ("app.log_format",), "text, or json lines"),
    Field(
        "failover_failure_threshold",
        _int,
        ("failover.failure_threshold",),
        "failed calls before a datacenter is down (default: the pool's)",
    ),
    Field(
        "failover_hold_down_seconds",
        _float,
        ("failover.hold_down_seconds",),
        "healthy time before returning to the own datacenter (default: the pool's)",
    ),
    Field(
        "failover_probe_interval_seconds",
        _float,
        ("failover.probe_interval_seconds",),
        "time between probes of a down datacenter (default: the pool's)",
    ),
    Field(
        "failover_health_max_age_seconds",
        _float,
        ("failover.health_max_age_seconds",),
        "ignore published health older than this (default: the pool's)",
    ),
    Field("pod_name", _optional_text, (), "downward API"),
    Field("pod_namespace", _optional_text, (), "downward API"),
    Field("pod_uid", _optional_text, (), "downward API"),
    Field("node_name", _optional_text, (), "downward API"),
)

# Keys of the seed's config.toml that we accept and do not use.
IGNORED_TOML = frozenset({"app.name", "database.max_connections", "algorithm.segment"})
KNOWN_SECTIONS = frozenset(path.split(".")[0] for f in FIELDS for path in f.toml)


NO_FLAG = frozenset({"auth_api_keys", "etcd_password"})
"""Credentials with no command-line flag: a process's arguments are visible to every
user of the machine (ps, /proc).  They come from the environment, the config file or,
for API keys, `auth_api_keys_file`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (all default to None, meaning "not given")."""
    parser.add_argument("--config", default=None, help="TOML config file (env NEBULA_CONFIG)")
    for field in FIELDS:
        if field.name in NO_FLAG:
            continue
        env_hint = f" (env {field.env})"
        parser.add_argument(field.flag, dest=field.name, default=None, help=field.help + env_hint)


def load(
    flags: Mapping[str, Any] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
) -> ServeSettings:
    """Build the settings: flags > ``NEBULA_*`` env > TOML file > defaults."""
    given = dict(vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {}))
    environ = os.environ if env is None else env
    path = config_file or given.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    toml_values = _read_toml(pathlib.Path(path)) if path else {}

    values: dict[str, Any] = {}
    for field in FIELDS:
        if given.get(field.name) is not None:
            raw, source = given[field.name], field.flag
        elif environ.get(field.env) is not None:
            raw, source = environ[field.env], field.env
        else:
            found = next(
                ((key, toml_values[key]) for key in field.toml if key in toml_values), None
            )
            if found is None:
                continue
            section, _, key = found[0].partition(".")
            raw, source = found[1], f"{path} [{section}] {key}"
        try:
            values[field.name] = field.parse(raw)
        except ValueError as e:
            raise errors.ConfigError(f"{source}: {e}") from e
    settings = ServeSettings(**values)
    check(settings)
    return settings


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    """The file as ``{"section.key": value}``; unknown keys of our sections fail."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as e:
        raise errors.ConfigError(f"config file {path} cannot be read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise errors.ConfigError(f"config file {path} is not valid TOML: {e}") from e
    known = {key for field in FIELDS for key in field.toml}
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if section not in KNOWN_SECTIONS:
            continue  # e.g. the seed's [redis]: not ours, not an error
        if not isinstance(table, Mapping):
            raise errors.ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted in IGNORED_TOML:
                continue
            if dotted not in known:
                raise errors.ConfigError(f"{path}: unknown setting [{section}] {key}")
            flat[dotted] = value
    return flat


def check(settings: ServeSettings) -> None:
    """Cross-field checks; each message names the settings involved."""
    if not 1 <= settings.port <= 65535:
        raise errors.ConfigError(f"port must be 1..65535, got {settings.port}")
    if settings.grpc_port is not None and not 0 <= settings.grpc_port <= 65535:
        raise errors.ConfigError(
            f"grpc_port must be 0..65535 (0: any free port), got {settings.grpc_port}"
        )
    if settings.grpc_port is not None and settings.grpc_port == settings.port:
        raise errors.ConfigError(f"grpc_port and port must differ, both are {settings.port}")
    if settings.probe_port is not None:
        if not 1 <= settings.probe_port <= 65535:
            raise errors.ConfigError(f"probe_port must be 1..65535, got {settings.probe_port}")
        if settings.probe_port in (settings.port, settings.grpc_port):
            raise errors.ConfigError("probe_port must differ from port and grpc_port")
    if not 1 <= settings.max_batch_size <= 100_000:
        raise errors.ConfigError(f"max_batch_size must be 1..100000, got {settings.max_batch_size}")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise errors.ConfigError("tls_cert_file and tls_key_file must be given together")
    if bool(settings.etcd_cert_file) != bool(settings.etcd_key_file):
        raise errors.ConfigError("etcd_cert_file and etcd_key_file must be given together")
    if settings.rate_limit_rps is not None and settings.rate_limit_rps <= 0:
        raise errors.ConfigError(f"rate_limit_rps must be positive, got {settings.rate_limit_rps}")
    if settings.rate_limit_burst is not None and settings.rate_limit_burst < 1:
        raise errors.ConfigError(
            f"rate_limit_burst must be at least 1, got {settings.rate_limit_burst}"
        )
    if not 0 <= settings.clock_backward_tolerance_ms <= 1000:
        raise errors.ConfigError(
            "clock_backward_tolerance_ms must be 0..1000, "
            f"got {settings.clock_backward_tolerance_ms}"
        )
    try:
        settings.failover(failovers.FailoverSettings())
    except errors.ConfigError as e:
        raise errors.ConfigError(f"failover settings: {e.message}") from e
    if settings.pool is not None:
        settings.pool_ref()
    try:
        layout = settings.layout()
    except errors.InvalidLayout as e:
        raise errors.ConfigError(f"snowflake layout: {e.message}") from e
    if not settings.cluster_mode:
        if not 0 <= settings.worker_id <= layout.max_worker:
            raise errors.ConfigError(
                f"worker_id {settings.worker_id} does not fit in "
                f"snowflake_worker_bits={layout.worker_bits} (0..{layout.max_worker})"
            )
        if not 0 <= settings.datacenter_id <= layout.max_datacenter:
            raise errors.ConfigError(
                f"datacenter_id {settings.datacenter_id} does not fit in "
                f"snowflake_datacenter_bits={layout.datacenter_bits} (0..{layout.max_datacenter})"
            )
