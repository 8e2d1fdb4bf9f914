"""The Snowflake bit layout: validation messages and the compose/parse round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.core.layout import MAX_TIMESTAMP_MS, SnowflakeLayout

DEFAULT_EPOCH_MS = 1_704_067_200_000


def test_defaults_are_41_5_5_12_from_2024() -> None:
    layout = SnowflakeLayout()
    assert (layout.timestamp_bits, layout.datacenter_bits, layout.worker_bits) == (41, 5, 5)
    assert layout.sequence_bits == 12
    assert layout.epoch_ms == DEFAULT_EPOCH_MS == layouts.parse_epoch(layouts.DEFAULT_EPOCH)
    assert (layout.max_sequence, layout.max_worker, layout.max_datacenter) == (4095, 31, 31)
    assert layout.worker_capacity == 32
    assert (layout.worker_shift, layout.datacenter_shift, layout.timestamp_shift) == (12, 17, 22)


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        ((41, 5, 5, 13), "must sum to 63 .* got 64"),
        ((40, 5, 5, 12), "must sum to 63 .* got 62"),
        ((29, 10, 12, 12), "timestampBits must be at least 30"),
        ((41, -1, 11, 12), "datacenterBits must not be negative, got -1"),
        ((41, 5, 17, 0), "sequenceBits must be at least 1"),
    ],
)
def test_bad_layouts_are_refused_with_a_clear_message(
    bits: tuple[int, int, int, int], message: str
) -> None:
    ts, dc, worker, seq = bits
    with pytest.raises(errors.InvalidLayout, match=message):
        SnowflakeLayout(
            timestamp_bits=ts, datacenter_bits=dc, worker_bits=worker, sequence_bits=seq
        )


def test_epoch_before_1970_is_refused() -> None:
    with pytest.raises(errors.InvalidLayout, match="before 1970"):
        SnowflakeLayout(epoch_ms=-1)


def test_layout_errors_are_invalid_arguments() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        SnowflakeLayout(sequence_bits=13)
    assert caught.value.http_status == 400


def test_node_ids_must_fit_their_bits() -> None:
    layout = SnowflakeLayout()
    layout.check_node(datacenter=31, worker=31)
    with pytest.raises(
        errors.InvalidLayout, match=r"worker ID 32 does not fit in 5 bits \(0..31\)"
    ):
        layout.check_node(datacenter=0, worker=32)
    with pytest.raises(errors.InvalidLayout, match=r"datacenter ID 32 does not fit in 5 bits"):
        layout.check_node(datacenter=32, worker=0)
    with pytest.raises(errors.InvalidLayout, match="datacenter ID -1"):
        layout.check_node(datacenter=-1, worker=0)


def test_epoch_in_the_future_is_refused() -> None:
    layout = SnowflakeLayout()
    layout.check_epoch(DEFAULT_EPOCH_MS)
    with pytest.raises(errors.InvalidLayout, match=r"2024-01-01T00:00:00.000Z is in the future"):
        layout.check_epoch(DEFAULT_EPOCH_MS - 1)


def test_timestamp_bits_that_already_ran_out_are_refused() -> None:
    layout = SnowflakeLayout(timestamp_bits=30, datacenter_bits=5, worker_bits=16, sequence_bits=12)
    layout.check_epoch(DEFAULT_EPOCH_MS + layout.max_timestamp)
    with pytest.raises(errors.InvalidLayout, match=r"30 timestamp bits .* have already run out"):
        layout.check_epoch(DEFAULT_EPOCH_MS + layout.max_timestamp + 1)


def test_compose_refuses_parts_that_do_not_fit() -> None:
    layout = SnowflakeLayout()
    ok = {"timestamp_ms": DEFAULT_EPOCH_MS, "datacenter": 0, "worker": 0, "sequence": 0}
    assert layout.compose(**ok) == 0
    with pytest.raises(errors.InvalidLayout, match="sequence 4096 does not fit in 12 bits"):
        layout.compose(**(ok | {"sequence": 4096}))
    with pytest.raises(errors.InvalidLayout, match="outside the layout's range"):
        layout.compose(**(ok | {"timestamp_ms": DEFAULT_EPOCH_MS - 1}))
    with pytest.raises(errors.InvalidLayout, match="worker ID"):
        layout.compose(**(ok | {"worker": 99}))


def test_compose_places_each_part() -> None:
    layout = SnowflakeLayout()
    value = layout.compose(timestamp_ms=DEFAULT_EPOCH_MS + 1, datacenter=2, worker=3, sequence=4)
    assert value == (1 << 22) | (2 << 17) | (3 << 12) | 4


def test_parse_refuses_ids_outside_63_bits() -> None:
    layout = SnowflakeLayout()
    with pytest.raises(errors.InvalidLayout, match="not a 63-bit Snowflake ID"):
        layout.parse(-1)
    with pytest.raises(errors.InvalidLayout):
        layout.parse(1 << 63)
    assert layout.parse((1 << 63) - 1).sequence == 4095


@pytest.mark.parametrize("text", ["abc", "-5", "1.5", "", "12345678901234567890"])
def test_parse_text_refuses_malformed_ids(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="is not a decimal Snowflake ID"):
        SnowflakeLayout().parse_text(text)


def test_parse_text_reads_a_decimal_id() -> None:
    layout = SnowflakeLayout()
    value = layout.compose(timestamp_ms=DEFAULT_EPOCH_MS + 99, datacenter=1, worker=2, sequence=3)
    parsed = layout.parse_text(f" {value} ")
    assert (parsed.timestamp_ms, parsed.datacenter, parsed.worker, parsed.sequence) == (
        DEFAULT_EPOCH_MS + 99,
        1,
        2,
        3,
    )


def test_epochs_parse_from_rfc_3339_or_milliseconds() -> None:
    assert layouts.parse_epoch("2024-01-01T00:00:00Z") == DEFAULT_EPOCH_MS
    assert layouts.parse_epoch("2024-01-01T01:00:00+01:00") == DEFAULT_EPOCH_MS
    assert layouts.parse_epoch(str(DEFAULT_EPOCH_MS)) == DEFAULT_EPOCH_MS
    assert layouts.format_epoch(DEFAULT_EPOCH_MS) == "2024-01-01T00:00:00.000Z"
    with pytest.raises(errors.InvalidLayout, match="not an RFC 3339 timestamp"):
        layouts.parse_epoch("yesterday")
    with pytest.raises(errors.InvalidLayout, match="needs a time zone"):
        layouts.parse_epoch("2024-01-01T00:00:00")


def test_to_json_names_the_crd_fields() -> None:
    assert SnowflakeLayout().to_json() == {
        "epoch": "2024-01-01T00:00:00.000Z",
        "timestampBits": 41,
        "datacenterBits": 5,
        "workerBits": 5,
        "sequenceBits": 12,
    }


@st.composite
def layouts_and_parts(draw: st.DrawFn) -> tuple[SnowflakeLayout, int, int, int, int]:
    timestamp_bits = draw(st.integers(30, 62))
    rest = 63 - timestamp_bits
    sequence_bits = draw(st.integers(1, rest))
    datacenter_bits = draw(st.integers(0, rest - sequence_bits))
    worker_bits = rest - sequence_bits - datacenter_bits
    epoch_ms = draw(st.integers(0, 2_000_000_000_000))
    layout = SnowflakeLayout(
        timestamp_bits=timestamp_bits,
        datacenter_bits=datacenter_bits,
        worker_bits=worker_bits,
        sequence_bits=sequence_bits,
        epoch_ms=epoch_ms,
    )
    # Up to year 9999: no clock issues later IDs, and parse refuses them.
    timestamp_ms = epoch_ms + draw(
        st.integers(0, min(layout.max_timestamp, MAX_TIMESTAMP_MS - epoch_ms))
    )
    datacenter = draw(st.integers(0, layout.max_datacenter))
    worker = draw(st.integers(0, layout.max_worker))
    sequence = draw(st.integers(0, layout.max_sequence))
    return layout, timestamp_ms, datacenter, worker, sequence


@given(layouts_and_parts())
def test_compose_then_parse_round_trips(case: tuple[SnowflakeLayout, int, int, int, int]) -> None:
    layout, timestamp_ms, datacenter, worker, sequence = case
    value = layout.compose(
        timestamp_ms=timestamp_ms, datacenter=datacenter, worker=worker, sequence=sequence
    )
    assert 0 <= value < 1 << 63
    parsed = layout.parse(value)
    assert parsed.id == value
    assert (parsed.timestamp_ms, parsed.datacenter, parsed.worker, parsed.sequence) == (
        timestamp_ms,
        datacenter,
        worker,
        sequence,
    )
    assert layout.parse_text(str(value)) == parsed


@given(layouts_and_parts(), st.integers(0, (1 << 63) - 1))
def test_parse_then_compose_round_trips(
    case: tuple[SnowflakeLayout, int, int, int, int], value: int
) -> None:
    layout = case[0]
    if (value >> layout.timestamp_shift) + layout.epoch_ms > MAX_TIMESTAMP_MS:
        # A wide timestamp field reaches past year 9999: refused, never a crash.
        with pytest.raises(errors.InvalidLayout, match="9999"):
            layout.parse(value)
        return
    parsed = layout.parse(value)
    assert (
        layout.compose(
            timestamp_ms=parsed.timestamp_ms,
            datacenter=parsed.datacenter,
            worker=parsed.worker,
            sequence=parsed.sequence,
        )
        == value
    )


@given(layouts_and_parts(), layouts_and_parts())
def test_later_timestamps_give_larger_ids(
    a: tuple[SnowflakeLayout, int, int, int, int], b: tuple[SnowflakeLayout, int, int, int, int]
) -> None:
    layout, ts, dc, worker, seq = a
    _, other_ts, other_dc, other_worker, other_seq = b
    other_ts = layout.epoch_ms + (other_ts - b[0].epoch_ms) % (layout.max_timestamp + 1)
    other_dc &= layout.max_datacenter
    other_worker &= layout.max_worker
    other_seq &= layout.max_sequence
    if ts == other_ts:
        return
    first = layout.compose(timestamp_ms=ts, datacenter=dc, worker=worker, sequence=seq)
    second = layout.compose(
        timestamp_ms=other_ts, datacenter=other_dc, worker=other_worker, sequence=other_seq
    )
    assert (first < second) == (ts < other_ts)


def test_the_largest_parsable_id_parses_and_the_next_does_not() -> None:
    wide = SnowflakeLayout(timestamp_bits=50, datacenter_bits=1, worker_bits=1, sequence_bits=11)
    largest = wide.largest_parsable_id
    assert largest < (1 << 63) - 1
    assert wide.parse(largest).timestamp_ms <= MAX_TIMESTAMP_MS
    with pytest.raises(errors.InvalidLayout):
        wide.parse(largest + 1)
    assert SnowflakeLayout().largest_parsable_id == (1 << 63) - 1
