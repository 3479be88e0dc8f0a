"""The causal decision rule: hand-worked answers, one function whether stepped or vectorised, never reads the
future, a bounded memory (so a fresh computation from the last readings equals the long-running state), and
its tuning on validation series."""

from __future__ import annotations

import numpy as np
import pytest

from airwatt.models.decision import (
    NEVER,
    ApplianceDecision,
    DecisionRule,
    DecisionSpec,
    DecisionState,
    decide_on,
    decide_series,
    decision_spec,
)
from airwatt.models.tuning import DecisionGrid, TuningSeries, tune_appliance

IV = 5.0


def rule_of(memory_s: float = 60, **params: float) -> DecisionRule:
    p = {"on_prob": 0.6, "off_prob": 0.4, "confirm_on_s": 15, "confirm_off_s": 10, **params}
    return DecisionRule.of(decision_spec(memory_s, {"a": p}), ["a"], IV)


def stepped(rule: DecisionRule, prob: np.ndarray, known: np.ndarray, first_slot: int = 0):
    """The rule advanced one reading at a time, as the service does."""
    state = DecisionState.blank(1, prob.shape[1])
    on, since = [], []
    for t in range(len(prob)):
        o, s = state.step(rule, prob[t : t + 1], known[t : t + 1], np.array([first_slot + t]))
        on.append(o[0])
        since.append(s[0])
    return np.array(on), np.array(since), state


def test_a_switch_is_confirmed_after_its_duration_and_dated_to_its_start() -> None:
    rule = rule_of()  # on: 3 readings >= 0.6; off: 2 readings < 0.4; memory 12 readings
    p = np.array([0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.5, 0.3, 0.9, 0.2, 0.2, 0.2])[:, None]
    d = decide_series(rule, p, np.ones(len(p), bool))
    # Off is confirmed at reading 1 (two readings < 0.4); on at reading 4 (readings 2-4 >= 0.6), dated 2;
    # 0.5 (band) and a single 0.3 hold it on; readings 9-10 confirm off at 10, dated 9.
    expected = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(d.on[:, 0], np.array(expected, bool))
    assert d.since[4, 0] == 2 and d.since[8, 0] == 2
    assert d.since[10, 0] == 9 and d.since[11, 0] == 9
    # Readings 0-1 ("off" confirmed at 1, but no earlier on-confirmation in memory): since unknown.
    assert d.since[1, 0] == NEVER


def test_unknown_readings_break_runs_and_the_band_falls_back_after_the_memory() -> None:
    rule = rule_of(memory_s=30)  # 6 readings of memory; on: 3 readings >= 0.6; band [0.4, 0.6), middle 0.5
    p = np.array([0.9, 0.9, 0.9, 0.9] + [0.45] * 7 + [0.9, 0.9])[:, None]
    known = np.ones(len(p), bool)
    known[11] = False  # breaks the on-run 11-12
    d = decide_series(rule, p, known)
    # Confirmed on at 2 and 3; the confirmation at 3 (readings 1-3) lies inside the memory up to reading 6.
    np.testing.assert_array_equal(d.on[2:7, 0], True)
    # From 7 no whole confirmation is in memory: the middle of the band decides (0.45 < 0.5: off).
    np.testing.assert_array_equal(d.on[7:11, 0], False)
    assert (d.since[7:11, 0] == NEVER).all()
    # Reading 12 follows an unknown one: a run of 1 confirms nothing; the band's middle says on.
    assert d.on[12, 0] and d.since[12, 0] == NEVER


def test_the_stepped_rule_equals_the_vectorised_one_on_random_series() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        a = 3
        spec = DecisionSpec(
            memory_s=float(rng.integers(1, 40)) * IV,
            appliances={
                f"a{j}": ApplianceDecision(
                    on_prob=(on := float(rng.uniform(0.3, 0.9))),
                    off_prob=float(on - rng.uniform(0, 0.3)) if trial % 3 else on,
                    confirm_on_s=float(rng.integers(0, 6)) * IV,
                    confirm_off_s=float(rng.integers(0, 6)) * IV,
                )
                for j in range(a)
            },
        )
        try:
            rule = DecisionRule.of(spec, [f"a{j}" for j in range(a)], IV)
        except ValueError:
            continue  # a confirmation longer than the memory
        n = 300
        prob = np.clip(np.cumsum(rng.normal(0, 0.2, (n, a)), axis=0) * 0.2 + 0.5, 0, 1).astype(np.float32)
        known = rng.random(n) > 0.05
        first = int(rng.integers(0, 10**9))
        d = decide_series(rule, prob, known, first_slot=first)
        on, since, state = stepped(rule, prob, known, first_slot=first)
        np.testing.assert_array_equal(d.on, on)
        np.testing.assert_array_equal(decide_on(rule, prob, known, first_slot=first), on)  # the states alone
        np.testing.assert_array_equal(d.since, since)
        for f in DecisionState.FIELDS:
            np.testing.assert_array_equal(getattr(d.final, f), getattr(state, f), err_msg=f)


def test_changing_readings_after_t_never_changes_the_state_at_t() -> None:
    rng = np.random.default_rng(1)
    rule = rule_of(memory_s=100)
    prob = rng.random((400, 1)).astype(np.float32)
    known = np.ones(400, bool)
    base = decide_series(rule, prob, known)
    for t in (0, 50, 199, 398):
        later = prob.copy()
        later[t + 1 :] = 1 - later[t + 1 :]
        other = decide_series(rule, later, known)
        np.testing.assert_array_equal(base.on[: t + 1], other.on[: t + 1])
        np.testing.assert_array_equal(base.since[: t + 1], other.since[: t + 1])


