"""`nebula-id pool`: etcd, and the segment databases to provision, for the pool commands.

The etcd concern is the sidecar's and the operator's (`config.etcd`), so a pool
written here is read from the same etcd, under the same prefix, as they see it.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.config import database as database_mod
from nebula_id.config import etcd as etcd_mod
from nebula_id.config import loader
from nebula_id.core import keys as pool_keys


@dataclasses.dataclass(frozen=True, slots=True)
class PoolCommandSettings:
    """Where `nebula-id pool apply|get|delete|import` finds the pools."""

    etcd: etcd_mod.EtcdSettings | None = None
    """How to reach etcd; None when no endpoint is given (enough for `apply --dry-run`)."""
    prefix: str = pool_keys.DEFAULT_PREFIX
    """The etcd key prefix."""

    def require_etcd(self) -> etcd_mod.EtcdSettings:
        """The etcd settings, or an error that says how to give them."""
        if self.etcd is None:
            raise errors.ConfigError(
                "no etcd given: pass --etcd-endpoints or set NEBULA_ETCD_ENDPOINTS"
            )
        return self.etcd


@dataclasses.dataclass(frozen=True, slots=True)
class ProvisionSettings:
    """The segment databases `apply` and `import` work on."""

    database: database_mod.DatabaseSettings = dataclasses.field(
        default_factory=database_mod.DatabaseSettings
    )
    """The DSNs (`url` is `datacenter`'s)."""
    datacenter: str | None = None
    """The datacenter `database.url` belongs to; None: the pool's only one."""


DATABASE_FIELDS = database_mod.FIELDS[:2]
"""``--database-url`` and ``--database-urls`` (no folder of DSN files here)."""
DATACENTER = loader.Field(
    "datacenter", loader.optional_text, (), "the datacenter --database-url belongs to"
)


def add_etcd_arguments(parser: argparse.ArgumentParser) -> None:
    """The etcd flags of every pool command."""
    loader.add_arguments(parser, etcd_mod.FIELDS)


def load(
    flags: Mapping[str, object] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
) -> PoolCommandSettings:
    """Flags > ``NEBULA_*`` env > defaults."""
    found = loader.sources(flags, env)
    prefix = found.value(etcd_mod.PREFIX)
    return PoolCommandSettings(etcd=etcd_mod.load(found), prefix=prefix or pool_keys.DEFAULT_PREFIX)


def load_provisioning(
    flags: Mapping[str, object] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
) -> ProvisionSettings:
    """Flags > ``NEBULA_*`` env > defaults; read only by the commands that provision."""
    found = loader.sources(flags, env)
    return ProvisionSettings(
        database=found.build(database_mod.DatabaseSettings, DATABASE_FIELDS),
        datacenter=found.value(DATACENTER),
    )
