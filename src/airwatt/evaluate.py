"""Evaluate any model (MLflow URI or bundle directory) on any dataset in the workbench format.

For each selected device: its readings, ground truth and labels are put on the model's grid with the prepare
stage's code (``airwatt.prepare.grid.grid_device``) and the model's own gap policy (``spec.gap``), the model
predicts the whole series (``ModelBundle.predict_series``, by the model's rule), and per-appliance totals
(airwatt.metrics) are summed over the readings where the aggregate is valid and the truth is known.

What is scored (docs/metrics.md):

- a real-time model (target "last") is scored on what the service answers at each reading (rule
  ``served``): the causal decision rule's state and the watts it implies, with the service's gap policy; a
  reading the service leaves unanswered ("unknown") counts as predicted off at 0 W. The same model's
  offline (smoothed, future-reading) figures are reported under ``offline``;
- any other model is scored offline, on the readings it predicts.

Truth: power from the sub-meter ground truth; on/off status as prepare defines it (sub-meter labels, else
derived from the ground truth with the appliance's on threshold and minimum on/off durations, else annotator
labels). Labels with source "model" are never truth. An appliance with annotator labels but no sub-meter at a
device gets on/off metrics there and null power metrics.

The report (``--out``, written atomically)::

    {"model": {uri, arch, appliances, window, provenance...}, "data": {path, devices, selection, ...},
     "rule": "served" | "offline",                                          what the headline scores
     "appliances": {NAME: {mae_w, sae, nde, f1, precision, recall, eac}},   pooled over all devices' readings
     "mean": {...same keys...},                                             unweighted mean over appliances
     "switches": {NAME: {switch_ons, detected, delay_median_s, delay_p90_s, false_switches_per_day}, "mean"},
     "offline": {"appliances", "mean"},                                     real-time models only
     "devices": {DEV: {NAME: {...same keys...}}},                           per device
     "overlap": {with_training, provenance, devices, hours, evaluated, excluded}}

Overlap with training (airwatt.data_ranges): the evaluated data (per device, the UTC span of the grid slots
scored) is compared with what the model trained and validated on (its provenance ``data_ranges``). Any
overlap is logged as a WARNING naming the devices and ranges and reported: ``overlap.with_training`` true,
``overlap.devices`` the overlapping ranges, ``overlap.hours`` their length; false and empty when disjoint;
null with ``provenance: "unknown"`` (and a warning) for a model that does not record its data. Input readings
a window reaches beyond the scored span do not count: the truth scored is what a model can have memorised.
``exclude`` (promotion's fair comparison) leaves ranges out of the scoring: the model still reads them (as
input and as a real-time model's history), nothing in them is counted, and a device left with nothing to
score is skipped; when no device is left, ``NoDisjointData``.

The report is an ``airwatt.results.EvaluationReport`` (typed; its JSON dump is the file above, key for key):
the models live in airwatt.results because promotion, the CLI and the protocol read reports without importing
this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from airwatt.atomic import atomic_dir, write_json_atomic
from airwatt.data_ranges import DataRanges, NoDisjointData, Overlap, Span, seen_by
from airwatt.dataset import Dataset
from airwatt.errors import ConfigError, DataError
from airwatt.metrics import (
    ONOFF_TOTALS,
    POWER_TOTALS,
    SWITCH_KEYS,
    MetricValues,
    SwitchEvents,
    mean_over_appliances,
    metrics_table,
    onoff_totals,
    power_totals,
    switch_events,
)
from airwatt.model_uri import load_bundle, registry_info
from airwatt.models.bundle import ModelLoadError, ModelSpec
from airwatt.prepare.grid import DeviceGrid, grid_device
from airwatt.results import (
    EvaluationData,
    EvaluationReport,
    Metrics,
    ModelInfo,
    OverlapInfo,
    PlottedDay,
    ReadingCounts,
    RegistryRef,
    Scores,
    Selection,
    SwitchMetrics,
)
from airwatt.timeutil import from_epoch_ms

log = logging.getLogger(__name__)

TRUTH_LABEL_SOURCES = ("sub-meter", "annotator", "reviewed")  # reviewed: spans a person labelled
_PLOT_FILES = (".png", ".csv")
CSV_STEP_S = 60  # resolution of the plot CSVs (the PNGs show every reading)


EXCLUDED_ALL = "all of its selected readings lie in the excluded ranges"


class Prediction(Protocol):
    """What ``predict_series`` returns (airwatt.models.SeriesPrediction): (T, A) arrays, (T,) mask."""

    @property
    def power_w(self) -> np.ndarray: ...

    @property
    def prob_on(self) -> np.ndarray: ...

    @property
    def on(self) -> np.ndarray: ...

    @property
    def predicted(self) -> np.ndarray: ...


def rule_of(pred: Prediction) -> str:
    """``served`` or ``offline`` (a prediction without the attribute: offline)."""
    return str(getattr(pred, "rule", "offline"))


class Disaggregator(Protocol):
    """The part of ``airwatt.models.ModelBundle`` evaluation uses."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def appliances(self) -> list[str]: ...

    def predict_series(self, aggregate_w: np.ndarray, valid: np.ndarray | None = None) -> Prediction: ...


