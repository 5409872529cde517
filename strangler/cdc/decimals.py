"""`numeric` per Debezium's `decimal.handling.mode`.

precise: a fixed-scale column is Kafka Connect's Decimal (the unscaled value's two's-complement big-endian
bytes, base64 in JSON); an unconstrained column is Debezium's VariableScaleDecimal `{scale, value}` with
trailing zeros stripped. string: Java's BigDecimal.toString. double: a JSON number. NaN and infinities have
no precise form: Debezium fails the connector on them, and so do we (naming the column).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

_SPECIAL = {b"NaN", b"Infinity", b"-Infinity"}
VARIABLE_SCALE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "int32", "optional": False, "field": "scale"},
        {"type": "bytes", "optional": False, "field": "value"},
    ],
    "name": "io.debezium.data.VariableScaleDecimal",
    "version": 1,
    "doc": "Variable scaled decimal",
}


class SpecialDecimal(ValueError):
    """NaN or an infinity in a column rendered in precise mode."""


def split_decimal(data: bytes) -> tuple[int, int]:
    """PostgreSQL numeric text -> (unscaled value, scale)."""
    if data in _SPECIAL:
        raise SpecialDecimal(f"{data.decode()} has no precise decimal form; use decimal_handling_mode string or double")
    whole, _, fraction = data.partition(b".")
    return int(whole + fraction), len(fraction)


def unscaled_bytes(unscaled: int) -> str:
    """Java's BigInteger.toByteArray (minimal two's complement, big-endian), base64-encoded."""
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    return base64.b64encode(unscaled.to_bytes(bits // 8 + 1, "big", signed=True)).decode()


def java_decimal_string(unscaled: int, scale: int) -> str:
    """Java's BigDecimal.toString: plain unless the exponent is below -6 (or the scale negative)."""
    digits = str(abs(unscaled))
    sign = "-" if unscaled < 0 else ""
    adjusted = -scale + (len(digits) - 1)
    if scale >= 0 and adjusted >= -6:
        if scale == 0:
            return sign + digits
        if len(digits) > scale:
            return f"{sign}{digits[:-scale]}.{digits[-scale:]}"
        return f"{sign}0.{digits.rjust(scale, '0')}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}E{'+' if adjusted > 0 else ''}{adjusted}"


def numeric_renderer(modifier: int, mode: str) -> tuple[Callable[[bytes], Any], dict[str, Any]]:
    """The rendering of a numeric column with this type modifier (-1: unconstrained)."""
    variable = modifier < 0
    precision_, scale = ((modifier - 4) >> 16 & 0xFFFF, (modifier - 4) & 0xFFFF) if not variable else (0, 0)
    if mode == "double":
        def render_double(data: bytes) -> float | str:
            return data.decode() if data in _SPECIAL else float(data)

        return render_double, {"type": "double"}
    if mode == "string":
        def render_string(data: bytes) -> str:
            if data in _SPECIAL:
                return data.decode()
            unscaled, data_scale = split_decimal(data)
            return java_decimal_string(unscaled, data_scale)

        return render_string, {"type": "string"}
    if variable:
        def render_variable(data: bytes) -> dict[str, Any]:
            unscaled, data_scale = split_decimal(data)
            if unscaled == 0:
                data_scale = 0
            while data_scale > 0 and unscaled % 10 == 0:
                unscaled //= 10
                data_scale -= 1
            return {"scale": data_scale, "value": unscaled_bytes(unscaled)}

        return render_variable, VARIABLE_SCALE_SCHEMA

    def render_fixed(data: bytes) -> str:
        unscaled, data_scale = split_decimal(data)
        if data_scale < scale:
            unscaled *= 10 ** (scale - data_scale)
        return unscaled_bytes(unscaled)

    schema = {
        "type": "bytes",
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": str(scale), "connect.decimal.precision": str(precision_)},
    }
    return render_fixed, schema
