"""A pool's spec: defaults, validation messages, datacenter IDs, and refusing unsafe updates."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id.core.layout import SnowflakeLayout

NOW_MS = 1_750_000_000_000


def parse(spec: dict[str, Any], **kwargs: Any) -> pools.PoolConfig:
    return poolspec.parse_spec(spec, namespace="shop", name="ids", **kwargs)


def dcs(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"datacenters": list(entries)}


def ids_by_name(config: pools.PoolConfig) -> dict[str, int]:
    return {dc.name: dc.id for dc in config.datacenters}


# --- defaults --------------------------------------------------------------------------


def test_an_empty_spec_gets_the_documented_defaults() -> None:
    config = parse({})
    assert config.ref == "shop/ids"
    assert config.algorithm == "snowflake"
    assert config.layout == SnowflakeLayout()
    assert config.clock_backward_tolerance_ms == 5
    assert ids_by_name(config) == {"default": 0}
    assert config.tags == ()
    assert config.lease_ttl_seconds == 10
    assert config.sidecar.port == 8080
    assert config.sidecar.max_batch_size == 1000
    assert config.retired_datacenter_ids == ()


def test_layout_and_tolerance_are_read_from_spec_snowflake() -> None:
    config = parse(
        {
            "snowflake": {
                "epoch": "2025-01-01T00:00:00Z",
                "timestampBits": 40,
                "datacenterBits": 3,
                "workerBits": 8,
                "sequenceBits": 12,
                "clockBackwardToleranceMs": 20,
            }
        }
    )
    assert config.layout.epoch_ms == 1_735_689_600_000
    assert (config.layout.datacenter_bits, config.layout.worker_bits) == (3, 8)
    assert config.clock_backward_tolerance_ms == 20


# --- validation messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"algorithm": "ulid"}, "spec.algorithm must be one of snowflake, segment, uuid7, uuid4"),
        ({"snowflake": {"sequenceBits": 13}}, "spec.snowflake: .*must sum to 63"),
        ({"snowflake": {"workerBits": "5"}}, "spec.snowflake.workerBits must be an integer"),
        ({"snowflake": {"workerBits": True}}, "spec.snowflake.workerBits must be an integer"),
        ({"snowflake": {"epoch": "soon"}}, "spec.snowflake.epoch: .*not an RFC 3339 timestamp"),
        ({"snowflake": {"epoch": 1.5}}, "spec.snowflake.epoch must be an RFC 3339 timestamp"),
        (
            {"snowflake": {"clockBackwardToleranceMs": 5000}},
            "clockBackwardToleranceMs must be 0..1000",
        ),
        ({"snowflake": []}, "spec.snowflake must be a mapping"),
        ({"algorithm": "segment"}, "a segment pool needs at least one tag"),
        ({"lease": {"ttlSeconds": 1}}, "spec.lease.ttlSeconds must be 2..300, got 1"),
        ({"datacenters": {"name": "a"}}, "spec.datacenters must be a list"),
        (dcs({"name": "A"}), r"spec.datacenters\[0\].name must be a DNS label"),
        (dcs({"name": "a"}, {"name": "a"}), "datacenter name 'a' appears twice"),
        (
            dcs({"name": "a", "id": 32}),
            r"spec.datacenters\[0\].id 32 does not fit in datacenterBits=5 \(0..31\)",
        ),
        (
            dcs({"name": "a", "id": 1}, {"name": "b", "id": 1}),
            "datacenters 'a' and 'b' both have id 1",
        ),
        (
            dcs({"name": "a", "databaseSecretRef": {}}),
            r"spec.datacenters\[0\].databaseSecretRef.name must name a Secret",
        ),
        ({"segment": {"tags": [{"name": "Bad Tag"}]}}, r"spec.segment.tags\[0\].name must be 1-63"),
        ({"segment": {"tags": [{"name": "a"}, {"name": "a"}]}}, "segment tag 'a' appears twice"),
        ({"segment": {"tags": [{"name": "a", "step": 0}]}}, "step must be at least 1, got 0"),
        (
            {"segment": {"tags": [{"name": "a", "step": 10, "maxStep": 5}]}},
            r"step \(10\) must not exceed maxStep \(5\)",
        ),
        ({"sidecar": {"port": 0}}, "spec.sidecar.port must be 1..65535"),
        ({"sidecar": {"maxBatchSize": 100_001}}, "spec.sidecar.maxBatchSize must be 1..100000"),
        ({"sidecar": {"image": ""}}, "spec.sidecar.image must be a non-empty string"),
        (
            {"sidecar": {"rateLimit": {"requestsPerSecond": 0}}},
            "requestsPerSecond must be positive",
        ),
        (
            {"sidecar": {"rateLimit": {"requestsPerSecond": 5, "burst": 0}}},
            "burst must be at least 1",
        ),
    ],
)
def test_invalid_specs_name_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidPool, match=message) as caught:
        parse(spec)
    assert caught.value.http_status == 400


def test_pool_name_must_be_a_dns_label() -> None:
    with pytest.raises(errors.InvalidPool, match="pool name 'Ids' must be a DNS label"):
        poolspec.parse_spec({}, namespace="shop", name="Ids")


def test_epoch_in_the_future_is_refused_when_now_is_given() -> None:
    spec = {"snowflake": {"epoch": "2100-01-01T00:00:00Z"}}
    parse(spec)  # without now_ms the check is skipped
    with pytest.raises(errors.InvalidPool, match=r"spec.snowflake: the epoch .* is in the future"):
        parse(spec, now_ms=NOW_MS)


def test_tags_default_their_steps() -> None:
    config = parse({"segment": {"tags": [{"name": "order"}, {"name": "big", "step": 2_000_000}]}})
    assert config.tags == (
        pools.Tag(name="order", step=1000, max_step=1_000_000),
        pools.Tag(name="big", step=2_000_000, max_step=2_000_000),
    )
    assert config.tag("order").step == 1000
    with pytest.raises(errors.UnknownTag, match="known tags: big, order"):
        config.tag("nope")


def test_datacenter_lookup_by_name() -> None:
    config = parse(dcs({"name": "a"}, {"name": "b"}))
    assert config.datacenter(None).name == "a"
    assert config.datacenter("b").id == 1
    with pytest.raises(errors.ConfigError, match=r"pool shop/ids has no datacenter 'c' .*a, b"):
        config.datacenter("c")


# --- datacenter IDs ------------------------------------------------------------------------


def test_datacenters_without_an_id_get_the_lowest_free_one() -> None:
    config = parse(dcs({"name": "a"}, {"name": "b", "id": 0}, {"name": "c"}))
    assert ids_by_name(config) == {"a": 1, "b": 0, "c": 2}


def test_datacenters_keep_their_id_across_updates() -> None:
    first = parse(dcs({"name": "a"}, {"name": "b"}))
    second = parse(dcs({"name": "b"}, {"name": "a"}, {"name": "c"}), previous=first)
    assert ids_by_name(second) == {"a": 0, "b": 1, "c": 2}


def test_a_removed_datacenter_id_is_never_handed_out_again() -> None:
    first = parse(dcs({"name": "a"}, {"name": "b"}))
    second = parse(dcs({"name": "a"}), previous=first)
    assert second.retired_datacenter_ids == (1,)
    third = parse(dcs({"name": "a"}, {"name": "c"}), previous=second)
    assert ids_by_name(third) == {"a": 0, "c": 2}
    assert third.retired_datacenter_ids == (1,)
    with pytest.raises(
        errors.InvalidPool, match="datacenter id 1 was used by a removed datacenter"
    ):
        parse(dcs({"name": "a"}, {"name": "d", "id": 1}), previous=third)


def test_an_id_cannot_move_to_another_datacenter() -> None:
    first = parse(dcs({"name": "a"}, {"name": "b"}))
    with pytest.raises(
        errors.InvalidPool, match="datacenter id 0 belongs to 'a'; it cannot be reused for 'c'"
    ):
        parse(dcs({"name": "c", "id": 0}, {"name": "a", "id": 2}, {"name": "b"}), previous=first)


def test_a_datacenter_cannot_change_its_id() -> None:
    first = parse(dcs({"name": "a"}))
    with pytest.raises(errors.InvalidPool, match="datacenter 'a' has id 0; it cannot change to 3"):
        parse(dcs({"name": "a", "id": 3}), previous=first)


def test_running_out_of_datacenter_ids_is_refused() -> None:
    spec = {"snowflake": {"datacenterBits": 1, "workerBits": 9}}
    parse(spec | dcs({"name": "a"}, {"name": "b"}))
    with pytest.raises(
        errors.InvalidPool, match="no datacenter ID left for 'c' in datacenterBits=1"
    ):
        parse(spec | dcs({"name": "a"}, {"name": "b"}, {"name": "c"}))


def test_the_layout_cannot_change_once_the_pool_exists() -> None:
    first = parse({})
    with pytest.raises(errors.InvalidPool, match="layout and epoch cannot change"):
        parse({"snowflake": {"workerBits": 6, "sequenceBits": 11}}, previous=first)
    with pytest.raises(errors.InvalidPool, match="layout and epoch cannot change"):
        parse({"snowflake": {"epoch": "2025-01-01T00:00:00Z"}}, previous=first)
    # Everything else may change.
    changed = parse({"lease": {"ttlSeconds": 30}, "algorithm": "uuid7"}, previous=first)
    assert changed.lease_ttl_seconds == 30


@given(st.lists(st.sets(st.sampled_from("abcdefgh"), max_size=8), min_size=1, max_size=6))
def test_ids_stay_unique_and_stable_over_any_history(history: list[set[str]]) -> None:
    previous: pools.PoolConfig | None = None
    ever: dict[int, str] = {}
    for names in history:
        spec = dcs(*({"name": n} for n in sorted(names))) if names else {}
        config = parse(spec, previous=previous)
        ids = ids_by_name(config)
        assert len(set(ids.values())) == len(ids)
        for name, dc_id in ids.items():
            # An ID belongs to one name forever, and a name that stays keeps its ID.
            assert ever.setdefault(dc_id, name) == name
        assert not set(ids.values()) & set(config.retired_datacenter_ids)
        previous = config


# --- documents and the stored form ---------------------------------------------------------


POOL_YAML = """
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata:
  name: orders
  namespace: shop