# ------------------------------------------------------------------------------------------------ inputs
def read_split(split_file: Path, split: str) -> list[str]:
    """The device ids of one split of a prepare ``split.json``."""
    if not split_file.is_file():
        raise ConfigError(f"{split_file}: split file not found")
    try:
        splits = json.loads(split_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{split_file}: not valid JSON ({e.msg}, line {e.lineno})") from None
    names = [k for k, v in splits.items() if isinstance(v, list)]
    if split not in names:
        raise ConfigError(f"{split_file}: no split {split!r}; it has {', '.join(names) or 'none'}")
    return [str(d) for d in splits[split]]


def read_time_ranges(
    split_file: Path | None, split: str | None
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]] | None:
    """Per device, the [start, end) of one split of a time split (``prepare.split_by: time``); None for a
    device split (every reading of the split's devices counts)."""
    if split_file is None or split is None:
        return None
    doc = json.loads(split_file.read_text())
    ranges = doc.get("time_ranges")
    if ranges is None:
        return None
    try:
        return {
            str(d): (pd.Timestamp(a), pd.Timestamp(b)) for d, (a, b) in dict(ranges.get(split, {})).items()
        }
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{split_file}: time_ranges of split {split!r} are not [start, end] pairs: {e}"
        ) from None


def select_devices(
    ds: Dataset,
    devices: Sequence[str] | None = None,
    split_file: Path | None = None,
    split: str | None = None,
) -> list[str]:
    """Devices to evaluate: all, or ``devices``, or a split's devices, or both (intersection); sorted."""
    if (split_file is None) != (split is None):
        raise ConfigError("--split-file and --split go together: name the file and the split in it")
    where = f"dataset {ds.manifest.name!r} ({ds.root})"
    chosen = list(ds.device_ids)
    asked: list[tuple[str, list[str]]] = []
    if devices:
        asked.append(("--devices", list(devices)))
    if split_file is not None and split is not None:
        asked.append((f"split {split!r} of {split_file}", read_split(split_file, split)))
    for what, ids in asked:
        unknown = sorted(set(ids) - set(ds.device_ids))
        if unknown:
            raise DataError(f"{what}: devices {unknown} are not in {where} ({len(ds.device_ids)} devices)")
        chosen = [d for d in chosen if d in set(ids)]
    if not chosen:
        reason = " and ".join(w for w, _ in asked) if asked else "the dataset"
        raise DataError(f"no devices to evaluate: {reason} selects none of {where}")
    return sorted(chosen)


def truth_appliances(ds: Dataset) -> set[str]:
    """Appliances with truth somewhere in the dataset: ground-truth columns and sub-meter/annotator labels."""
    labels = ds.labels()
    labelled = labels.loc[labels["source"].isin(TRUTH_LABEL_SOURCES), "appliance"]
    return set(ds.appliances) | set(labelled.astype(str))


def check_appliances(ds: Dataset, model_appliances: Sequence[str]) -> list[str]:
    """The model's appliances that the dataset has truth for; DataError when there are none."""
    have = truth_appliances(ds)
    usable = [a for a in model_appliances if a in have]
    if not usable:
        raise DataError(
            f"dataset {ds.manifest.name!r} has none of the model's appliances {list(model_appliances)} "
            f"(it has truth for {sorted(have) or 'no appliance'})",
            file=ds.root,
        )
    missing = [a for a in model_appliances if a not in have]
    if missing:
        log.warning("dataset %s has no truth for %s: not evaluated", ds.root, ", ".join(missing))
    return usable


