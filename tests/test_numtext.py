"""Vectorised CSV text: exact shortest decimals, padding dropped, quoting, chunk hints."""

import numpy as np
import pytest

from lesionprop.numtext import FloatText, csv_lines, float_field, run_codes, text_field


def lines_of(*fields):
    return csv_lines(list(fields)).decode().splitlines()


def test_float_text_is_the_shortest_exact_decimal():
    x = np.array([0.0, -0.0, 5.0, -3.25, 206.9954, 0.1, 0.000089, 1e-7, 10000.00005, 12345678.9, 1e3, 2.5])
    assert lines_of(float_field(x)) == ["0", "-0", "5", "-3.25", "206.9954", "0.1", "0.000089", "0.0000001",
                                        "10000.00005", "12345678.9", "1000", "2.5"]


def test_values_without_a_short_decimal_use_repr():
    x = np.array([1 / 3, 0.30000000000000004, np.nan, np.inf, -np.inf, 1e22, 2.5e-300, 1.5])
    assert lines_of(float_field(x)) == ["0.3333333333333333", "0.30000000000000004", "nan", "inf", "-inf",
                                        "1e+22", "2.5e-300", "1.5"]
    assert lines_of(float_field(np.array([0.5, 7.0]), max_decimals=0)) == ["0.5", "7"]
    with pytest.raises(ValueError, match="max_decimals"):
        float_field(x, max_decimals=16)


def test_random_values_round_trip_exactly_across_chunks():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1000, 3000).round(4), rng.random(3000).astype(np.float32).astype(float),
                        rng.normal(0, 1e6, 3000), rng.integers(-10**9, 10**9, 3000).astype(float)])
    fmt = FloatText()
    text = []
    for lo in range(0, x.size, 1000):     # the precision changes between chunks
        text += lines_of(fmt(x[lo:lo + 1000]))
    back = np.array([float(t) for t in text])
    assert np.array_equal(back, x)
    assert all(t == repr(float(t)).removesuffix(".0") for t in text[:3000] if "e" not in repr(float(t)))


def test_text_field_quotes_like_the_csv_module_and_joins_rows():
    codes, heads = run_codes(np.array(["a", "a", 'say "hi"', "x,y", "a"], dtype=object))
    assert codes.tolist() == [0, 0, 1, 2, 3] and heads.tolist() == ["a", 'say "hi"', "x,y", "a"]
    name = text_field(codes, heads)
    assert lines_of(name, float_field(np.arange(5.0))) == ["a,0", "a,1", '"say ""hi""",2', '"x,y",3', "a,4"]
    with pytest.raises(ValueError, match="NUL"):
        text_field(np.array([0]), ["a\0b"])


@pytest.mark.parametrize("decimals", [0, 2, 4, 6])
def test_annotation_number_text_equals_the_row_formatter(decimals):
    """``num_texts`` (DL_info fields, vectorised) writes what ``num_text`` writes, ties, signs,
    huge and whole numbers included; with 0 decimals an integer keeps its zeros (was '1' for 1e15)."""
    from lesionprop.annotations.arrow_text import num_texts
    from lesionprop.data.deeplesion import num_text

    rng = np.random.default_rng(decimals)
    x = np.concatenate([[0.0, -0.0, -0.00001, 0.00005, 0.00015, 0.5, -0.5, 2.5, 9.99995, 1e15, -1e16, 1e20,
                         123456789.12345, 99999.99995, 1e-300, 100.0, 1000000.0],
                        rng.uniform(-600, 600, 3000), np.round(rng.uniform(0, 300, 3000) * 2) / 2,
                        rng.normal(0, 1e6, 1000)])
    assert num_texts(x, decimals).to_pylist() == [num_text(v, decimals) for v in x]
    # ties: midpoints of numbers with `decimals` decimals (a 5 in the next decimal, off by the
    # binary error either way), exact binary ties (k / 2**j), ties at 2**40 and beyond
    unit = 10 ** decimals
    a, b = (np.round(rng.uniform(-600, 600, (2, 20000)) * unit) / unit)
    j = np.arange(1, 12)
    exact = np.concatenate([np.outer(np.arange(1, 400, 2), 0.5 ** j).ravel(), [0.03125, 0.09375, 2.5, 3.5]])
    big = (2.0 ** np.arange(30, 52)) / unit + 0.5 / unit
    x = np.concatenate([(a + b) / 2, exact, -exact, big, np.nextafter(big, 0), np.nextafter(big, np.inf)])
    assert num_texts(x, decimals).to_pylist() == [num_text(v, decimals) for v in x]
    assert num_text(1e15 + 0.5, 0) == "1000000000000000"
