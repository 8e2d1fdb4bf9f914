"""Which engine a DSN names, and how a MySQL DSN becomes connection arguments (no I/O)."""

from __future__ import annotations

import pytest

from nebula_id import errors
from nebula_id.core import poolspec, segment
from nebula_id.storage import engines, mysql, postgres


@pytest.mark.parametrize(
    ("dsn", "engine"),
    [
        ("postgresql://u@h/db", "postgresql"),
        ("postgres://u:p@h:5433/db", "postgresql"),
        ("host=/run/postgresql dbname=ids", "postgresql"),  # libpq keywords
        ("mysql://u:p@h:3306/db", "mysql"),
        ("MariaDB://u@h/db", "mysql"),
    ],
)
def test_the_scheme_picks_the_engine(dsn: str, engine: str) -> None:
    assert engines.engine_of(dsn) == engine


def test_an_unknown_scheme_is_a_config_error_without_the_password() -> None:
    with pytest.raises(errors.ConfigError, match="mysql://") as caught:
        engines.engine_of("sqlite://me:hunter2@x/db")
    assert "hunter2" not in caught.value.message


def test_open_store_builds_the_engine_s_store() -> None:
    pool = poolspec.parse_spec(
        {"datacenters": [{"name": "dc-a", "id": 2}], "segment": {"tags": [{"name": "t"}]}},
        namespace="ns",
        name="p",
    )
    dc = pool.datacenters[0]
    my = engines.open_store("mysql://u@h/db", pool=pool, datacenter=dc)
    pg = engines.open_store("postgresql://u@h/db", pool=pool, datacenter=dc)
    assert isinstance(my, mysql.MySQLSegmentStore)
    assert isinstance(pg, postgres.PostgresSegmentStore)
    assert my.base == pg.base == segment.datacenter_base(2, 5)
    assert my.limit == pg.limit == segment.counter_limit(5)


def test_a_mysql_dsn_becomes_connection_arguments() -> None:
    address = mysql.Address.parse("mysql://ids%40app:p%3Ass@db.internal:3307/segments")
    assert address == mysql.Address("db.internal", 3307, "ids@app", "p:ss", "segments")
    socket = mysql.Address.parse("mariadb://root@localhost/ids?unix_socket=/run/mysqld/s.sock")
    assert (socket.port, socket.unix_socket, socket.password) == (3306, "/run/mysqld/s.sock", "")
    args = address.connect_args(2.5)
    assert args["autocommit"] is True
    assert args["connect_timeout"] == 2.5


@pytest.mark.parametrize("dsn", ["mysql://u@h", "mysql://u@h/", "mysql://u@h:99999/db"])
def test_a_bad_mysql_dsn_is_a_config_error(dsn: str) -> None:
    with pytest.raises(errors.ConfigError):
        mysql.Address.parse(dsn)


@pytest.mark.parametrize(
    ("floor", "dc", "counter"),
    [
        (5000, 0, 5001),  # datacenter 0 continues right above
        ((1 << 58) + 10, 1, 11),  # inside datacenter 1's slice
        (5000, 1, 0),  # datacenter 1's slice starts above: nothing to raise
    ],
)
def test_counter_above(floor: int, dc: int, counter: int) -> None:
    assert segment.counter_above(floor, dc, 5) == counter
    if counter:
        assert segment.datacenter_base(dc, 5) + counter == floor + 1


def test_counter_above_refuses_a_slice_entirely_below() -> None:
    with pytest.raises(errors.InvalidPool, match="can never issue an ID above"):
        segment.counter_above(1 << 58, 0, 5)
    assert segment.counter_above((1 << 58) - 2, 0, 5) == (1 << 58) - 1