# ------------------------------------------------------------------------------------------ per device
@dataclass
class DeviceTotals:
    """Metric totals of one device, (A, ...) in the model's appliance order."""

    present: np.ndarray  # (A,) bool: the device has truth (sub-meter or labels) for the appliance
    has_power: np.ndarray  # (A,) bool: ... and sub-metered power
    power: np.ndarray  # (A, len(POWER_TOTALS))
    onoff: np.ndarray  # (A, len(ONOFF_TOTALS))


@dataclass
class DayPlot:
    """The most active day of one appliance seen so far (for the disaggregation plot)."""

    score: tuple[int, int]  # (truth-on readings, evaluated readings) that day
    device_id: str
    day: str
    timestamps: pd.DatetimeIndex
    aggregate_w: np.ndarray
    truth_w: np.ndarray | None
    pred_w: np.ndarray
    prob_on: np.ndarray
    truth_on: np.ndarray


@dataclass
class _Accumulator:
    appliances: list[str]
    power: np.ndarray = field(init=False)
    onoff: np.ndarray = field(init=False)
    has_power: np.ndarray = field(init=False)
    present: np.ndarray = field(init=False)
    devices: dict[str, DeviceTotals] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = len(self.appliances)
        self.power = np.zeros((a, len(POWER_TOTALS)))
        self.onoff = np.zeros((a, len(ONOFF_TOTALS)))
        self.has_power = np.zeros(a, bool)
        self.present = np.zeros(a, bool)

    def add(self, device_id: str, t: DeviceTotals) -> None:
        self.devices[device_id] = t
        self.power += t.power
        self.onoff += t.onoff
        self.has_power |= t.has_power
        self.present |= t.present


def device_totals(
    g: DeviceGrid,
    pred: Prediction,
    appliances: Sequence[str],
    has_power: np.ndarray,
    scored: np.ndarray | None = None,
) -> tuple[DeviceTotals, np.ndarray]:
    """Totals of one gridded device and its prediction; also the (T, A) mask of on/off readings counted.

    Served predictions count every reading with truth (an unanswered one is off at 0 W); offline ones only
    the readings the model predicted. ``scored`` (T,): only these readings count (the rest was context)."""
    served = rule_of(pred) == "served"
    predicted = np.ones((len(g), 1), bool) if served else np.asarray(pred.predicted, bool)[:, None]
    if scored is not None:
        predicted = predicted & scored[:, None]
    power_mask = g.power_valid & predicted & has_power[None, :]
    status_mask = g.status_valid & g.valid[:, None] & predicted
    present = np.array([a in g.status_sources for a in appliances])
    power = power_totals(
        torch.from_numpy(np.asarray(pred.power_w)), torch.from_numpy(g.power_w), torch.from_numpy(power_mask)
    ).numpy()
    onoff = onoff_totals(
        torch.from_numpy(np.asarray(pred.on, bool)), torch.from_numpy(g.status), torch.from_numpy(status_mask)
    ).numpy()
    return DeviceTotals(present, has_power & present, power, onoff), status_mask


def _check_prediction(pred: Prediction, n: int, a: int, device_id: str) -> None:
    for name, shape in (("power_w", (n, a)), ("on", (n, a)), ("prob_on", (n, a)), ("predicted", (n,))):
        got = np.shape(getattr(pred, name))
        if got != shape:
            raise ModelLoadError(
                f"device {device_id}: predict_series returned {name} of shape {got}, expected {shape}"
            )


