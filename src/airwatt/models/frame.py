"""One device's readings as a DataFrame in, per-slot predictions as a DataFrame out: the contract of the
MLflow pyfunc (airwatt/pyfunc_model.py), and the input/output examples logged with each model.

Input: ``timestamp`` (UTC; naive values are read as UTC, as MLflow's schema wants naive datetimes) and
``power_w``. The readings are put on the model's grid the way prepare does it (the model's gap policy).
Output: one row per grid slot: ``timestamp`` (naive UTC), ``predicted`` (the model answers that reading: for
a real-time model, the service's rule) and per appliance ``<name>_power_w`` and ``<name>_on``. Prediction is
``ModelBundle.predict_series``: the same code as evaluation and serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airwatt.errors import DataError
from airwatt.prepare.grid import grid_device
from airwatt.timeutil import from_epoch_ms

if TYPE_CHECKING:
    from airwatt.models.predict import ModelBundle

INPUT_COLUMNS = ("timestamp", "power_w")


def utc_timestamps(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; naive ones are taken to be UTC already."""
    ts = pd.to_datetime(values)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def predict_frame(bundle: ModelBundle, readings: pd.DataFrame) -> pd.DataFrame:
    """One device's readings (timestamp, power_w) -> per-slot predictions (module docstring)."""
    missing = [c for c in INPUT_COLUMNS if c not in readings.columns]
    if missing:
        raise DataError(f"model input lacks columns {missing} (it needs {list(INPUT_COLUMNS)})")
    frame = pd.DataFrame(
        {"timestamp": utc_timestamps(readings["timestamp"]), "power_w": readings["power_w"].astype(float)}
    )
    if frame.empty:
        raise DataError("model input has no readings")
    g = grid_device(frame, None, None, [], interval_s=bundle.interval_s, max_fill_s=bundle.gap.max_fill_s)
    pred = bundle.predict_series(g.aggregate_w, g.valid)
    step_ms = round(bundle.interval_s * 1000)
    ts = from_epoch_ms(g.start_ms + np.arange(len(g), dtype=np.int64) * step_ms).tz_localize(None)
    out: dict[str, Any] = {"timestamp": ts, "predicted": pred.predicted}
    for j, name in enumerate(pred.appliances):
        out[f"{name}_power_w"] = pred.power_w[:, j].astype(np.float64)
        out[f"{name}_on"] = pred.on[:, j]
    return pd.DataFrame(out)
