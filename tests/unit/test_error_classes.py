"""Every error says by its class what it is: a 503 is `Unavailable`, and so transient.

The HTTP layer, the gRPC server and the operator's kopf mapping read only the
class (status, code, reason) and its `transient` flag, so a new error type that
answers 503 without being `Unavailable` would be mapped wrongly everywhere.
"""

from __future__ import annotations

import pytest

import nebula_id.client.answers
import nebula_id.client.buffered
import nebula_id.core.identity
import nebula_id.etcd.client
import nebula_id.etcd.pools
import nebula_id.http.guards
import nebula_id.poolcli
import nebula_id.storage.floored
import nebula_id_operator.kube
import nebula_id_operator.leader
from nebula_id import errors
from nebula_id.http import errors as http_errors

# Imported above for their error classes, so that the walk below sees them.
MODULES_WITH_ERRORS = (
    nebula_id.client.answers,
    nebula_id.client.buffered,
    nebula_id.core.identity,
    nebula_id.etcd.client,
    nebula_id.etcd.pools,
    nebula_id.http.guards,
    nebula_id.storage.floored,
    nebula_id_operator.kube,
    nebula_id_operator.leader,
)


def all_error_classes() -> list[type[errors.NebulaIdError]]:
    found: list[type[errors.NebulaIdError]] = []
    todo: list[type[errors.NebulaIdError]] = [errors.NebulaIdError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


ERROR_CLASSES = all_error_classes()


def test_the_walk_finds_the_errors_of_every_layer() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {
        "StorageError",
        "CoordinationError",
        "KubeUnavailable",
        "LeadershipLost",
        "NotLeader",
        "RowMissing",
        "SecretNotFound",
        "SidecarUnreachable",
    } <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_a_503_is_unavailable_and_transient(cls: type[errors.NebulaIdError]) -> None:
    if cls.http_status == 503:
        assert issubclass(cls, errors.Unavailable)
    if issubclass(cls, errors.Unavailable):
        assert cls.http_status == 503
        assert cls.code == "unavailable"
        assert cls.transient


@pytest.mark.parametrize(
    "cls",
    [
        errors.StorageError,
        errors.CoordinationError,
        nebula_id_operator.kube.KubeUnavailable,
        nebula_id_operator.leader.LeadershipLost,
        nebula_id.etcd.pools.NotLeader,
        nebula_id.storage.floored.RowMissing,
    ],
)
def test_a_failed_dependency_answers_not_ready_with_a_wait(
    cls: type[errors.NebulaIdError],
) -> None:
    error = cls("down")
    assert isinstance(error, errors.Unavailable)
    assert http_errors.reason_of(error) == "not_ready"
    assert http_errors.retry_after_of(error) == 1.0


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidArgument,
        errors.InvalidLayout,
        errors.InvalidPool,
        errors.ConfigError,
        errors.DataDirLocked,
        errors.NotFound,
        errors.UnknownAlgorithm,
        errors.Unauthorized,
        nebula_id_operator.kube.SecretNotFound,
        nebula_id.core.identity.RecreationRefused,
    ],
)
def test_what_only_a_change_can_fix_is_not_transient(cls: type[errors.NebulaIdError]) -> None:
    assert not cls.transient
    assert not issubclass(cls, errors.Unavailable)
    assert http_errors.retry_after_of(cls("bad")) is None


def test_a_rate_limit_is_transient_with_its_own_wait_but_not_unavailable() -> None:
    limited = errors.RateLimited("slow down", retry_after=2.5)
    assert limited.transient
    assert not isinstance(limited, errors.Unavailable)
    assert http_errors.reason_of(limited) == "rate_limited"
    assert http_errors.retry_after_of(limited) == 2.5


def test_an_unclassified_error_is_retried() -> None:
    assert errors.NebulaIdError("unexpected").transient


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.CoordinationError("etcd down"), nebula_id.poolcli.EXIT_UNAVAILABLE),
        (errors.StorageError("database down"), nebula_id.poolcli.EXIT_UNAVAILABLE),
        (nebula_id.etcd.pools.NotLeader("fenced"), nebula_id.poolcli.EXIT_UNAVAILABLE),
        (errors.NotReady("starting"), nebula_id.poolcli.EXIT_UNAVAILABLE),
        (errors.NotFound("no such pool"), nebula_id.poolcli.EXIT_NOT_FOUND),
        (errors.InvalidPool("bad spec"), nebula_id.poolcli.EXIT_INVALID),
        (nebula_id.core.identity.RecreationRefused("refused"), nebula_id.poolcli.EXIT_INVALID),
        (errors.ConfigError("unreadable file"), nebula_id.poolcli.EXIT_INVALID),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, errors.NebulaIdError) else str(v),
)
def test_the_pool_command_exits_by_the_class_of_its_failure(
    error: errors.NebulaIdError, code: int
) -> None:
    """Every "try again later" failure exits 3, whichever dependency it came from."""
    assert nebula_id.poolcli.exit_code(error) == code


def test_an_error_without_a_known_wait_has_none() -> None:
    assert errors.NebulaIdError("unexpected").retry_after is None
    assert http_errors.retry_after_of(errors.NebulaIdError("unexpected")) is None
    assert errors.StorageError("down", retry_after=3.0).retry_after == 3.0
