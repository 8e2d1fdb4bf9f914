"""The last known pool config, kept in the data dir.

A sidecar that restarts while etcd is down can still load its layout and report its
state clearly (`lease_lost` instead of a crash loop).  The cache never lets it issue
Snowflake IDs: those still need a lease.  Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.core import poolspec

log = logging.getLogger(__name__)


def path_of(data_dir: pathlib.Path, keys: pool_keys.PoolKeys) -> pathlib.Path:
    return pathlib.Path(data_dir) / "pools" / f"{keys.namespace}.{keys.name}.json"


def save(data_dir: pathlib.Path, config: pools.PoolConfig, keys: pool_keys.PoolKeys) -> None:
    """Write `config` for the next start; a failure is logged, never fatal."""
    target = path_of(data_dir, keys)
    temp = target.with_suffix(".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with temp.open("w", encoding="utf-8") as f:
            json.dump(config.to_json(), f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(target)
    except OSError as e:
        log.warning("cannot cache the pool config at %s: %s", target, e)


def load(data_dir: pathlib.Path, keys: pool_keys.PoolKeys) -> pools.PoolConfig | None:
    """The cached config, or None when there is none (or it is unreadable)."""
    target = path_of(data_dir, keys)
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
        return poolspec.from_json(doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, errors.NebulaIdError) as e:
        log.warning("ignoring the unreadable cached pool config %s: %s", target, e)
        return None
