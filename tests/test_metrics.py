"""Metrics against values computed by hand on tiny arrays (docs/metrics.md has the definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional import mean_absolute_error
from torchmetrics.functional.classification import binary_f1_score, binary_precision, binary_recall

from airwatt.metrics import (
    METRIC_KEYS,
    DisaggregationMetrics,
    flat_metrics,
    mean_over_appliances,
    metrics_table,
    onoff_metrics,
    onoff_totals,
    power_metrics,
    power_totals,
)

NAN = math.nan

# Six readings; the last two are masked out (one holds garbage, one a NaN truth: neither may count).
TRUE_W = torch.tensor([0.0, 100.0, 100.0, 0.0, 50.0, NAN])
PRED_W = torch.tensor([10.0, 80.0, 100.0, 0.0, 999.0, 7.0])
MASK = torch.tensor([True, True, True, True, False, False])

TRUE_ON = torch.tensor([1, 1, 0, 0, 1, 0]).bool()
PRED_ON = torch.tensor([1, 0, 1, 1, 1, 1]).bool()


def _scalars(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def test_power_metrics_by_hand_with_masking() -> None:
    m = _scalars(power_metrics(PRED_W, TRUE_W, MASK))
    # |err| over the 4 counted readings: 10, 20, 0, 0
    assert m["mae_w"] == pytest.approx((10 + 20 + 0 + 0) / 4)
    # Σŷ = 10 + 80 + 100 + 0 = 190; Σy = 0 + 100 + 100 + 0 = 200
    assert m["sae"] == pytest.approx(abs(190 - 200) / 200)
    # Σ(ŷ-y)² = 10² + 20² = 500; Σy² = 100² + 100² = 20000 (Zhang 2018 form: no square root)
    assert m["nde"] == pytest.approx(500 / 20000)
    assert m["eac"] == pytest.approx(1 - 30 / (2 * 200))


def test_mae_agrees_with_torchmetrics_on_the_counted_readings() -> None:
    ours = power_metrics(PRED_W, TRUE_W, MASK)["mae_w"]
    theirs = mean_absolute_error(PRED_W[MASK], TRUE_W[MASK])
    assert float(ours) == pytest.approx(float(theirs))


def test_onoff_metrics_by_hand_with_masking() -> None:
    mask = torch.tensor([True, True, True, True, True, False])
    m = _scalars(onoff_metrics(PRED_ON, TRUE_ON, mask))
    # counted: truth 1 1 0 0 1, predicted 1 0 1 1 1 -> TP = 2 (0, 4), FP = 2 (2, 3), FN = 1 (1)
    assert m["precision"] == pytest.approx(2 / (2 + 2))
    assert m["recall"] == pytest.approx(2 / (2 + 1))
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # The same definitions as torchmetrics where they are defined.
    p, t = PRED_ON[mask].int(), TRUE_ON[mask].int()
    assert m["precision"] == pytest.approx(float(binary_precision(p, t)))
    assert m["recall"] == pytest.approx(float(binary_recall(p, t)))
    assert m["f1"] == pytest.approx(float(binary_f1_score(p, t)))


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        # never on, never predicted: nothing to detect and nothing claimed -> all undefined
        ([0, 0, 0], [0, 0, 0], {"precision": NAN, "recall": NAN, "f1": NAN}),
        # never on, predicted once: FP = 1 -> precision 0, recall undefined, F1 = 0 / (0 + 1 + 0)
        ([0, 0, 0], [0, 1, 0], {"precision": 0.0, "recall": NAN, "f1": 0.0}),
        # on twice, never predicted: FN = 2 -> precision undefined, recall 0, F1 = 0 / (0 + 0 + 2)
        ([1, 1, 0], [0, 0, 0], {"precision": NAN, "recall": 0.0, "f1": 0.0}),
    ],
)
def test_onoff_edge_cases(truth: list[int], pred: list[int], expected: dict[str, float]) -> None:
    m = _scalars(onoff_metrics(torch.tensor(pred).bool(), torch.tensor(truth).bool(), torch.ones(3).bool()))
    for key, want in expected.items():
        assert (math.isnan(m[key]) and math.isnan(want)) or m[key] == want, (key, m[key], want)


def test_zero_truth_energy_leaves_ratios_undefined_but_mae_defined() -> None:
    m = _scalars(power_metrics(torch.tensor([0.0, 5.0]), torch.tensor([0.0, 0.0]), torch.ones(2).bool()))
    assert m["mae_w"] == pytest.approx((0 + 5) / 2)
    assert math.isnan(m["sae"]) and math.isnan(m["nde"]) and math.isnan(m["eac"])


def test_nothing_counted_gives_nan_everywhere() -> None:
    none = torch.zeros(3).bool()
    power = _scalars(power_metrics(torch.ones(3), torch.ones(3), none))
    onoff = _scalars(onoff_metrics(torch.ones(3).bool(), torch.ones(3).bool(), none))
    assert all(math.isnan(v) for v in [*power.values(), *onoff.values()])


def test_columns_are_appliances_and_each_has_its_own_mask() -> None:
    pred = torch.tensor([[10.0, 1.0], [30.0, 2.0]])
    true = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    mae = power_metrics(pred, true, mask)["mae_w"]
    assert mae.shape == (2,)
    # appliance 0: (10 + 30) / 2; appliance 1: only the first reading counts, |1 - 1| = 0
    assert mae.tolist() == pytest.approx([(10 + 30) / 2, 0.0])
    assert power_metrics(pred[:, 0], true[:, 0], mask[:, 0])["mae_w"].shape == ()


def test_epoch_metric_pools_readings_instead_of_averaging_batches() -> None:
    metric = DisaggregationMetrics(num_appliances=1)
    ones = torch.ones(1, 1).bool()
    # batch 1: one reading, |err| = 10, truth on, predicted on (TP)
    metric.update(torch.tensor([[10.0]]), torch.tensor([[0.0]]), ones, ones, ones, ones)
    # batch 2: three readings, |err| = 0; truth on, predicted off each time (3 FN)
    b = torch.ones(3, 1).bool()
    metric.update(torch.zeros(3, 1), torch.zeros(3, 1), b, ~b, b, b)
    out = {k: float(v.reshape(-1)[0]) for k, v in metric.compute().items()}
    assert out["mae_w"] == pytest.approx((10 + 0) / (1 + 3))  # not the batch mean (10 + 0) / 2
    assert out["f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 3))  # not the batch mean (1 + 0) / 2
    assert flat_metrics(metric.compute(), ["fridge"], prefix="val/")["val/mae_w/fridge"] == out["mae_w"]
    metric.reset()
    assert not metric.power.any() and not metric.onoff.any()


def test_flat_metrics_name_appliances_mean_them_and_drop_undefined() -> None:
    values = {"mae_w": torch.tensor([2.0, 4.0]), "recall": torch.tensor([0.5, NAN])}
    assert flat_metrics(values, ["fridge", "kettle"], prefix="val/") == {
        "val/mae_w": (2.0 + 4.0) / 2,
        "val/mae_w/fridge": 2.0,
        "val/mae_w/kettle": 4.0,
        "val/recall": 0.5,
        "val/recall/fridge": 0.5,
    }


def test_pooled_totals_differ_from_the_mean_of_devices() -> None:
    """Summed totals pool the readings of all devices: the 'appliances' block of the evaluation report."""
    one = torch.ones(1).bool()
    dev_a = onoff_totals(one, one, one)  # one reading: TP -> F1 1
    t3 = torch.ones(3).bool()
    dev_b = onoff_totals(torch.tensor([0, 0, 1]).bool(), t3, t3)  # TP 1, FN 2 -> F1 2 / (2 + 2) = 0.5
    pa = power_totals(torch.tensor([4.0]), torch.tensor([0.0]), one)
    pb = power_totals(torch.zeros(3), torch.zeros(3), t3)
    per_device = [
        metrics_table(p.numpy(), o.numpy(), ["fridge"], has_power=[True])["fridge"]
        for p, o in ((pa, dev_a), (pb, dev_b))
    ]
    assert [d["f1"] for d in per_device] == pytest.approx([1.0, 0.5])
    pooled = metrics_table((pa + pb).numpy(), (dev_a + dev_b).numpy(), ["fridge"], has_power=[True])["fridge"]
    assert pooled["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 2))  # TP 2, FN 2: 2/3, not (1 + 0.5) / 2
    assert pooled["mae_w"] == pytest.approx((4 + 0) / (1 + 3))  # not (4 + 0) / 2


def test_report_table_uses_null_and_the_mean_skips_it() -> None:
    power = power_totals(
        torch.tensor([[10.0, 0.0], [30.0, 0.0]]),
        torch.tensor([[0.0, 0.0], [20.0, 0.0]]),
        torch.ones(2, 2).bool(),
    ).numpy()
    onoff = onoff_totals(
        torch.tensor([[1, 1], [1, 0]]).bool(), torch.tensor([[0, 1], [1, 1]]).bool(), torch.ones(2, 2).bool()
    ).numpy()
    # The kettle has annotator labels only (no sub-meter): its power metrics are null whatever the totals say.
    table = metrics_table(power, onoff, ["fridge", "kettle"], has_power=[True, False])
    assert list(table) == ["fridge", "kettle"]
    assert all(list(v) == list(METRIC_KEYS) for v in table.values())
    fridge, kettle = table["fridge"], table["kettle"]
    assert fridge["mae_w"] == pytest.approx((10 + 10) / 2)
    assert fridge["sae"] == pytest.approx(abs(40 - 20) / 20)
    assert fridge["precision"] == pytest.approx(1 / 2) and fridge["recall"] == 1.0
    assert (
        kettle["mae_w"] is None and kettle["sae"] is None and kettle["nde"] is None and kettle["eac"] is None
    )
    assert kettle["precision"] == 1.0 and kettle["recall"] == pytest.approx(1 / 2)
    mean = mean_over_appliances(table)
    assert list(mean) == list(METRIC_KEYS)
    assert mean["mae_w"] == pytest.approx(10.0)  # the fridge alone: the kettle's null is skipped
    assert mean["f1"] == pytest.approx((2 * 1 / (2 + 1 + 0) + 2 * 1 / (2 + 0 + 1)) / 2)
    assert mean_over_appliances({"a": dict.fromkeys(METRIC_KEYS)})["f1"] is None


def test_totals_ignore_nan_outside_the_mask_in_float32() -> None:
    pred = np.array([np.nan, 1.0], np.float32)
    true = np.array([np.nan, 3.0], np.float32)
    mask = np.array([False, True])
    m = power_metrics(torch.from_numpy(pred), torch.from_numpy(true), torch.from_numpy(mask))
    assert float(m["mae_w"]) == pytest.approx(2.0)


def test_switch_events_count_delays_misses_and_false_switches() -> None:
    """Truth on at 2-4 and 8-9; the prediction switches on at 3 (1 reading late), misses 8-9 and switches
    on falsely at 11-12. Readings at 5 s; 14 readings counted."""
    from airwatt.metrics import switch_events

    truth = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0], bool)
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    e = switch_events(pred, truth, np.ones(14, bool), 5.0)
    values = e.values(5.0)
    assert (values["switch_ons"], values["detected"]) == (2.0, 0.5)
    assert values["delay_median_s"] == values["delay_p90_s"] == 5.0
    assert values["false_switches_per_day"] == pytest.approx(1 / (14 * 5 / 86400))
    # A run whose start is not observed (the reading before is not counted) is no switch-on.
    masked = np.ones(14, bool)
    masked[7] = False
    assert switch_events(pred, truth, masked, 5.0).switch_ons == 1
