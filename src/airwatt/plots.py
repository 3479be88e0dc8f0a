"""Disaggregation plots: aggregate, truth and prediction of one appliance over a stretch of time.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot, so no global
figure state leaks between calls (safe in DataLoader workers, MLflow callbacks and tests). Save with
``fig.savefig(path)``; log to MLflow with ``mlflow.log_figure(fig, "plots/fridge.png")``.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TimeAxis: TypeAlias = pd.DatetimeIndex | pd.Series | np.ndarray


def _x_values(timestamps: TimeAxis) -> np.ndarray:
    """Timestamps as naive datetime64 in their own wall-clock time (matplotlib plots those natively);
    numeric arrays (e.g. hours) pass through."""
    if isinstance(timestamps, np.ndarray) and not np.issubdtype(timestamps.dtype, np.datetime64):
        return timestamps
    idx = pd.DatetimeIndex(timestamps)
    if idx.tz is not None:
        idx = idx.tz_localize(None)  # wall-clock time of the index's own zone
    return idx.to_numpy(dtype="datetime64[ms]")


def plot_disaggregation(
    timestamps: TimeAxis,
    aggregate_w: np.ndarray,
    truth_w: np.ndarray | None,
    pred_w: np.ndarray,
    appliance: str,
    *,
    prob_on: np.ndarray | None = None,
    truth_on: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """A figure of one appliance: top, aggregate (grey), truth and prediction in W; below, when given, the
    predicted on-probability over the true on-periods (shaded). NaN values leave gaps.

    ``truth_w`` may be None for a device with annotator labels but no sub-meter.
    """
    x = _x_values(timestamps)
    lower = prob_on is not None or truth_on is not None
    fig = Figure(figsize=(12, 5.5 if lower else 4), layout="constrained")
    FigureCanvasAgg(fig)
    if lower:
        ax_w, ax_on = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    else:
        ax_w, ax_on = fig.subplots(1, 1), None
    ax_w.plot(x, aggregate_w, color="0.7", lw=0.8, label="aggregate")
    if truth_w is not None:
        ax_w.plot(x, truth_w, color="tab:blue", lw=1.2, label=f"{appliance} truth")
    ax_w.plot(x, pred_w, color="tab:orange", lw=1.0, label=f"{appliance} predicted")
    ax_w.set_ylabel("power (W)")
    ax_w.legend(loc="upper right", fontsize="small")
    ax_w.set_title(title or appliance)
    if ax_on is not None:
        if truth_on is not None:
            on = np.asarray(truth_on, bool)
            ax_on.fill_between(x, 0, 1, where=on, step="post", color="tab:blue", alpha=0.25, label="truth on")
        if prob_on is not None:
            ax_on.plot(x, prob_on, color="tab:orange", lw=1.0, label="P(on)")
        ax_on.set_ylim(-0.05, 1.05)
        ax_on.set_ylabel("on")
        ax_on.legend(loc="upper right", fontsize="small")
    return fig
