"""Task payloads: one window of one device as a Label Studio task, with the model's on-intervals as regions.

Region convention (push and pull agree, so accepting a pre-annotation round-trips exactly): a region spans the
readings it covers, from its first on reading to its LAST on reading (inclusive, as drawn on the chart); the
dataset's intervals are [start, end) with ``end`` the first off reading. So region.end = interval.end -
interval_s on push, and on pull a region [a, b] becomes [first slot >= a, last slot <= b + interval_s).

The time axis holds only the window's valid slots (a gap is drawn as a straight line, not as nulls); power
is rounded to 0.1 W to keep the payload small (~0.2 MB for 12 h at 5 s).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from airwatt.appliances import ApplianceSpec
from airwatt.labeling.interface import (
    AGGREGATE_COLUMN,
    LABELS_CONTROL,
    SERIES_OBJECT,
    TIME_COLUMN,
    channel_column,
)
from airwatt.labeling.windows import DeviceSeries, Selected, binary_entropy_bits
from airwatt.labels import on_intervals_ms
from airwatt.models.predict import SeriesPrediction

_STATE_RULE = 0.5  # on_intervals_ms threshold on a 0/1 state


def _rounded(values: np.ndarray) -> list[float | None]:
    """Watts rounded to 0.1 W; NaN (unknown) becomes null."""
    out: list[float | None] = np.round(values.astype(np.float64), 1).tolist()
    return [None if v != v else v for v in out]  # NaN != NaN


def state_intervals_ms(
    timestamps_ms: np.ndarray, on: np.ndarray, interval_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) runs of a per-slot on/off state, by airwatt.labels' rule with no minimum durations (the
    state already has them: SeriesPrediction.on)."""
    rule = ApplianceSpec("state", _STATE_RULE, 0.0, 0.0, 1.0)
    return on_intervals_ms(timestamps_ms, on.astype(np.float32), rule, interval_s)


def regions(
    timestamps_ms: np.ndarray, on: np.ndarray, appliances: Sequence[str], interval_s: float
) -> list[dict[str, Any]]:
    """Label Studio TimeSeriesLabels regions for a (T, A) on/off state (module docstring: end inclusive)."""
    step_ms = round(interval_s * 1000)
    out = []
    for j, name in enumerate(appliances):
        starts, ends = state_intervals_ms(timestamps_ms, on[:, j], interval_s)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            out.append(
                {
                    "id": uuid.uuid4().hex[:10],
                    "from_name": LABELS_CONTROL,
                    "to_name": SERIES_OBJECT,
                    "type": "timeserieslabels",
                    "value": {
                        "start": s,
                        "end": e - step_ms,
                        "instant": e - step_ms == s,
                        "timeserieslabels": [name],
                    },
                }
            )
    return out


def prediction(
    pred: SeriesPrediction,
    timestamps_ms: np.ndarray,
    appliances: Sequence[str],
    interval_s: float,
    model_version: str,
) -> dict[str, Any]:
    """The model's pre-annotation of one window: its on-intervals, version, and confidence as score."""
    cols = [pred.appliances.index(a) for a in appliances]
    ok = pred.predicted
    confidence = (
        1.0 - float(binary_entropy_bits(pred.prob_on[ok][:, cols]).mean()) if ok.any() and cols else 0.0
    )
    return {
        "model_version": model_version,
        "score": round(confidence, 4),
        "result": regions(timestamps_ms, pred.on[:, cols], appliances, interval_s),
    }


def build_task(
    series: DeviceSeries,
    chosen: Selected,
    *,
    dataset: str,
    interval_s: float,
    submetered: Sequence[str],
    appliances: Sequence[str],
    model_version: str | None,
    readings_sha256: str | None = None,
) -> dict[str, Any]:
    """One Label Studio task (data, meta and, with a model, its prediction) for a selected window.
    ``readings_sha256`` (meta) fingerprints the readings shown, so a pull can tell when they changed."""
    w = chosen.window
    ts_all = series.timestamps_ms(w.lo, w.hi)
    ok = series.valid[w.lo : w.hi]
    columns: dict[str, list[Any]] = {
        TIME_COLUMN: ts_all[ok].tolist(),
        AGGREGATE_COLUMN: _rounded(series.aggregate_w[w.lo : w.hi][ok]),
    }
    for a in submetered:
        sub = series.submeter_w.get(a)
        values = sub[w.lo : w.hi][ok] if sub is not None else np.full(int(ok.sum()), np.nan)
        columns[channel_column(a)] = _rounded(values)
    start = pd.Timestamp(w.start_ms, unit="ms", tz="UTC")
    end = pd.Timestamp(w.end_ms, unit="ms", tz="UTC")
    score = "" if w.uncertainty is None else f", score {w.score:.3f}"
    data = {
        "header": f"{series.device_id}: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
        f"({chosen.selection}{score})",
        "task_key": chosen.key,
        "dataset": dataset,
        "device_id": series.device_id,
        "window_start_ms": w.start_ms,
        "window_end_ms": w.end_ms,
        "interval_s": interval_s,
        "selection": chosen.selection,
        "score": None if w.uncertainty is None else round(w.score, 6),
        "model_version": model_version,
        SERIES_OBJECT: columns,
    }
    meta = {
        k: data[k]
        for k in ("task_key", "dataset", "device_id", "window_start_ms", "window_end_ms", "interval_s")
    }
    if readings_sha256 is not None:
        meta["readings_sha256"] = readings_sha256
    task: dict[str, Any] = {"data": data, "meta": meta}
    if model_version is not None:
        meta["model_appliances"] = list(appliances)
    if model_version is not None and series.predictions:
        pred = _window_prediction(series.predictions[0], w.lo, w.hi)
        task["predictions"] = [prediction(pred, ts_all, appliances, interval_s, model_version)]
    return task


def _window_prediction(p: SeriesPrediction, lo: int, hi: int) -> SeriesPrediction:
    return SeriesPrediction(p.appliances, p.power_w[lo:hi], p.prob_on[lo:hi], p.on[lo:hi], p.predicted[lo:hi])
