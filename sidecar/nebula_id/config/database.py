"""Where the segment databases are: the own datacenter's DSN and the others'.

DSNs hold passwords: they come from the environment, the config file or files
mounted from Secrets, and are never echoed in an error.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.config import loader


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """The segment databases, by datacenter."""

    url: str | None = None
    """The own datacenter's DSN."""
    urls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Datacenter name -> DSN of the others (failover)."""
    url_dir: str | None = None
    """A folder of files named after datacenters, each holding a DSN (mounted Secrets)."""

    @property
    def configured(self) -> bool:
        """True when segments are stored in a database (else etcd or SQLite)."""
        return bool(self.url or self.urls or self.url_dir)

    def dsns(self) -> dict[str, str]:
        """Datacenter name -> DSN from the `url_dir` files and `urls`.

        `url` (the own datacenter's DSN) is not included because only the pool
        knows the own datacenter's name when the datacenter setting is unset.
        """
        dsns: dict[str, str] = {}
        if self.url_dir:
            folder = pathlib.Path(self.url_dir)
            try:
                entries = sorted(folder.iterdir())
            except OSError as e:
                raise errors.ConfigError(
                    f"database_url_dir {folder} cannot be read: {e.strerror}"
                ) from e
            for entry in entries:
                if entry.is_file() and not entry.name.startswith("."):
                    dsns[entry.name] = entry.read_text().strip()
        dsns.update(self.urls)
        return dsns


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field(
        "database_url", loader.optional_text, ("database.url",), "segment database DSN",
        attr="url", secret=True,
    ),
    loader.Field(
        "database_urls", loader.name_map, ("database.urls",), "dc-a=dsn,dc-b=dsn",
        attr="urls", secret=True,
    ),
    loader.Field(
        "database_url_dir", loader.optional_text, ("database.url_dir",), "folder of DSN files",
        attr="url_dir",
    ),
)  # fmt: skip
IGNORED_TOML = frozenset({"database.max_connections"})
"""A key of the seed's config.toml that is accepted and not used."""
