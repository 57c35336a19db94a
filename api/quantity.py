"""Kubernetes resource quantities (``10Gi``, ``500Mi``, ``1.5Gi``, ``1e9``, ``100M``).

Parsing follows ``k8s.io/apimachinery/pkg/api/resource.ParseQuantity``: an optional sign, digits with an
optional fraction, then one suffix: binary (``Ki`` .. ``Ei``), decimal (``n u m k M G T P E``) or a decimal
exponent (``e3``, ``E-6``). Values are kept exactly (as a :class:`fractions.Fraction`) and rounded up to
nano units as Kubernetes does. :meth:`Quantity.canonical` prints the value the way the API server
serialises it (``1.5Gi`` -> ``1536Mi``, ``1000M`` -> ``1G``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from api.errors import RegistryCacheError

BINARY_SI = "BinarySI"
DECIMAL_SI = "DecimalSI"
DECIMAL_EXPONENT = "DecimalExponent"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {v: k for k, v in _DECIMAL.items()}
_BINARY_BY_EXP = {v: k for k, v in _BINARY.items()}
_SUFFIX_CHARS = set("eEinumkKMGTP")
_DIGITS = set("0123456789")
_NANO = Fraction(1, 10**9)


class QuantityError(RegistryCacheError, ValueError):
    """The text is not a Kubernetes quantity."""


@dataclass(frozen=True)
class Quantity:
    """An exact quantity, the format its suffix implies, and the text it was written as (which Go's
    ``Quantity.String()`` prints, and so error messages show)."""

    value: Fraction
    format: str
    text: str = ""

    def canonical(self) -> str:
        return _canonical(self.value, self.format)

    def __str__(self) -> str:  # Go's String(): the text as written, else the canonical form
        return self.text or self.canonical()

    def __eq__(self, other: object) -> bool:  # semantic equality, as apiequality.Semantic
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def sign(self) -> int:
        return (self.value > 0) - (self.value < 0)


def _split(text: str) -> tuple[bool, str, str, str]:
    """Split like resource.parseQuantityString: (positive, integer digits, fraction digits, suffix)."""
    pos, end, positive = 0, len(text), True
    if text[0] in "+-":
        positive = text[0] == "+"
        pos = 1
    while pos < end and text[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos != end:
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text!r}")
    return positive, num, denom, text[suffix_start:]


def _interpret_suffix(suffix: str, text: str) -> tuple[int, int, str]:
    """Return (base, exponent, format) for a suffix."""
    if suffix in _BINARY:
        return 2, _BINARY[suffix], BINARY_SI
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix], DECIMAL_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        exp = suffix[1:]
        digits = exp[1:] if exp[0] in "+-" else exp
        if digits and set(digits) <= _DIGITS:
            return 10, int(exp), DECIMAL_EXPONENT
    raise QuantityError(f"unable to parse quantity's suffix {suffix!r} in {text!r}: expected one of "
                        "Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent like e3")


def parse_quantity(text: str) -> Quantity:
    if not isinstance(text, str):
        raise QuantityError(f"a quantity must be a string or a number, got {type(text).__name__}")
    if not text:
        raise QuantityError("quantities must match the regular expression "
                            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got ''")
    positive, num, denom, suffix = _split(text)
    base, exponent, fmt = _interpret_suffix(suffix, text)
    if base == 10 and abs(exponent) > 100000:
        raise QuantityError(f"quantity {text!r} is out of range")
    numeric = text[:len(text) - len(suffix)]
    if not any(c in _DIGITS for c in numeric) and (
            (base == 2 and exponent >= 50) or (base == 10 and exponent - len(denom) < -9)):
        # Go takes its slow path for these and cannot parse an empty number (it reads "Gi" or "e3" as 0)
        raise QuantityError(f"unable to parse numeric part of quantity {text!r}")
    value = Fraction(int(num + denom), 10 ** len(denom)) * Fraction(base) ** exponent
    # Kubernetes keeps at most nano precision and rounds away from zero.
    value = Fraction(math.ceil(value / _NANO)) * _NANO
    keep = text if _text_is_canonical(num, denom, base, exponent) else ""
    return Quantity(value if positive else -value, fmt, keep)


_INT64_MAX = (1 << 63) - 1


def _text_is_canonical(num: str, denom: str, base: int, exponent: int) -> bool:
    """Whether ParseQuantity keeps the text as the quantity's string form: only on its int64 fast path and
    when the number is "in canonical form" by Go's own test."""
    if base == 2:
        if exponent < 0 or denom:
            return False
        precision, scale, mantissa = 15 - len(num) - int(exponent * 3 / 10) - 1, 0, 1 << exponent
    else:
        precision, scale, mantissa = 18 - len(num) - len(denom), exponent - len(denom), 1
    if precision < 0 or scale < -9:
        return False
    shifted = num + denom
    value = int(shifted)
    if value > _INT64_MAX or value * mantissa > _INT64_MAX:
        return False
    if base == 2:
        return exponent % 10 == 0 and value & 0x07 != 0
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


def _canonical(value: Fraction, fmt: str) -> str:
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if fmt == BINARY_SI and (magnitude < 1024 or magnitude.denominator != 1):
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        mantissa, exp = int(magnitude), 0
        while exp < 60 and mantissa % 1024 == 0:
            mantissa //= 1024
            exp += 10
        return f"{sign}{mantissa}{_BINARY_BY_EXP.get(exp, '')}"
    # decimal: the smallest multiple-of-3 exponent that makes the mantissa an integer, then grow it
    exp = -9
    scaled = Fraction(magnitude * 10**9)
    while scaled.denominator != 1:  # cannot happen after nano rounding, kept for safety
        scaled *= 1000
        exp -= 3
    mantissa_int = int(scaled)
    while mantissa_int % 1000 == 0:
        mantissa_int //= 1000
        exp += 3
    if fmt == DECIMAL_SI and exp in _DECIMAL_BY_EXP:
        return f"{sign}{mantissa_int}{_DECIMAL_BY_EXP[exp]}"
    return f"{sign}{mantissa_int}" + (f"e{exp}" if exp else "")
