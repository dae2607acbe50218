"""PHP value semantics the Paheko stand-in must reproduce byte for byte.

Paheko is PHP: its JSON comes from ``json_encode``, its CSV cells from PHP's string cast, its
``$_GET``/``$_POST`` from PHP's query-string parser, and the keys of its result rows are PHP array keys.
These helpers model exactly the observable parts of those behaviours, nothing more.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from urllib.parse import unquote_plus

__all__ = ["EncodeError", "array_key", "json_encode", "parse_query", "php_trim", "to_string"]

PhpScalar = None | bool | int | float | str | bytes
PhpKey = int | str

_INT_KEY = re.compile(r"(?:0|-?[1-9][0-9]*)\Z")
_INT64 = 2**63
_PHP_WHITESPACE = " \t\n\r\0\x0b"
_JSON_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class EncodeError(ValueError):
    """``json_encode`` would return ``false`` (invalid UTF-8, INF or NAN)."""


def php_trim(text: str, chars: str = _PHP_WHITESPACE, *, left: bool = True, right: bool = True) -> str:
    """PHP ``trim``/``ltrim``/``rtrim`` with an explicit character list."""
    if left:
        text = text.lstrip(chars)
    if right:
        text = text.rstrip(chars)
    return text


def array_key(name: str) -> PhpKey:
    """The key PHP stores for ``$array[$name]``: canonical decimal integers become ints."""
    if _INT_KEY.match(name) and -_INT64 <= int(name) < _INT64:
        return int(name)
    return name


def _gcvt(value: float, significant: int | None, exp_char: str) -> str:
    """PHP's ``php_gcvt``: shortest round-trip digits when ``significant`` is None (serialize_precision=-1)."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    spec = repr(abs(value)) if significant is None else format(abs(value), f".{significant - 1}e")
    digits_tuple, exponent = Decimal(spec).as_tuple()[1:]
    digits = "".join(map(str, digits_tuple)).rstrip("0") or "0"
    decpt = len(digits_tuple) + exponent  # value = 0.DIGITS x 10**decpt
    limit = 17 if significant is None else significant
    if decpt < -3 or decpt > limit:
        mantissa = digits[0] + "." + (digits[1:] or "0")
        exp = decpt - 1
        return f"{sign}{mantissa}{exp_char}{'-' if exp < 0 else '+'}{abs(exp)}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if decpt >= len(digits):
        return sign + digits + "0" * (decpt - len(digits))
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def to_string(value: PhpScalar) -> str:
    """PHP's ``(string)`` cast as used for CSV cells (floats use ``precision=14``)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float):
        if math.isnan(value):
            return "NAN"
        if math.isinf(value):
            return "INF" if value > 0 else "-INF"
        return _gcvt(value, 14, "E")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _encode_string(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodeError("Malformed UTF-8 characters") from exc
    out = ['"']
    for char in value:
        code = ord(char)
        if char in _JSON_SHORT_ESCAPES:
            out.append(_JSON_SHORT_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif code < 0x80:
            out.append(char)
        elif 0xD800 <= code < 0xE000:
            raise EncodeError("Malformed UTF-8 characters")
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _encode_scalar(value: PhpScalar) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodeError("Inf and NaN cannot be JSON encoded")
        return _gcvt(value, None, "e")
    return _encode_string(value)


def _is_list(array: dict[PhpKey, object]) -> bool:
    return all(key == index for index, key in enumerate(array))


def json_encode(value: object, *, pretty: bool = False, _level: int = 0) -> str:
    """PHP ``json_encode`` (default flags, optionally ``JSON_PRETTY_PRINT``).

    Dicts are PHP arrays: keys are normalised with :func:`array_key` and a dict whose keys are
    ``0..n-1`` in order is encoded as a JSON list, as PHP does. Raises :class:`EncodeError` where
    PHP returns ``false``.
    """
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return _encode_scalar(value)  # type: ignore[arg-type]
    array = {array_key(k) if isinstance(k, str) else k: v for k, v in value.items()}
    is_list = _is_list(array)
    opening, closing = ("[", "]") if is_list else ("{", "}")
    if not array:
        return opening + closing
    members = []
    for key, item in array.items():
        encoded = json_encode(item, pretty=pretty, _level=_level + 1)
        if not is_list:
            encoded = _encode_string(str(key)) + (": " if pretty else ":") + encoded
        members.append(encoded)
    if not pretty:
        return opening + ",".join(members) + closing
    inner = "\n" + "    " * (_level + 1)
    return opening + inner + ("," + inner).join(members) + "\n" + "    " * _level + closing


def parse_query(data: str) -> dict[str, str]:
    """PHP's parsing of a query string or url-encoded body into ``$_GET``/``$_POST`` (scalars only).

    Leading spaces of names are dropped, spaces and dots become underscores, the last duplicate
    wins; array names (``a[]``) are left out: no caller of the stand-in relies on them.
    """
    params: dict[str, str] = {}
    for pair in data.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = unquote_plus(raw_name).lstrip(" ")
        if not name or "[" in name:
            continue
        params[name.replace(" ", "_").replace(".", "_")] = unquote_plus(raw_value)
    return params
