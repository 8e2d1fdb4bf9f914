"""The real services tests run against, under one import.

from tests.support.services import EtcdServer, MariaDBServer, PostgresCluster, ControlPlane, bin_dir
"""

from __future__ import annotations

from tests.support.binaries import bin_dir, binary, postgres_bin_dir
from tests.support.controlplane import CommandFailed, ControlPlane, ensure_no_proxy, run_cli
from tests.support.etcd import EtcdServer
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster
from tests.support.processes import ServiceStartError, free_port

__all__ = [
    "CommandFailed",
    "ControlPlane",
    "EtcdServer",
    "MariaDBServer",
    "PostgresCluster",
    "ServiceStartError",
    "bin_dir",
    "binary",
    "ensure_no_proxy",
    "free_port",
    "postgres_bin_dir",
    "run_cli",
]