def _local_days(
    start_ms: int, n: int, interval_s: float, timezone: str
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Grid timestamps in the device's timezone and each slot's local calendar day (datetime64[D])."""
    grid_ms = start_ms + np.arange(n, dtype=np.int64) * round(interval_s * 1000)
    local = from_epoch_ms(grid_ms).tz_convert(timezone)
    return local, local.tz_localize(None).to_numpy(dtype="datetime64[D]")


def best_days(
    device_id: str,
    g: DeviceGrid,
    pred: Prediction,
    present: np.ndarray,
    has_power: np.ndarray,
    status_mask: np.ndarray,
    *,
    interval_s: float,
    timezone: str,
) -> dict[int, DayPlot]:
    """Per present appliance (column index), the device's local day with the most truth-on readings."""
    local, days = _local_days(g.start_ms, len(g), interval_s, timezone)
    predicted = np.asarray(pred.predicted, bool)
    power_w, prob_on = np.asarray(pred.power_w), np.asarray(pred.prob_on)
    uniq, code = np.unique(days, return_inverse=True)
    out: dict[int, DayPlot] = {}
    for j in np.flatnonzero(present):
        on = g.status[:, j] & status_mask[:, j]
        scores = list(
            zip(
                np.bincount(code, on, len(uniq)), np.bincount(code, status_mask[:, j], len(uniq)), strict=True
            )
        )
        best = max(range(len(uniq)), key=lambda k: scores[k])  # the first day among equals
        sel = code == best
        out[int(j)] = DayPlot(
            score=(int(scores[best][0]), int(scores[best][1])),
            device_id=device_id,
            day=str(uniq[best]),
            timestamps=local[sel],
            aggregate_w=g.aggregate_w[sel],
            truth_w=g.power_w[sel, j] if has_power[j] else None,
            pred_w=np.where(predicted[sel], power_w[sel, j], np.nan),
            prob_on=np.where(predicted[sel], prob_on[sel, j], np.nan),
            truth_on=on[sel],
        )
    return out


def grid_for_model(
    ds: Dataset,
    device_id: str,
    appliances: list[str],
    *,
    interval_s: float,
    max_fill_s: float,
    time_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    context_s: float = 0.0,
) -> tuple[DeviceGrid, np.ndarray] | None:
    """One device on the model's grid (prepare's code), only [start - context_s, end) of ``time_range`` when
    given, and which appliances have sub-metered power there; None for a device without readings."""
    start, end = time_range if time_range is not None else (None, None)
    if start is not None and context_s > 0:
        start = start - pd.Timedelta(seconds=context_s)
    readings = ds.readings([device_id], start, end, columns=["timestamp", "power_w"])
    if readings.empty:
        return None
    has_gt = ds.manifest.device(device_id).has_ground_truth
    gt = ds.ground_truth([device_id], start, end) if has_gt else None
    labels = ds.labels([device_id], start, end)
    labels = labels[labels["source"].isin(TRUTH_LABEL_SOURCES)]
    g = grid_device(readings, gt, labels, appliances, interval_s=interval_s, max_fill_s=max_fill_s)
    has_power = np.array(
        [gt is not None and a in gt.columns and bool(gt[a].notna().any()) for a in appliances], bool
    )
    return g, has_power


# ------------------------------------------------------------------------------------------------ report
def model_info(bundle: Disaggregator, uri: str | Path | None) -> ModelInfo:
    """What was evaluated: the URI or path, the registered version behind it, and the bundle's spec."""
    spec = bundle.spec
    registry = registry_info(uri) if uri is not None else None  # the registered version, for models:/ URIs
    return ModelInfo(
        uri=str(uri) if uri is not None else None,
        registry=RegistryRef.model_validate(registry.as_json()) if registry is not None else None,
        arch=spec.arch,
        arch_kwargs=spec.arch_kwargs,
        appliances=list(spec.appliances),
        window_length=spec.window_length,
        target=spec.target,
        interval_s=spec.interval_s,
        provenance=spec.provenance,
    )


def _typed(table: dict[str, MetricValues]) -> dict[str, Metrics]:
    return {name: Metrics(**values) for name, values in table.items()}


def _device_block(t: DeviceTotals, appliances: list[str]) -> dict[str, Metrics]:
    idx = np.flatnonzero(t.present)
    names = [appliances[j] for j in idx]
    return _typed(metrics_table(t.power[idx], t.onoff[idx], names, has_power=list(t.has_power[idx])))


@dataclass
class DeviceResult:
    """What one device adds to the report: the headline totals, the offline totals of a real-time model,
    switch events per appliance (present ones), and the most active days for the plots."""

    totals: DeviceTotals
    offline: DeviceTotals | None
    switches: dict[int, SwitchEvents]
    answered: np.ndarray  # (A, 2): counted on/off readings the model answered, and all counted
    days: dict[int, DayPlot]
    evaluated: DataRanges  # the UTC span of the scored grid slots


def predictions(
    bundle: Disaggregator, aggregate_w: np.ndarray, valid: np.ndarray
) -> tuple[Prediction, Prediction | None]:
    """The model's own prediction and, for a real-time ``ModelBundle``, its offline one (one model pass)."""
    from airwatt.models import ModelBundle

    if isinstance(bundle, ModelBundle) and bundle.real_time:
        out = bundle.series_outputs(aggregate_w, valid)
        return bundle.decide(out, "served"), bundle.decide(out, "offline")
    return bundle.predict_series(aggregate_w, valid), None


def evaluate_device(
    bundle: Disaggregator,
    ds: Dataset,
    device_id: str,
    *,
    usable: Sequence[str],
    with_plots: bool,
    time_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    exclude: Sequence[Span] = (),
) -> DeviceResult | str:
    """One device's result, or why it was skipped; only the readings inside ``time_range`` when given, and
    none inside the ``exclude`` spans."""
    appliances = list(bundle.appliances)
    interval_s = bundle.spec.interval_s
    # A real-time model on a time range: the service would have the readings before it; load one history
    # of them as context (not scored), so the range's first readings are answered as they would be.
    context_s = getattr(bundle, "history_length", 0) * interval_s if bundle.spec.real_time else 0.0
    gridded = grid_for_model(
        ds,
        device_id,
        appliances,
        interval_s=interval_s,
        max_fill_s=bundle.spec.gap.max_fill_s,
        time_range=time_range,
        context_s=context_s,
    )
    if gridded is None:
        return "no readings"
    g, has_power = gridded
    step_ms = round(interval_s * 1000)
    grid_ms = g.start_ms + np.arange(len(g), dtype=np.int64) * step_ms
    start_ms, end_ms = g.start_ms, g.start_ms + len(g) * step_ms
    if time_range is not None:  # the range itself where the grid's edge slots reach beyond it
        start_ms = max(start_ms, time_range[0].value // 1_000_000)
        end_ms = min(end_ms, time_range[1].value // 1_000_000)
    scored = grid_ms >= start_ms if time_range is not None and context_s > 0 else None
    span = DataRanges.of({device_id: [(start_ms, end_ms)]})  # what is scored
    if exclude:
        scored = np.ones(len(g), bool) if scored is None else scored
        for a, b in exclude:
            scored &= (grid_ms < a) | (grid_ms >= b)
        if not scored.any():
            return EXCLUDED_ALL
        span = span - DataRanges.of({device_id: exclude})
    lacking = [a for a in appliances if a not in g.status_sources and a in usable]
    if not any(a in g.status_sources for a in appliances):
        return "no ground truth or labels for any of the model's appliances"
    if lacking:
        log.info(
            "device %s: no ground truth or labels for %s; those are skipped", device_id, ", ".join(lacking)
        )
    pred, offline = predictions(bundle, g.aggregate_w, g.valid)
    _check_prediction(pred, len(g), len(appliances), device_id)
    t, status_mask = device_totals(g, pred, appliances, has_power, scored)
    offline_totals = None if offline is None else device_totals(g, offline, appliances, has_power, scored)[0]
    on = np.asarray(pred.on, bool)
    switches = {
        int(j): switch_events(on[:, j], g.status[:, j], status_mask[:, j], interval_s)
        for j in np.flatnonzero(t.present)
    }
    answered = np.stack(
        [(status_mask & np.asarray(pred.predicted, bool)[:, None]).sum(0), status_mask.sum(0)], axis=1
    )
    days: dict[int, DayPlot] = {}
    if with_plots:
        tz = ds.manifest.device(device_id).timezone
        days = best_days(
            device_id, g, pred, t.present, has_power, status_mask, interval_s=interval_s, timezone=tz
        )
    return DeviceResult(t, offline_totals, switches, answered, days, span)


def _pooled(acc: _Accumulator) -> Scores:
    idx = np.flatnonzero(acc.present)
    names = [acc.appliances[j] for j in idx]
    table = metrics_table(acc.power[idx], acc.onoff[idx], names, has_power=list(acc.has_power[idx]))
    return Scores(appliances=_typed(table), mean=Metrics(**mean_over_appliances(table)))


def _switch_block(
    events: dict[int, SwitchEvents], appliances: list[str], interval_s: float
) -> dict[str, SwitchMetrics]:
    table = {appliances[j]: e.values(interval_s) for j, e in sorted(events.items())}
    mean: MetricValues = {}
    for key in SWITCH_KEYS:
        values = [x for v in table.values() if (x := v.get(key)) is not None]
        mean[key] = float(np.mean(values)) if values else None
    return {name: SwitchMetrics(**values) for name, values in {**table, "mean": mean}.items()}


def evaluate_bundle(
    bundle: Disaggregator,
    data: Path,
    *,
    devices: Sequence[str] | None = None,
    split_file: Path | None = None,
    split: str | None = None,
    plots_dir: Path | None = None,
    uri: str | Path | None = None,
    exclude: DataRanges | None = None,
) -> EvaluationReport:
    """The evaluation report of one model on one dataset (see the module docstring); nothing inside
    ``exclude`` is scored."""
    ds = Dataset(data)
    selected = select_devices(ds, devices, split_file, split)
    ranges = read_time_ranges(split_file, split)
    usable = check_appliances(ds, bundle.appliances)
    appliances = list(bundle.appliances)
    interval_s = bundle.spec.interval_s
    if ds.manifest.interval_s != interval_s:
        log.info("dataset interval %g s; gridding at the model's %g s", ds.manifest.interval_s, interval_s)
    acc, acc_offline = _Accumulator(appliances), _Accumulator(appliances)
    events: dict[int, SwitchEvents] = {}
    answered = np.zeros((len(appliances), 2), np.int64)
    plots: dict[int, DayPlot] = {}
    skipped: dict[str, str] = {}
    evaluated: dict[str, tuple[Span, ...]] = {}
    rule: Literal["served", "offline"] = "offline"
    for dev in tqdm(selected, desc="evaluate", unit="device", disable=None):
        result = evaluate_device(
            bundle,
            ds,
            dev,
            usable=usable,
            with_plots=plots_dir is not None,
            time_range=None if ranges is None else ranges.get(dev),
            exclude=exclude.of_device(dev) if exclude is not None else (),
        )
        if isinstance(result, str):
            skipped[dev] = result
            log.log(
                logging.INFO if result == EXCLUDED_ALL else logging.WARNING,
                "device %s: %s; skipped",
                dev,
                result,
            )
            continue
        acc.add(dev, result.totals)
        evaluated.update(result.evaluated.spans)
        if result.offline is not None:
            rule = "served"
            acc_offline.add(dev, result.offline)
        for j, e in result.switches.items():
            events.setdefault(j, SwitchEvents()).add(e)
        answered += result.answered
        for j, day in result.days.items():
            if j not in plots or day.score > plots[j].score:  # the first device among equals
                plots[j] = day
    if not acc.devices and exclude is not None:
        raise NoDisjointData(
            f"none of the selected devices {selected} has readings with truth for the model's appliances "
            "outside the excluded ranges",
            file=ds.root,
        )
    if not acc.devices:
        raise DataError(
            f"none of the selected devices {selected} has truth for the model's appliances {appliances}",
            file=ds.root,
        )
    plotted = {appliances[j]: p for j, p in sorted(plots.items())}
    if plots_dir is not None:
        write_plots(plots_dir, plotted)
    idx = np.flatnonzero(acc.present)
    pooled = _pooled(acc)
    data_block = EvaluationData(
        path=str(data),
        name=ds.manifest.name,
        devices=sorted(acc.devices),
        skipped_devices=skipped,
        selection=Selection(
            devices=list(devices) if devices else None,
            split_file=str(split_file) if split_file is not None else None,
            split=split,
            time_ranges=(
                None
                if ranges is None
                else {d: (a.isoformat(), b.isoformat()) for d, (a, b) in sorted(ranges.items())}
            ),
        ),
        appliances_missing=[a for j, a in enumerate(appliances) if not acc.present[j]],
        interval_s=interval_s,
        max_fill_s=bundle.spec.gap.max_fill_s,
        max_invalid_fraction=bundle.spec.gap.max_invalid_fraction,
        readings={
            appliances[j]: ReadingCounts(power=int(acc.power[j, 0]), onoff=int(acc.onoff[j, 0])) for j in idx
        },
        answered={
            appliances[j]: float(answered[j, 0] / answered[j, 1]) if answered[j, 1] else None for j in idx
        },
        plotted_days={name: PlottedDay(device=p.device_id, day=p.day) for name, p in plotted.items()},
    )
    overlap = check_overlap(bundle, DataRanges.of(evaluated), exclude)
    return EvaluationReport(
        model=model_info(bundle, uri),
        data=data_block,
        rule=rule,
        appliances=pooled.appliances,
        mean=pooled.mean,
        switches=_switch_block(events, appliances, interval_s),
        offline=_pooled(acc_offline) if rule == "served" else None,
        devices={dev: _device_block(t, appliances) for dev, t in sorted(acc.devices.items())},
        overlap=OverlapInfo.model_validate(overlap.to_json()),
    )


def check_overlap(bundle: Disaggregator, evaluated: DataRanges, exclude: DataRanges | None) -> Overlap:
    """The evaluated data against what the model trained and validated on; a WARNING when they overlap or
    when the model does not record its data (module docstring)."""
    overlap = Overlap(evaluated, seen_by(bundle.spec.provenance), exclude)
    if overlap.with_training is None:
        log.warning(
            "the model's provenance does not record the data it trained and validated on (a bundle from "
            "before data ranges were recorded): cannot tell whether this evaluation overlaps it"
        )
    elif overlap.with_training:
        log.warning(
            "the evaluation data overlaps the model's training/validation data (%.4g h on devices %s): "
            "these scores are not held-out: %s",
            overlap.overlapping.hours(),
            ", ".join(overlap.overlapping.devices),
            overlap.overlapping.describe(),
        )
    return overlap


def evaluate(
    model: str | Path,
    data: Path,
    out: Path,
    *,
    devices: Sequence[str] | None = None,
    split_file: Path | None = None,
    split: str | None = None,
    plots_dir: Path | None = None,
    exclude: DataRanges | None = None,
) -> EvaluationReport:
    """Load ``model``, evaluate it on ``data`` (nothing inside ``exclude`` scored), write the report to
    ``out`` atomically; returns the report."""
    select_devices(Dataset(data), devices, split_file, split)  # bad data or selection fails before a download
    bundle = load_bundle(model)
    report = evaluate_bundle(
        bundle,
        data,
        devices=devices,
        split_file=split_file,
        split=split,
        plots_dir=plots_dir,
        uri=model,
        exclude=exclude,
    )
    write_json_atomic(out, report.model_dump(mode="json"))
    return report


# ------------------------------------------------------------------------------------------------- plots
def _plot_frame(p: DayPlot) -> pd.DataFrame:
    """The plotted day as DVC-plottable rows, one per ``CSV_STEP_S`` (keeps the HTML small): the hour of the
    local day at the step's start, mean watts and on-probability, and whether the truth was on at all."""
    wall = p.timestamps.tz_localize(None)
    seconds = (wall - wall.normalize()).total_seconds().to_numpy()
    frame = pd.DataFrame(
        {
            "hour": seconds // CSV_STEP_S * CSV_STEP_S / 3600.0,
            "aggregate_w": p.aggregate_w,
            "truth_w": p.truth_w if p.truth_w is not None else np.nan,
            "pred_w": p.pred_w,
            "prob_on": p.prob_on,
            "truth_on": p.truth_on.astype(int),
        }
    )
    means = frame.groupby("hour", sort=True).agg(
        {"aggregate_w": "mean", "truth_w": "mean", "pred_w": "mean", "prob_on": "mean", "truth_on": "max"}
    )
    return means.reset_index().round({"hour": 5})


def write_plots(plots_dir: Path, days: dict[str, DayPlot]) -> None:
    """``<appliance>.png`` and ``<appliance>.csv`` per appliance; the directory is replaced atomically."""
    from airwatt.plots import plot_disaggregation

    if plots_dir.is_dir():
        foreign = [p.name for p in plots_dir.iterdir() if p.suffix not in _PLOT_FILES]
        if foreign:
            raise ConfigError(
                f"{plots_dir}: refusing to replace a directory holding other files {foreign[:5]}"
            )
    with atomic_dir(plots_dir) as tmp:
        for name, p in days.items():
            fig = plot_disaggregation(
                p.timestamps,
                p.aggregate_w,
                p.truth_w,
                p.pred_w,
                name,
                prob_on=p.prob_on,
                truth_on=p.truth_on,
                title=f"{name}: device {p.device_id}, {p.day} (local time)",
            )
            fig.savefig(tmp / f"{name}.png", dpi=100)
            _plot_frame(p).to_csv(tmp / f"{name}.csv", index=False, float_format="%.8g")
