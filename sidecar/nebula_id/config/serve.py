"""`nebula-id serve`: the sidecar's settings, composed of one object per concern.

`load` reads every concern through the one loader (flags, ``NEBULA_*``
environment, the ``--config`` TOML file with the seed FAQ's sections,
defaults) and `ServeSettings` holds the results.  The app factory hands each
adapter only its own concern (`etcd`, `database`, `auth`...).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from collections.abc import Mapping

from nebula_id.config import auth as auth_mod
from nebula_id.config import database as database_mod
from nebula_id.config import etcd as etcd_mod
from nebula_id.config import failover as failover_mod
from nebula_id.config import http as http_mod
from nebula_id.config import loader
from nebula_id.config import log as log_mod
from nebula_id.config import pod as pod_mod
from nebula_id.config import segment as segment_mod
from nebula_id.config import snowflake as snowflake_mod
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id.core.jsontypes import JsonObject

STANDALONE_NAMESPACE = "default"
STANDALONE_POOL = "standalone"


@dataclasses.dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `nebula-id serve` needs; see README.md for the table."""

    http: http_mod.HttpSettings = dataclasses.field(default_factory=http_mod.HttpSettings)
    """The listeners."""
    auth: auth_mod.AuthSettings = dataclasses.field(default_factory=auth_mod.AuthSettings)
    """API keys, rate limit, audit log."""
    etcd: etcd_mod.EtcdSettings | None = None
    """How to reach etcd; None: standalone mode."""
    database: database_mod.DatabaseSettings = dataclasses.field(
        default_factory=database_mod.DatabaseSettings
    )
    """The segment databases; none configured: segments in etcd or SQLite."""
    snowflake: snowflake_mod.SnowflakeSettings = dataclasses.field(
        default_factory=snowflake_mod.SnowflakeSettings
    )
    """The standalone layout and IDs."""
    segment: segment_mod.SegmentSettings = dataclasses.field(
        default_factory=segment_mod.SegmentSettings
    )
    """The standalone tags."""
    failover: failover_mod.FailoverOverrides = dataclasses.field(
        default_factory=failover_mod.FailoverOverrides
    )
    """Local overrides of the pool's failover settings."""
    log: log_mod.LogSettings = dataclasses.field(default_factory=log_mod.LogSettings)
    """Log level and format."""
    pod: pod_mod.PodSettings = dataclasses.field(default_factory=pod_mod.PodSettings)
    """The downward API's pod identity."""
    pool: str | None = None
    """The pool as ``namespace/name`` (a bare name takes the pod's namespace)."""
    datacenter: str | None = None
    """This sidecar's datacenter name; None: the pool's first."""
    data_dir: pathlib.Path = pathlib.Path(".nebula-id")
    """Standalone state, and the cached pool config in a cluster."""
    algorithm: str = "snowflake"
    """The standalone pool's default algorithm."""

    def __post_init__(self) -> None:
        if self.pool is not None:
            self.pool_ref()
        if not self.cluster_mode:
            self.snowflake.check_ids()

    @property
    def cluster_mode(self) -> bool:
        """True when etcd coordinates worker IDs; otherwise the standalone mode."""
        return self.etcd is not None

    @property
    def prefix(self) -> str:
        return self.etcd.prefix if self.etcd is not None else pool_keys.DEFAULT_PREFIX

    def pool_ref(self) -> tuple[str, str]:
        """(namespace, name) of the pool; the pod's namespace fills a bare name."""
        if self.pool is None:
            return STANDALONE_NAMESPACE, STANDALONE_POOL
        if "/" not in self.pool and self.pod.namespace:
            return self.pod.namespace, self.pool
        return pool_keys.parse_pool_ref(self.pool)

    def pool_keys(self) -> pool_keys.PoolKeys:
        namespace, name = self.pool_ref()
        return pool_keys.PoolKeys(namespace=namespace, name=name, prefix=self.prefix)

    def standalone_pool(self) -> pools.PoolConfig:
        """The pool of standalone mode, built from these settings."""
        namespace, name = self.pool_ref()
        snowflake = self.snowflake
        spec: JsonObject = {
            "algorithm": self.algorithm,
            "snowflake": {
                "epoch": snowflake.epoch,
                "timestampBits": snowflake.timestamp_bits,
                "datacenterBits": snowflake.datacenter_bits,
                "workerBits": snowflake.worker_bits,
                "sequenceBits": snowflake.sequence_bits,
                "clockBackwardToleranceMs": snowflake.clock_backward_tolerance_ms,
            },
            "datacenters": [{"name": self.datacenter or "default", "id": snowflake.datacenter_id}],
            "segment": {
                "tags": [
                    {"name": t.name, "step": t.step, "maxStep": t.max_step}
                    for t in self.segment.tags
                ]
            },
            "sidecar": {"port": self.http.port, "maxBatchSize": self.http.max_batch_size},
        }
        return poolspec.parse_spec(spec, namespace=namespace, name=name)


