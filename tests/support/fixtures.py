"""pytest fixtures over the real services, registered by the root ``conftest.py``.

Session-scoped services start lazily, the first time a test asks, and stop at
the end of the session.  The ``*_factory`` fixtures hand out fresh private
servers for tests that stop, kill or partition them; those are torn down after
the test.  A service that cannot start is a test error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import binaries, processes
from tests.support.controlplane import ControlPlane, ensure_no_proxy
from tests.support.engines import ENGINES, EngineServer
from tests.support.etcd import EtcdServer
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster

EtcdFactory = Callable[[], EtcdServer]
PostgresFactory = Callable[[], PostgresCluster]
MariaDBFactory = Callable[[], MariaDBServer]
EngineFactory = Callable[[], EngineServer]

_TIMINGS = pytest.StashKey[dict[str, float]]()


def pytest_configure(config: pytest.Config) -> None:
    ensure_no_proxy()
    config.stash[_TIMINGS] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    processes.kill_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    timings = terminalreporter.config.stash.get(_TIMINGS, {})
    if timings:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(timings.items()))
        terminalreporter.write_line(f"nebula-id test services started: {parts}")


def _timed(config: pytest.Config, name: str, start: Callable[[], object]) -> None:
    began = time.monotonic()
    start()
    config.stash[_TIMINGS][name] = time.monotonic() - began


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true"


# -- binaries -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    """Path of kubectl (``KUBEBUILDER_ASSETS`` or the build script's)."""
    if _use_existing_cluster() and "KUBEBUILDER_ASSETS" not in os.environ:
        found = shutil.which("kubectl")
        if found:
            return found
    return str(binaries.binary("kubectl"))


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """Path of helm (built by the build script)."""
    return str(binaries.binary("helm"))


# -- etcd -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def etcd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdServer]:
    """One etcd for the session; tests must use their own key prefixes."""
    server = EtcdServer(binaries.bin_dir(), tmp_path_factory.mktemp("etcd"))
    try:
        _timed(request.config, "etcd", server.start)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def etcd_endpoint(etcd: EtcdServer) -> str:
    """The session etcd's client URL, ``http://127.0.0.1:PORT``."""
    return etcd.endpoint


@pytest.fixture
def etcd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdFactory]:
    """Call it to get a fresh, started, private etcd (stopped after the test)."""
    servers: list[EtcdServer] = []

    def make() -> EtcdServer:
        server = EtcdServer(binaries.bin_dir(), tmp_path_factory.mktemp("etcd-private"))
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    """A stopped cluster's data dir (with db ``nebula``) that new clusters copy."""
    template = PostgresCluster()
    try:
        template.start()
        template.stop()
        yield template.data_dir
    finally:
        template.close()


def _cluster(template: Path) -> PostgresCluster:
    return PostgresCluster(Path(tempfile.mkdtemp(prefix="nebula-pg-")), template=template)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest, postgres_template: Path) -> Iterator[PostgresCluster]:
    """One PostgreSQL for the session; ``postgres.dsn()`` is its ``nebula`` db."""
    cluster = _cluster(postgres_template)
    try:
        _timed(request.config, "postgres", cluster.start)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_dcs(postgres_template: Path) -> Iterator[dict[str, PostgresCluster]]:
    """Two more clusters, one per datacenter: ``{"dc-a": ..., "dc-b": ...}``."""
    clusters = {name: _cluster(postgres_template) for name in ("dc-a", "dc-b")}
    try:
        for cluster in clusters.values():
            cluster.start()
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.close()


@pytest.fixture
def postgres_factory(postgres_template: Path) -> Iterator[PostgresFactory]:
    """Call it to get a fresh, started, private PostgreSQL (deleted after the test)."""
    clusters: list[PostgresCluster] = []

    def make() -> PostgresCluster:
        cluster = _cluster(postgres_template)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


# -- MariaDB ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb_template() -> Iterator[Path]:
    """A stopped server's data dir (with db ``nebula``) that new servers copy."""
    template = MariaDBServer()
    try:
        template.start()
        template.stop()
        yield template.data_dir
    finally:
        template.close()


@pytest.fixture(scope="session")
def mariadb(request: pytest.FixtureRequest, mariadb_template: Path) -> Iterator[MariaDBServer]:
    """One MariaDB for the session; ``mariadb.dsn()`` is its ``nebula`` db."""
    server = MariaDBServer(template=mariadb_template)
    try:
        _timed(request.config, "mariadb", server.start)
        yield server
    finally:
        server.close()


@pytest.fixture
def mariadb_factory(mariadb_template: Path) -> Iterator[MariaDBFactory]:
    """Call it to get a fresh, started, private MariaDB (deleted after the test)."""
    servers: list[MariaDBServer] = []

    def make() -> MariaDBServer:
        server = MariaDBServer(template=mariadb_template)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


# -- either engine ------------------------------------------------------------------------


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each segment database engine in turn: ``postgresql``, then ``mysql`` (MariaDB)."""
    return str(request.param)


@pytest.fixture
def segment_db(request: pytest.FixtureRequest, engine: str) -> EngineServer:
    """The session's server of `engine` (shared: tests use their own pool names)."""
    name = "postgres" if engine == "postgresql" else "mariadb"
    return EngineServer(engine, request.getfixturevalue(name))


@pytest.fixture
def segment_db_factory(request: pytest.FixtureRequest, engine: str) -> EngineFactory:
    """Call it to get a fresh, private server of `engine` (deleted after the test)."""
    name = "postgres_factory" if engine == "postgresql" else "mariadb_factory"
    factory = request.getfixturevalue(name)

    def make() -> EngineServer:
        return EngineServer(engine, factory())

    return make


# -- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the session, or ``KUBECONFIG``'s cluster when
    ``USE_EXISTING_CLUSTER=true``."""
    if _use_existing_cluster():
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        found = shutil.which("kubectl")
        kubectl = Path(found) if found else binaries.binary("kubectl")
        yield ControlPlane.existing(Path(kubeconfig), kubectl)
        return
    plane = ControlPlane(binaries.bin_dir(), tmp_path_factory.mktemp("control-plane"))
    try:
        _timed(request.config, "control plane", plane.start)
        yield plane
    finally:
        plane.close()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> str:
    """Path of the admin kubeconfig of the control plane."""
    return str(control_plane.kubeconfig)
