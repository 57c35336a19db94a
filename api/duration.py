"""Go durations (``168h``, ``0s``, ``1h30m``, ``90m``, ``1.5h``), parsed and printed as Go's ``time`` does.

``parse_duration`` follows ``time.ParseDuration``: an optional sign, then one or more decimal numbers each
with a unit (``ns``, ``us``/``µs``/``μs``, ``ms``, ``s``, ``m``, ``h``); ``0`` alone is allowed. Fractions
are truncated to nanoseconds, the result must fit a signed 64-bit count of nanoseconds.
``format_duration`` is ``time.Duration.String`` (``168h0m0s``, ``1h30m0s``, ``1.5s``, ``0s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import RegistryCacheError

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
_MAX = (1 << 63) - 1

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_DIGITS = "0123456789"


class DurationError(RegistryCacheError, ValueError):
    """The text is not a Go duration."""


@dataclass(frozen=True, order=True)
class Duration:
    nanoseconds: int

    def __str__(self) -> str:
        return format_duration(self.nanoseconds)


def parse_duration(text: str) -> int:
    """Return the number of nanoseconds ``text`` stands for, or raise :class:`DurationError`."""
    if not isinstance(text, str):
        raise DurationError(f"a duration must be a string like \"168h\", got {type(text).__name__}")
    original, s = text, text
    negative = False
    if s and s[0] in "+-":
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f"time: invalid duration {original!r}")
    total = 0
    while s:
        if not (s[0] == "." or s[0] in _DIGITS):
            raise DurationError(f"time: invalid duration {original!r}")
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        whole_digits, s = s[:i], s[i:]
        frac_digits = ""
        if s.startswith("."):
            s = s[1:]
            i = 0
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            frac_digits, s = s[:i], s[i:]
        if not whole_digits and not frac_digits:
            raise DurationError(f"time: invalid duration {original!r}")
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit_text, s = s[:i], s[i:]
        if not unit_text:
            raise DurationError(f"time: missing unit in duration {original!r}")
        if unit_text not in _UNITS:
            raise DurationError(f"time: unknown unit {unit_text!r} in duration {original!r}")
        unit = _UNITS[unit_text]
        whole = int(whole_digits or "0")
        if whole > (_MAX + 1) // unit:
            raise DurationError(f"time: invalid duration {original!r}")
        value = whole * unit
        if frac_digits:
            # Go truncates the fraction towards zero at nanosecond precision.
            value += int(frac_digits) * unit // 10 ** len(frac_digits)
        total += value
        if total > _MAX + negative:  # -1<<63 is the one value whose magnitude exceeds the maximum
            raise DurationError(f"time: invalid duration {original!r}")
    return -total if negative else total


def _fmt_frac(value: int, precision: int) -> tuple[str, int]:
    """Digits after the point of value / 10**precision (trailing zeros dropped) and the integer part."""
    digits = ""
    printed = False
    for _ in range(precision):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    return ("." + digits if printed else ""), value


def format_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    u = abs(nanoseconds)
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        if u < MILLISECOND:
            frac, whole = _fmt_frac(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        frac, whole = _fmt_frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, whole_seconds = _fmt_frac(u, 9)
    out = f"{whole_seconds % 60}{frac}s"
    minutes = whole_seconds // 60
    if minutes > 0:
        out = f"{minutes % 60}m" + out
        hours = minutes // 60
        if hours > 0:
            out = f"{hours}h" + out
    return sign + out
