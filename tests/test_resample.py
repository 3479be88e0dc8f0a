"""The resampling policy on small signals with known answers: mean within bin, bounded forward fill,
long gaps left missing and marked."""

from __future__ import annotations

import numpy as np
import pytest

from airwatt.importers.resample import clip_to_window, resample_channels, resample_to_grid

S = 1000  # ms per second


def _grid(t_s: list[float], v: list[float], *, max_fill_s: float = 60, interval_s: float = 5):
    t_ms = np.round(np.asarray(t_s) * S).astype(np.int64)
    return resample_to_grid(t_ms, {"p": np.asarray(v, float)}, interval_s=interval_s, max_fill_s=max_fill_s)


def test_value_is_the_mean_of_the_samples_inside_each_slot() -> None:
    g = _grid([0, 1, 2, 4.999, 5, 9], [10, 20, 30, 40, 100, 200])
    assert g.timestamps_ms.tolist() == [0, 5 * S]
    assert g.values["p"].tolist() == [25.0, 150.0]
    assert not g.filled["p"].any()


def test_slots_are_aligned_to_multiples_of_the_interval_since_the_epoch() -> None:
    g = _grid([1_700_000_003.2, 1_700_000_007.9], [1, 2])  # 1_700_000_000 is a multiple of 5
    assert g.timestamps_ms.tolist() == [1_700_000_000 * S, 1_700_000_005 * S]


def test_samples_in_any_order_give_the_same_grid() -> None:
    a = _grid([0, 3, 7, 12], [1, 2, 3, 4])
    b = _grid([12, 7, 0, 3], [4, 3, 1, 2])
    assert a.values["p"].tolist() == b.values["p"].tolist()


def test_empty_slots_are_forward_filled_up_to_max_fill_s_and_marked() -> None:
    # A 30 s source: each value covers the following five 5 s slots.
    g = _grid([0, 30, 60], [100, 200, 300], max_fill_s=60)
    assert len(g) == 13
    assert g.values["p"].tolist() == [100] * 6 + [200] * 6 + [300]
    assert g.filled["p"].tolist() == ([False] + [True] * 5) * 2 + [False]


def test_gaps_longer_than_max_fill_s_stay_missing_and_unfilled() -> None:
    g = _grid([0, 100], [7, 9], max_fill_s=20)
    v, f = g.values["p"], g.filled["p"]
    assert len(g) == 21  # every slot from 0 s to 100 s is a row: the gap is visible
    assert v[:5].tolist() == [7] * 5  # 0 s measured + 4 slots (5..20 s) filled
    assert f[1:5].all() and not f[0]
    assert np.isnan(v[5:20]).all()  # 25..95 s: further than 20 s from the last value
    assert not f[5:20].any()
    assert v[20] == 9 and not f[20]


def test_fill_limit_is_inclusive_in_seconds_not_samples() -> None:
    for interval_s, max_fill_s in ((5, 15), (10, 30)):
        g = _grid([0, 60], [1, 2], max_fill_s=max_fill_s, interval_s=interval_s)
        filled_s = int(g.filled["p"].sum()) * interval_s
        assert filled_s == max_fill_s


def test_zero_watts_is_a_value_not_a_gap() -> None:
    g = _grid([0, 30], [0, 0], max_fill_s=60)
    assert g.values["p"].tolist() == [0.0] * 7
    assert not np.isnan(g.values["p"]).any()


def test_missing_source_values_are_left_out_of_the_mean() -> None:
    g = _grid([0, 1, 5, 6, 10], [np.nan, 10, np.nan, np.nan, 30], max_fill_s=0)
    assert g.values["p"][0] == 10
    assert np.isnan(g.values["p"][1])  # only NaN samples: an empty slot, not filled with max_fill_s=0
    assert g.values["p"][2] == 30


def test_channels_with_their_own_clocks_share_one_grid() -> None:
    mains = (np.arange(0, 20, 1) * S, np.full(20, 100.0))  # 1 s
    fridge = (np.arange(2, 30, 3) * S, np.full(10, 50.0))  # 3 s, starts later, ends later
    g = resample_channels({"mains": mains, "fridge": fridge}, interval_s=5, max_fill_s=10)
    assert g.timestamps_ms.tolist() == [0, 5 * S, 10 * S, 15 * S, 20 * S, 25 * S]
    assert g.values["mains"].tolist() == [100] * 4 + [100, 100]  # 20 and 25 s filled from 15 s
    assert g.filled["mains"].tolist() == [False] * 4 + [True, True]
    assert g.values["fridge"].tolist() == [50] * 6


def test_clip_to_window_keeps_slots_in_start_inclusive_end_exclusive() -> None:
    g = _grid(list(range(0, 60, 5)), list(range(12)))
    c = clip_to_window(g, 10 * S, 30 * S)
    assert c.timestamps_ms.tolist() == [10 * S, 15 * S, 20 * S, 25 * S]
    assert c.values["p"].tolist() == [2, 3, 4, 5]


def test_no_samples_give_an_empty_grid() -> None:
    g = resample_to_grid(np.empty(0, np.int64), {"p": np.empty(0)}, interval_s=5, max_fill_s=60)
    assert len(g) == 0


@pytest.mark.parametrize("interval_s", [0, -5])
def test_interval_must_be_positive(interval_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        _grid([0], [1], interval_s=interval_s)
