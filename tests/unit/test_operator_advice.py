"""Every reason a pool is not Ready comes with a next step a newcomer can follow."""

from __future__ import annotations

import pytest

from nebula_id.core import poolspec
from nebula_id_operator import advice, status

POOL = poolspec.parse_spec(
    {
        "datacenters": [{"name": "dc-a", "databaseSecretRef": {"name": "orders-db"}}],
        "segment": {"tags": [{"name": "orders"}]},
    },
    namespace="shop",
    name="orders",
)
DC = POOL.datacenters[0]


@pytest.mark.parametrize(
    "reason",
    [
        "SecretNotFound",
        "DatabaseUnavailable",
        "DatabaseConflict",
        "KubernetesUnavailable",
        "InvalidSpec",
        "StoredConfigUnreadable",
        "EtcdUnavailable",
    ],
)
def test_every_failure_reason_has_a_next_step(reason: str) -> None:
    step = advice.next_step(reason, namespace="shop", dc=DC)
    assert step
    assert step.endswith(".")


def test_the_secret_hint_is_a_command_that_creates_the_named_secret() -> None:
    step = advice.next_step("SecretNotFound", namespace="shop", dc=DC)
    assert (
        "kubectl create secret generic orders-db -n shop --from-literal=dsn=postgresql://" in step
    )


def test_a_database_step_names_the_secret_and_key_of_the_dsn() -> None:
    step = advice.next_step("DatabaseUnavailable", namespace="shop", dc=DC)
    assert "Secret shop/orders-db (key 'dsn')" in step


def test_an_unknown_reason_adds_nothing() -> None:
    assert advice.with_next_step("it broke", advice.next_step("Other", namespace="x")) == (
        "it broke"
    )
    assert advice.with_next_step("it broke", "Fix it.") == "it broke. Fix it."


def test_ready_says_which_part_is_missing() -> None:
    etcd = status.Check.passed("ConfigWritten")
    database = status.Check.failed("SecretNotFound", "Datacenter dc-a: gone.", permanent=True)
    ready = status.ready_check(etcd, database)
    assert ready.reason == "SecretNotFound"
    assert ready.message == (
        "Segment IDs cannot be served: the segment tables are not set up. Datacenter dc-a: gone."
    )
    down = status.ready_check(status.Check.failed("EtcdUnavailable", "etcd is down."), database)
    assert down.message.startswith("Sidecars cannot start: the pool's config is not in etcd.")


def test_an_unhealthy_datacenter_says_what_to_check() -> None:
    check = status.health_check([status.DatacenterHealth("dc-a", False, "refused", "now")])
    assert check.message.startswith("1 of 1 unhealthy: dc-a: refused.")
    assert "Check the PostgreSQL of dc-a and its Secret" in check.message
