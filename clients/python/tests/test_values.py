import math
import struct

import pytest

from state_service_client import ValueConversionError, from_value, same, to_value
from state_service_client import _proto as pb

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def wire_round_trip(obj):
    """Native -> Value -> bytes -> Value -> native, as a call does."""
    return from_value(pb.Value.FromString(to_value(obj).SerializeToString()))


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        False,
        0,
        INT64_MIN,
        INT64_MAX,
        -1,
        1.5,
        float("inf"),
        float("-inf"),
        -0.0,
        5e-324,
        "",
        "ünïcødé 🦀 \x00",
        b"",
        bytes(range(256)),
        [],
        {},
        [1, None, [], {}],
        {"": None, "a": {"b": [True, 2, 3.0, "4", b"5"]}},
    ],
)
def test_every_kind_round_trips_exactly(obj):
    assert same(wire_round_trip(obj), obj)


def test_nan_round_trips_as_nan():
    assert math.isnan(wire_round_trip(float("nan")))


def test_negative_zero_keeps_its_sign():
    back = wire_round_trip(-0.0)
    assert struct.pack("<d", back) == struct.pack("<d", -0.0)
    assert not same(back, 0.0)


def test_bool_and_int_stay_distinct():
    assert wire_round_trip(True) is True
    assert type(wire_round_trip(1)) is int
    assert to_value(1).WhichOneof("kind") == "int_value"
    assert to_value(1.0).WhichOneof("kind") == "double_value"
    assert not same(True, 1)


def test_tuples_and_bytearrays_read_back_as_list_and_bytes():
    assert wire_round_trip((1, 2)) == [1, 2]
    assert wire_round_trip(bytearray(b"ab")) == b"ab"


@pytest.mark.parametrize("i", [INT64_MAX + 1, INT64_MIN - 1, 2**100])
def test_integers_outside_int64_are_refused(i):
    with pytest.raises(ValueConversionError, match="int64"):
        to_value(i)


@pytest.mark.parametrize("obj", [{1, 2}, object(), 1 + 2j, {1: "a"}, [{"ok": {b"k": 1}}]])
def test_unrepresentable_values_are_refused(obj):
    with pytest.raises(ValueConversionError):
        to_value(obj)


def test_lone_surrogates_are_refused():
    with pytest.raises(ValueConversionError, match="Unicode"):
        to_value("\ud800")


def test_cycles_are_refused_not_recursed_forever():
    a = []
    a.append(a)
    with pytest.raises(ValueConversionError, match="nested"):
        to_value(a)


def test_a_value_without_kind_is_an_error():
    with pytest.raises(ValueConversionError):
        from_value(pb.Value())


def test_conversion_error_is_a_value_error():
    assert issubclass(ValueConversionError, ValueError)
