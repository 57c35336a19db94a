import pytest

from api.duration import HOUR, MINUTE, SECOND, DurationError, format_duration, parse_duration


@pytest.mark.parametrize("text, ns", [
    ("168h", 168 * HOUR),
    ("0s", 0),
    ("0", 0),
    ("+0", 0),
    ("1h30m", 90 * MINUTE),
    ("90m", 90 * MINUTE),
    ("1.5h", 90 * MINUTE),
    (".5h", 30 * MINUTE),
    ("1.h", HOUR),
    ("-1h", -HOUR),
    ("1h1m1s", HOUR + MINUTE + SECOND),
    ("300ms", 300_000_000),
    ("2us", 2000),
    ("2\u00b5s", 2000),
    ("2\u03bcs", 2000),
    ("7ns", 7),
    ("1.000000001s", SECOND + 1),
    ("1.0000000019s", SECOND + 1),  # truncated, as Go does
    ("2562047h47m16.854775807s", (1 << 63) - 1),
])
def test_parse(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text, message", [
    ("", "invalid duration"),
    ("1", "missing unit"),
    ("1d", "unknown unit 'd'"),
    ("h", "invalid duration"),
    (".h", "invalid duration"),
    ("1h-1m", "unknown unit .h-."),
    ("1 h", "unknown unit"),
    ("-", "invalid duration"),
    ("2562047h47m16.854775808s", "invalid duration"),
    ("9223372036854775808ns", "invalid duration"),
])
def test_invalid(text, message):
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("ns, text", [
    (0, "0s"),
    (168 * HOUR, "168h0m0s"),
    (90 * MINUTE, "1h30m0s"),
    (SECOND + SECOND // 2, "1.5s"),
    (300_000_000, "300ms"),
    (1_500_000, "1.5ms"),
    (2000, "2\u00b5s"),
    (7, "7ns"),
    (-HOUR, "-1h0m0s"),
    (61 * SECOND, "1m1s"),
    ((1 << 63) - 1, "2562047h47m16.854775807s"),
])
def test_format_like_go(ns, text):
    assert format_duration(ns) == text


def test_round_trip():
    for text in ["168h0m0s", "1h30m0s", "1.5s", "0s", "12m0.5s"]:
        assert format_duration(parse_duration(text)) == text
