"""Provisioning several datacenters: a transient failure among permanent ones decides the retry.

When one datacenter's Secret is missing (permanent) and another's database is
down (transient), kopf must keep retrying: the condition names the transient
failure and is not permanent.  The choice comes from the errors' `transient`
flag, so it holds for every `Unavailable`, not only for the ones listed here.
"""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id.storage import engines
from nebula_id_operator import failures, kube, reconcile


class FakeKube:
    """Secrets by name: a DSN, or the error reading it raises."""

    def __init__(self, secrets: dict[str, str | errors.NebulaIdError]) -> None:
        self._secrets = secrets

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        found = self._secrets[name]
        if isinstance(found, errors.NebulaIdError):
            raise found
        return found


def config() -> pools.PoolConfig:
    spec = {
        "datacenters": [
            {"name": "dc-a", "databaseSecretRef": {"name": "db-a"}},
            {"name": "dc-b", "id": 1, "databaseSecretRef": {"name": "db-b"}},
        ],
        "segment": {"tags": [{"name": "orders"}]},
    }
    return poolspec.parse_spec(spec, namespace="ns", name="p")


def context(secrets: dict[str, str | errors.NebulaIdError]) -> reconcile.Context:
    unused = cast(Any, None)
    return reconcile.Context(
        settings=unused,
        etcd=unused,
        kube=cast(kube.KubeApi, FakeKube(secrets)),
        clock=unused,
        metrics=unused,
        postgres=unused,
    )


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> dict[str, errors.NebulaIdError]:
    """Provisioning fails with the error given by DSN, and succeeds for any other DSN."""
    failing: dict[str, errors.NebulaIdError] = {}

    async def provision(dsn: str, *args: object, **kwargs: object) -> object:
        if dsn in failing:
            raise failing[dsn]
        raise AssertionError(f"unexpected DSN {dsn}")

    monkeypatch.setattr(engines, "provision", provision)
    return failing


@pytest.mark.parametrize("down", ["db-a", "db-b"])
async def test_a_transient_failure_wins_over_a_permanent_one(
    databases: dict[str, errors.NebulaIdError], down: str
) -> None:
    missing = "db-b" if down == "db-a" else "db-a"
    databases[f"postgresql://{down}"] = errors.StorageError("connection refused")
    ctx = context(
        {
            down: f"postgresql://{down}",
            missing: kube.SecretNotFound(f"Secret ns/{missing} does not exist"),
        }
    )
    check, error = await reconcile.provision_databases(ctx, "ns", config())
    assert (check.ok, check.reason, check.permanent) == (False, "DatabaseUnavailable", False)
    assert isinstance(error, errors.StorageError)
    assert f"Secret ns/{missing} does not exist" in check.message
    assert isinstance(failures.to_kopf(error, retry=0), kopf.TemporaryError)


async def test_an_unreachable_api_server_is_transient_too(
    databases: dict[str, errors.NebulaIdError],
) -> None:
    ctx = context(
        {
            "db-a": kube.SecretNotFound("Secret ns/db-a does not exist"),
            "db-b": kube.KubeUnavailable("GET secrets failed: timeout"),
        }
    )
    check, error = await reconcile.provision_databases(ctx, "ns", config())
    assert (check.ok, check.reason, check.permanent) == (False, "KubernetesUnavailable", False)
    assert isinstance(error, kube.KubeUnavailable)


async def test_only_permanent_failures_stop_the_retries(
    databases: dict[str, errors.NebulaIdError],
) -> None:
    ctx = context(
        {
            "db-a": kube.SecretNotFound("Secret ns/db-a does not exist"),
            "db-b": kube.SecretNotFound("Secret ns/db-b does not exist"),
        }
    )
    check, error = await reconcile.provision_databases(ctx, "ns", config())
    assert (check.ok, check.reason, check.permanent) == (False, "SecretNotFound", True)
    assert error is not None
    assert isinstance(failures.to_kopf(error, retry=0), kopf.PermanentError)
