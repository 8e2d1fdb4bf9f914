"""One face for the test servers of both segment engines (PostgreSQL, MariaDB).

The store suite runs every test against each engine; this wrapper gives the
tests one way to build DSNs, run raw SQL (to inspect or tamper with rows) and
stop, kill or restart the server, whichever it is.
"""

from __future__ import annotations

import dataclasses

from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster

ENGINES = ("postgresql", "mysql")


@dataclasses.dataclass(frozen=True)
class EngineServer:
    """A running PostgreSQL or MariaDB test server, and which one it is."""

    engine: str
    server: PostgresCluster | MariaDBServer

    def dsn(self, db: str = "nebula") -> str:
        return self.server.dsn(db)

    def dsn_at_port(self, port: int, db: str = "nebula", *, password: str | None = None) -> str:
        """A DSN of this engine's scheme for another port (a dead or silent server)."""
        scheme = "postgresql" if self.engine == "postgresql" else "mysql"
        user = "postgres" if self.engine == "postgresql" else "root"
        credentials = f"{user}:{password}" if password else user
        return f"{scheme}://{credentials}@127.0.0.1:{port}/{db}"

    def rows(self, sql: str, *, db: str = "nebula") -> list[tuple[str, ...]]:
        """Run `sql` with the engine's command-line client; rows of text columns."""
        if isinstance(self.server, PostgresCluster):
            out, sep = self.server.psql(sql, db=db), "|"
        else:
            out, sep = self.server.sql(sql, db=db), "\t"
        return [tuple(line.split(sep)) for line in out.splitlines() if line]

    def execute(self, sql: str, *, db: str = "nebula") -> None:
        self.rows(sql, db=db)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()
