"""The report's statistics on fixed inputs: the levelling-off check and the rank correlation."""

from __future__ import annotations

import math

import pytest

from experiments.analysis import levelling, rank_correlation


def test_a_flat_tail_is_levelled_off_and_a_rising_one_is_not():
    flat = {2000: 30.0, 8000: 44.0, 12000: 47.3, 16000: 47.5}
    rising = {2000: 30.0, 8000: 38.0, 12000: 42.0, 16000: 45.0}
    check = levelling([flat])
    # 80% of 16,000 is 12,800: the last point at or before it is 12,000
    assert (check.start, check.end, check.seeds) == (12000, 16000, 1)
    assert check.gain == pytest.approx(0.2) and check.levelled
    assert not levelling([rising]).levelled
    # the mean over seeds decides: +0.2 and +3.0 average to +1.6
    both = levelling([flat, rising])
    assert both.gain == pytest.approx(1.6) and not both.levelled and both.seeds == 2


def test_levelling_needs_a_point_in_the_tail_and_one_before_it():
    assert levelling([]) is None and levelling([{}]) is None
    assert levelling([{16000: 40.0}]) is None
    # a seed without the start point does not enter the mean
    check = levelling([{12000: 40.0, 16000: 40.5}, {16000: 50.0}])
    assert check.seeds == 1 and check.gain == pytest.approx(0.5)


def test_rank_correlation_on_a_fixed_input():
    # ranks of y with a tie: 1, 2, 3.5, 5, 3.5 -> rho = 8 / sqrt(10 * 9.5)
    got = rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert got.rho == pytest.approx(8 / math.sqrt(95)) and got.n == 5
    assert rank_correlation([1, 2, 3], [3, 2, 1]).rho == pytest.approx(-1.0)
    assert rank_correlation([1, 2], [1, 2]) is None  # too few pairs
    assert rank_correlation([1, 2, 3], [4, 4, 4]) is None  # constant: undefined
    with pytest.raises(ValueError, match="3 x values against 2"):
        rank_correlation([1, 2, 3], [1, 2])
