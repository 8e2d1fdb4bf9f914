"""A pool's identity (the tombstone kept after deletion): encoding and the rules it enforces."""

from __future__ import annotations

import pytest

from nebula_id import errors
from nebula_id.core import identity as identities
from nebula_id.core import pool as pools
from nebula_id.core import poolspec

SPEC = {
    "datacenters": [{"name": "dc-a"}, {"name": "dc-b"}],
    "lease": {"ttlSeconds": 4},
}


def config(spec: dict[str, object], previous: pools.PoolConfig | None = None) -> pools.PoolConfig:
    return poolspec.parse_spec(spec, namespace="ns", name="p", previous=previous)


def test_the_identity_round_trips_and_keeps_retired_ids() -> None:
    first = config(SPEC)
    identity = identities.of_config(first, None, now_ms=5)
    assert identities.from_json(identity.to_json()) == identity
    shrunk = config({**SPEC, "datacenters": [{"name": "dc-a"}]}, previous=first)
    after = identities.of_config(shrunk, identity, now_ms=6)
    assert after.retired_datacenter_ids == (1,)
    assert after.datacenters == (("dc-a", 0),)


def test_a_tombstone_refuses_another_layout_and_a_retired_id() -> None:
    identity = identities.of_config(config(SPEC), None, now_ms=1).with_state("deleted", now_ms=2)
    previous = identity.as_previous("ns", "p")
    with pytest.raises(errors.InvalidPool, match="layout and epoch"):
        config({**SPEC, "snowflake": {"epoch": "2025-01-01T00:00:00Z"}}, previous=previous)
    retired = identities.of_config(
        config({**SPEC, "datacenters": [{"name": "dc-a"}]}, previous=previous), identity, now_ms=3
    )
    again = config(
        {**SPEC, "datacenters": [{"name": "dc-a"}, {"name": "dc-c"}]},
        previous=retired.with_state("deleted", now_ms=4).as_previous("ns", "p"),
    )
    assert dict((dc.name, dc.id) for dc in again.datacenters) == {"dc-a": 0, "dc-c": 2}
    message = identities.refusal("ns/p", identity, "the epoch differs").message
    assert "remembered" in message
    assert "drop-data-on-delete" in message


def test_the_lease_ttl_kept_is_the_longest_of_the_lives() -> None:
    long = identities.of_config(config({**SPEC, "lease": {"ttlSeconds": 30}}), None, now_ms=1)
    short = identities.of_config(config(SPEC), long, now_ms=2)
    assert short.lease_ttl_seconds == 30


def test_a_malformed_identity_is_an_error() -> None:
    with pytest.raises(errors.ConfigError):
        identities.from_json({"state": "gone"})
