from fractions import Fraction

import pytest

from api.quantity import QuantityError, parse_quantity


@pytest.mark.parametrize("text, value, canonical", [
    ("10Gi", 10 * 2**30, "10Gi"),
    ("500Mi", 500 * 2**20, "500Mi"),
    ("1.5Gi", 3 * 2**29, "1536Mi"),
    ("1e9", 10**9, "1e9"),
    ("100M", 10**8, "100M"),
    ("1000M", 10**9, "1G"),
    ("1024Ki", 2**20, "1Mi"),
    ("1536", 1536, "1536"),
    ("1Ki", 1024, "1Ki"),
    ("0.5Ki", 512, "512"),
    ("100m", Fraction(1, 10), "100m"),
    ("1.5", Fraction(3, 2), "1500m"),
    ("1E", 10**18, "1E"),
    ("1Ei", 2**60, "1Ei"),
    ("+5k", 5000, "5k"),
    ("-1Gi", -(2**30), "-1Gi"),
    ("0", 0, "0"),
    ("0Gi", 0, "0"),
    ("Gi", 0, "0"),  # Go accepts a suffix alone as zero
    ("00010", 10, "10"),
    ("1.", 1, "1"),
    ("1e-3", Fraction(1, 1000), "1e-3"),
    ("1n", Fraction(1, 10**9), "1n"),
    ("0.0000000001", Fraction(1, 10**9), "1n"),  # rounded up to nano as Kubernetes does
    ("12E3", 12000, "12e3"),
])
def test_parse_and_canonical(text, value, canonical):
    q = parse_quantity(text)
    assert q.value == value
    assert q.canonical() == canonical


@pytest.mark.parametrize("text", ["", "1Gx", "1.5.5Gi", "1 Gi", " 1Gi", "1K", "1e", "1E+", "one", "1iB",
                                  "1Gi ", "--1", "1e3.5", "1Mi1"])
def test_invalid(text):
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_semantic_equality():
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert parse_quantity("1G") != parse_quantity("1Gi")
    assert parse_quantity("1Gi") < parse_quantity("2Gi")