def test_the_state_depends_only_on_the_last_memory_readings() -> None:
    """A fresh start M readings back gives the same state and since as a rule that ran all along: what lets
    a stateless call (any worker, no cache) answer exactly what a long-running session answers."""
    rng = np.random.default_rng(2)
    rule = rule_of(memory_s=60)
    m = rule.memory
    n = 500
    prob = (rng.random((n, 1)) ** rng.choice([0.3, 3.0], (n, 1))).astype(np.float32)
    known = rng.random(n) > 0.03
    whole = decide_series(rule, prob, known)
    for t in range(m, n):
        fresh = decide_series(rule, prob[t - m + 1 : t + 1], known[t - m + 1 : t + 1], first_slot=t - m + 1)
        assert fresh.on[-1, 0] == whole.on[t, 0], t
        assert fresh.since[-1, 0] == whole.since[t, 0], t


def test_a_confirmation_longer_than_the_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than the longest confirmation"):
        rule_of(memory_s=10, confirm_on_s=30)
    with pytest.raises(ValueError, match="off_prob"):
        ApplianceDecision(on_prob=0.4, off_prob=0.6, confirm_on_s=0, confirm_off_s=0)


def test_tuning_finds_a_rule_that_beats_the_plain_threshold_on_flickering_probabilities() -> None:
    """Truth: on for 40 readings of every 100. The model flickers below 0.5 inside on-runs and above 0.5
    outside; a confirmation and a band remove the flicker, and the search finds them."""
    rng = np.random.default_rng(3)
    n = 5000
    truth = (np.arange(n) % 100) < 40
    prob = np.where(truth, 0.75, 0.25) + rng.normal(0, 0.2, n)
    spikes = rng.random(n) < 0.08
    prob[spikes] = 1 - prob[spikes]
    series = [
        TuningSeries(
            prob[:, None].astype(np.float32), np.ones(n, bool), truth[:, None], np.ones((n, 1), bool)
        )
    ]
    grid = DecisionGrid(memory_s=120, on_prob=[0.5, 0.6, 0.7], band=[0.0, 0.2], confirm_s=[0, 10, 20])
    params, f1 = tune_appliance(series, 0, grid, IV, max_confirm_s=(60, 60))
    plain = decide_series(
        rule_of(120, on_prob=0.5, off_prob=0.5, confirm_on_s=0, confirm_off_s=0),
        prob[:, None],
        np.ones(n, bool),
    ).on[:, 0]
    plain_f1 = 2 * (plain & truth).sum() / (plain.sum() + truth.sum())
    assert f1 > plain_f1 + 0.03
    assert params.confirm_on_s > 0 or params.off_prob < params.on_prob


def test_tuning_never_confirms_longer_than_the_appliances_minimum_durations() -> None:
    """A microwave (min on 12 s): confirmations above it are not searched, however the validation data
    looks; an appliance never on in validation keeps the labelling rule made causal."""
    from airwatt.models.tuning import DecisionGrid, TuningSeries, tune_appliance

    rng = np.random.default_rng(4)
    n = 4000
    truth = (np.arange(n) % 400) < 100
    prob = np.where(truth, 0.8, 0.2) + rng.normal(0, 0.25, n)
    series = [
        TuningSeries(
            prob[:, None].astype(np.float32), np.ones(n, bool), truth[:, None], np.ones((n, 1), bool)
        )
    ]
    grid = DecisionGrid(memory_s=120, on_prob=[0.5, 0.7], band=[0.0, 0.2], confirm_s=[0, 10, 30, 120])
    params, _ = tune_appliance(series, 0, grid, IV, max_confirm_s=(12, 30))
    assert params.confirm_on_s <= 12 and params.confirm_off_s <= 30
    never = [
        TuningSeries(
            prob[:, None].astype(np.float32), np.ones(n, bool), np.zeros((n, 1), bool), np.ones((n, 1), bool)
        )
    ]
    start, f1 = tune_appliance(never, 0, grid, IV, max_confirm_s=(1800, 160))
    assert np.isnan(f1) and (start.on_prob, start.confirm_on_s, start.confirm_off_s) == (0.5, 120, 120)


def test_offline_tuning_lowers_the_threshold_where_validation_probabilities_sit_low() -> None:
    """Appliance 0: on-runs at probability 0.3 (0.5 finds none of them), appliance 1: a confident model
    (0.5 is as good as any: the start is kept), appliance 2: never on in validation (keeps 0.5, no F1)."""
    from airwatt.models.tuning import DecisionGrid, TuningSeries, tune_offline

    n = 3000
    truth = (np.arange(n) % 300) < 60
    prob = np.stack([np.where(truth, 0.3, 0.05), np.where(truth, 0.9, 0.1), np.full(n, 0.05)], 1)
    on_truth = np.stack([truth, truth, np.zeros(n, bool)], 1)
    valid = np.ones(n, bool)
    valid[:100] = False  # readings without an input are never on offline
    series = [TuningSeries(prob.astype(np.float32), valid, on_truth, np.ones((n, 3), bool), valid)]
    grid = DecisionGrid(memory_s=120, on_prob=[0.5, 0.3, 0.7, 0.2], band=[0.0], confirm_s=[0])
    thresholds, f1 = tune_offline(series, ["a", "b", "c"], grid, smooth=lambda state: state)
    assert thresholds == {"a": 0.3, "b": 0.5, "c": 0.5}
    expected_recall = truth[100:].sum() / truth.sum()  # the first 100 readings cannot be found
    assert f1["a"] == pytest.approx(2 * expected_recall / (1 + expected_recall))
    assert f1["c"] is None