OWN_FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field(
        "pool", loader.optional_text, ("app.pool",), "pool as namespace/name (cluster mode)"
    ),
    loader.Field(
        "datacenter", loader.optional_text, ("app.datacenter",), "this sidecar's datacenter name"
    ),
    loader.Field("data_dir", loader.path, ("app.data_dir",), "standalone state and caches"),
    loader.Field(
        "algorithm", loader.choice(pools.ALGORITHMS), ("algorithm.type",), "default algorithm"
    ),
)  # fmt: skip

FIELDS: tuple[loader.Field[object], ...] = (
    *http_mod.FIELDS,
    *OWN_FIELDS,
    *etcd_mod.FIELDS,
    *database_mod.FIELDS,
    *snowflake_mod.FIELDS,
    *segment_mod.FIELDS,
    *auth_mod.FIELDS,
    *log_mod.FIELDS,
    *failover_mod.FIELDS,
    *pod_mod.FIELDS,
)
"""Every setting of the sidecar: its flags, environment names and TOML keys (README.md)."""

IGNORED_TOML = frozenset({"app.name", *database_mod.IGNORED_TOML, *segment_mod.IGNORED_TOML})
"""Keys of the seed's config.toml that are accepted and not used."""

NO_FLAG = frozenset({auth_mod.API_KEYS, etcd_mod.PASSWORD})
"""Credentials with no command-line flag: a process's arguments are visible to every
user of the machine (ps, /proc).  They come from the environment, the config file or,
for API keys, `auth_api_keys_file`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (all default to None, meaning "not given")."""
    parser.add_argument("--config", default=None, help="TOML config file (env NEBULA_CONFIG)")
    loader.add_arguments(parser, FIELDS, without_flag=NO_FLAG)


def load(
    flags: Mapping[str, object] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
) -> ServeSettings:
    """Build the settings: flags > ``NEBULA_*`` env > TOML file > defaults."""
    found = loader.sources(
        flags, env, config_file=config_file, toml_fields=FIELDS, ignored_toml=IGNORED_TOML
    )
    return ServeSettings(
        http=found.build(http_mod.HttpSettings, http_mod.FIELDS),
        auth=found.build(auth_mod.AuthSettings, auth_mod.FIELDS),
        etcd=etcd_mod.load(found),
        database=found.build(database_mod.DatabaseSettings, database_mod.FIELDS),
        snowflake=found.build(snowflake_mod.SnowflakeSettings, snowflake_mod.FIELDS),
        segment=found.build(segment_mod.SegmentSettings, segment_mod.FIELDS),
        failover=found.build(failover_mod.FailoverOverrides, failover_mod.FIELDS),
        log=found.build(log_mod.LogSettings, log_mod.FIELDS),
        pod=found.build(pod_mod.PodSettings, pod_mod.FIELDS),
        **found.values(OWN_FIELDS),
    )
