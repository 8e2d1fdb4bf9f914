"""Our errors map to kopf's in one place: transient ones retry, permanent ones stop."""

from __future__ import annotations

import kopf
import pytest

from nebula_id import errors
from nebula_id.etcd import pools as etcd_pools
from nebula_id_operator import failures, kube, leader


@pytest.mark.parametrize(
    "error",
    [
        errors.CoordinationError("etcd down"),
        errors.StorageError("db down"),
        kube.KubeUnavailable("api down"),
        leader.LeadershipLost("lease gone"),
        etcd_pools.NotLeader("fenced write refused"),
        errors.WorkerIdsExhausted("all taken"),
        errors.NebulaIdError("unexpected"),
    ],
)
def test_transient_errors_retry_with_backoff(error: errors.NebulaIdError) -> None:
    first = failures.to_kopf(error, retry=0)
    late = failures.to_kopf(error, retry=50)
    assert isinstance(first, kopf.TemporaryError)
    assert isinstance(late, kopf.TemporaryError)
    assert first.delay == 1.0
    assert late.delay == 30.0


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidPool("layout changed"),
        errors.ConfigError("stored config unreadable"),
        kube.SecretNotFound("Secret ns/db does not exist"),
        errors.UnknownTag("t", ["a"]),
    ],
)
def test_permanent_errors_do_not_retry(error: errors.NebulaIdError) -> None:
    mapped = failures.to_kopf(error, retry=0)
    assert isinstance(mapped, kopf.PermanentError)
    assert str(mapped) == error.message


def test_kopf_settings_keep_our_names_and_need_little_rbac() -> None:
    from nebula_id_operator import handlers

    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    assert settings.persistence.finalizer == "nebula-id.io/finalizer"
    assert settings.scanning.disabled is True
    assert settings.background.cancellation_polling <= 1.0
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (errors.InvalidPool("layout changed"), True),
        (errors.ConfigError("stored config unreadable"), True),
        (kube.SecretNotFound("Secret ns/db does not exist"), True),
        (errors.CoordinationError("etcd down"), False),
        (kube.KubeUnavailable("api down"), False),
    ],
)
def test_a_failed_check_is_permanent_exactly_when_its_error_is_not_transient(
    error: errors.NebulaIdError, permanent: bool
) -> None:
    from nebula_id_operator import reconcile

    check = reconcile.failed("Reason", "what went wrong", error)
    assert check.ok is False
    assert check.permanent is permanent
    assert failures.to_kopf(error, retry=0).__class__ is (
        kopf.PermanentError if permanent else kopf.TemporaryError
    )
