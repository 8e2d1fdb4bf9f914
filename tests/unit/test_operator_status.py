"""The pure status builders: conditions, phase, printer fields, health document."""

from __future__ import annotations

from nebula_id.core import health as health_doc
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id_operator import status

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def config(**spec: object) -> pools.PoolConfig:
    base: dict[str, object] = {"datacenters": [{"name": "dc-a"}, {"name": "dc-b", "id": 4}]}
    return poolspec.parse_spec(base | spec, namespace="ns", name="p")


OK = status.Check.passed("ConfigWritten", "written")
NOT_NEEDED = status.Check.passed("NotRequired")


def test_ready_needs_etcd_and_database() -> None:
    assert status.ready_check(OK, NOT_NEEDED).ok is True
    missing = status.Check.failed("SecretNotFound", "Secret ns/db does not exist", permanent=True)
    ready = status.ready_check(OK, missing)
    assert (ready.ok, ready.reason, ready.permanent) == (False, "SecretNotFound", True)
    unknown = status.ready_check(status.Check.unknown("Waiting"), NOT_NEEDED)
    assert unknown.ok is None


def test_phase() -> None:
    healthy = status.Check.passed("AllHealthy")
    sick = status.Check.failed("Unhealthy", "dc-b down")
    assert status.phase(OK, healthy) == status.PHASE_READY
    assert status.phase(OK, sick) == status.PHASE_DEGRADED
    assert status.phase(status.Check.failed("X", "y", permanent=True), healthy) == "Failed"
    assert status.phase(status.Check.failed("EtcdUnavailable", "down"), healthy) == "Pending"


def test_reconcile_status_reports_ids_capacity_and_conditions() -> None:
    patch = status.reconcile_status(
        config=config(),
        etcd=OK,
        database=NOT_NEEDED,
        generation=3,
        now=NOW,
        previous={},
        config_revision=17,
    )
    types = [c["type"] for c in patch["conditions"]]
    assert types == ["Ready", "EtcdConfigured", "DatabaseProvisioned"]
    assert all(c["observedGeneration"] == 3 for c in patch["conditions"])
    assert patch["observedGeneration"] == 3
    assert patch["phase"] == "Ready"
    assert patch["datacenters"] == [{"name": "dc-a", "id": 0}, {"name": "dc-b", "id": 4}]
    assert patch["workers"] == {"active": 0, "capacity": 64, "summary": "0/64"}
    assert patch["datacentersHealthy"] == "0/2"
    assert patch["configRevision"] == 17
    assert patch["retiredDatacenterIds"] == []


def test_reconcile_leaves_the_worker_count_to_the_daemon() -> None:
    counted = {"workers": {"active": 3, "capacity": 64, "summary": "3/64"}}
    same = status.reconcile_status(
        config=config(), etcd=OK, database=NOT_NEEDED, generation=2, now=NOW, previous=counted
    )
    assert "workers" not in same
    grown = config(datacenters=[{"name": "dc-a"}, {"name": "dc-b", "id": 4}, {"name": "dc-c"}])
    more = status.reconcile_status(
        config=grown, etcd=OK, database=NOT_NEEDED, generation=3, now=NOW, previous=counted
    )
    assert more["workers"] == {"active": 3, "capacity": 96, "summary": "3/96"}


def test_transition_time_moves_only_when_status_flips() -> None:
    first = status.reconcile_status(
        config=config(), etcd=OK, database=NOT_NEEDED, generation=1, now=NOW, previous={}
    )
    same = status.reconcile_status(
        config=config(), etcd=OK, database=NOT_NEEDED, generation=2, now=LATER, previous=first
    )
    assert {c["lastTransitionTime"] for c in same["conditions"]} == {NOW}
    broken = status.reconcile_status(
        config=None,
        etcd=status.Check.failed("EtcdUnavailable", "etcd down"),
        database=status.Check.unknown("WaitingForConfig"),
        generation=2,
        now=LATER,
        previous=first,
    )
    by_type = {c["type"]: c for c in broken["conditions"]}
    assert by_type["EtcdConfigured"]["lastTransitionTime"] == LATER
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "EtcdUnavailable"
    assert broken["phase"] == "Pending"
    assert "datacenters" not in broken


def test_health_status_and_summary() -> None:
    health = [
        status.DatacenterHealth("dc-a", True, "ok", NOW),
        status.DatacenterHealth("dc-b", False, "connection refused", NOW, 3, NOW),
    ]
    reconciled = status.reconcile_status(
        config=config(), etcd=OK, database=NOT_NEEDED, generation=1, now=NOW, previous={}
    )
    patch = status.health_status(
        config=config(), health=health, generation=1, now=NOW, previous=reconciled
    )
    cond = next(c for c in patch["conditions"] if c["type"] == "DatacentersHealthy")
    assert cond["status"] == "False"
    assert "dc-b: connection refused" in cond["message"]
    assert patch["phase"] == "Degraded"
    assert patch["datacentersHealthy"] == "1/2"
    assert patch["datacenters"][1] == {
        "name": "dc-b",
        "id": 4,
        "healthy": False,
        "reason": "connection refused",
        "checkedAt": NOW,
        "consecutiveFailures": 3,
        "lastTransitionTime": NOW,
    }
    # The next reconcile carries the health over.
    again = status.reconcile_status(
        config=config(),
        etcd=OK,
        database=NOT_NEEDED,
        generation=2,
        now=LATER,
        previous=reconciled | patch,
    )
    assert again["datacentersHealthy"] == "1/2"
    assert again["phase"] == "Degraded"


def test_is_ready_checks_the_generation() -> None:
    done = status.reconcile_status(
        config=config(), etcd=OK, database=NOT_NEEDED, generation=5, now=NOW, previous={}
    )
    assert status.is_ready(done, 5)
    assert not status.is_ready(done, 6)
    assert not status.is_ready({}, 1)


def test_health_document_matches_the_sidecars_contract() -> None:
    doc = health_doc.build([status.DatacenterHealth("dc-a", True, "ok", NOW)], updated_at=LATER)
    assert doc == {
        "datacenters": {"dc-a": {"healthy": True, "reason": "ok", "checkedAt": NOW}},
        "updatedAt": LATER,
    }


def test_rfc3339() -> None:
    assert status.rfc3339(1_767_225_600_000) == "2026-01-01T00:00:00Z"
