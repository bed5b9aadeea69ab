"""Native Python values <-> ``stateservice.v1.Value``, exactly.

===========================  ==============================
Python                       Value kind
===========================  ==============================
``None``                     null_value
``bool``                     bool_value
``int`` (int64 range)        int_value (``increment`` works on it)
``float`` (NaN, ±inf, -0.0)  double_value
``str``                      string_value
``bytes`` / ``bytearray``    bytes_value (read back as ``bytes``)
``list`` / ``tuple``         list_value (read back as ``list``)
``dict`` with ``str`` keys   map_value
===========================  ==============================

Anything else (an int outside int64, a set, a ``Decimal``, a dict with
non-string keys, a str with lone surrogates) raises
:class:`~state_service_client.errors.ValueConversionError` rather than being
approximated.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Union

from . import _proto as pb
from .errors import ValueConversionError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: What ``to_value`` accepts and ``from_value`` returns.
Native = Union[None, bool, int, float, str, bytes, list, dict]

_MAX_DEPTH = 100


def to_value(obj: Any) -> Any:
    """Converts a native value to a ``stateservice.v1.Value`` message."""
    out = pb.Value()
    _fill(out, obj, 0)
    return out


def _fill(out: Any, obj: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueConversionError(
            f"value nested deeper than {_MAX_DEPTH} levels (or cyclic)"
        )
    if obj is None:
        out.null_value = 0
    elif isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, numbers.Integral):
        i = int(obj)
        if not INT64_MIN <= i <= INT64_MAX:
            raise ValueConversionError(
                f"integer {i} is outside the int64 range the service stores "
                f"[{INT64_MIN}, {INT64_MAX}]"
            )
        out.int_value = i
    elif isinstance(obj, float):
        out.double_value = obj
    elif isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueConversionError(f"string is not valid Unicode: {e}") from None
        out.string_value = obj
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.bytes_value = bytes(obj)
    elif isinstance(obj, (list, tuple)):
        values = out.list_value.values
        for item in obj:
            _fill(values.add(), item, depth + 1)
        if not obj:
            out.list_value.SetInParent()
    elif isinstance(obj, Mapping):
        fields = out.map_value.fields
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueConversionError(
                    f"map keys must be str, got {type(k).__name__} {k!r}"
                )
            _fill(fields[k], v, depth + 1)
        if not obj:
            out.map_value.SetInParent()
    else:
        raise ValueConversionError(
            f"cannot store a {type(obj).__name__}: use None, bool, int, float, "
            "str, bytes, list or dict"
        )


def from_value(value: Any) -> Native:
    """Converts a ``stateservice.v1.Value`` message to a native value."""
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    if kind == "map_value":
        return {k: from_value(v) for k, v in value.map_value.fields.items()}
    raise ValueConversionError("value has no kind set")


def same(a: Any, b: Any) -> bool:
    """Exact equality as a round trip must preserve it: floats by bit
    pattern (NaN equals NaN, -0.0 differs from 0.0), bool never equals int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b