spec:
  algorithm: segment
  snowflake: {clockBackwardToleranceMs: 10}
  datacenters:
    - name: dc-a
      databaseSecretRef: {name: pg-a}
    - name: dc-b
      id: 4
      databaseSecretRef: {name: pg-b, key: url}
  segment:
    tags:
      - {name: order, step: 500, maxStep: 8000}
  lease: {ttlSeconds: 15}
  sidecar:
    image: nebula-id/sidecar:0.1.0
    maxBatchSize: 500
    rateLimit: {requestsPerSecond: 100, burst: 200}
"""


def test_a_yaml_document_parses_into_a_config() -> None:
    namespace, name, spec = poolspec.parse_document(yaml.safe_load(POOL_YAML))
    assert (namespace, name) == ("shop", "orders")
    config = poolspec.parse_spec(spec, namespace=namespace, name=name)
    assert ids_by_name(config) == {"dc-a": 0, "dc-b": 4}
    assert config.datacenter("dc-b").database_secret_ref == pools.SecretRef(name="pg-b", key="url")
    assert config.datacenter("dc-a").database_secret_ref == pools.SecretRef(name="pg-a", key="dsn")
    assert config.sidecar.rate_limit == pools.RateLimit(requests_per_second=100.0, burst=200)


def test_documents_need_the_right_kind_and_a_name() -> None:
    with pytest.raises(errors.InvalidPool, match="expected kind NebulaIdPool, got 'Pod'"):
        poolspec.parse_document({"kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(errors.InvalidPool, match=r"metadata\.name is required"):
        poolspec.parse_document({"kind": "NebulaIdPool", "metadata": {}})
    assert poolspec.parse_document({"metadata": {"name": "x"}}, default_namespace="ns")[:2] == (
        "ns",
        "x",
    )


def test_the_stored_json_reads_back_to_the_same_config() -> None:
    namespace, name, spec = poolspec.parse_document(yaml.safe_load(POOL_YAML))
    first = poolspec.parse_spec(spec, namespace=namespace, name=name)
    shrunk = poolspec.parse_spec(
        {**spec, "datacenters": [{"name": "dc-b", "id": 4}]},
        namespace=namespace,
        name=name,
        previous=first,
    )
    stored = shrunk.to_json()
    assert "pg-a" not in str(stored["datacenters"])  # only Secret names are ever stored
    assert stored["retiredDatacenterIds"] == [0]
    assert poolspec.from_json(stored) == shrunk


def test_an_unknown_stored_format_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="unsupported pool config format 99"):
        poolspec.from_json({"format": 99})
