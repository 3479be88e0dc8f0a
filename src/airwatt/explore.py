"""Building blocks of the notebooks (notebooks/*.ipynb): tables and figures a data scientist looks at.

The notebooks import these and define no logic of their own. Everything here reuses the package's own code
paths: ``Dataset`` for reads, ``airwatt.validation`` results, ``grid_device`` + ``ModelBundle.predict_series``
+ the evaluation's totals and metrics for a device-day, and MLflow's client for runs and the registry.
Heavy imports (matplotlib, plotly, mlflow) happen inside the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airwatt.dataset import Dataset
from airwatt.errors import DataError
from airwatt.timeutil import from_epoch_ms

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from plotly.graph_objects import Figure as PlotlyFigure

    from airwatt.models import ModelBundle
    from airwatt.report import DeviceReport
    from airwatt.report.charts import View
    from airwatt.validation import ValidationResult

PER_APPLIANCE = 4  # traces per appliance in disaggregation_figure


# ------------------------------------------------------------------------------------------ the dataset
def _device_timezone(ds: Dataset, device_id: str) -> str:
    try:
        return ds.manifest.device(device_id).timezone
    except KeyError:
        raise DataError(
            f"device {device_id!r} not in the dataset; known: {ds.device_ids}", file=ds.root
        ) from None


def _expected_per_day(ds: Dataset, timezone: str) -> pd.Series:
    """Slots of the dataset window [start, end) on the nominal grid, per local calendar day."""
    m = ds.manifest
    if m.start is None or m.end is None:
        raise DataError("manifest has no start/end: cannot tell the expected readings", file=ds.root)
    step = pd.Timedelta(seconds=m.interval_s)
    grid = pd.date_range(pd.Timestamp(m.start), pd.Timestamp(m.end) - step, freq=step)
    days = grid.tz_convert(timezone).normalize().tz_localize(None)
    return pd.Series(1, index=days).groupby(level=0).sum()


def device_coverage(ds: Dataset, device_id: str) -> pd.Series:
    """Share of the expected readings that arrived with a power value, per local calendar day of the device
    (partial days at the window's ends are judged on their part only)."""
    tz = _device_timezone(ds, device_id)
    expected = _expected_per_day(ds, tz)
    r = ds.readings([device_id], columns=["timestamp", "power_w"])
    day = r["timestamp"].dt.tz_convert(tz).dt.normalize().dt.tz_localize(None)
    got = r["power_w"].notna().groupby(day).sum()
    share = (got.reindex(expected.index, fill_value=0) / expected).clip(upper=1.0)
    share.index = [d.date().isoformat() for d in share.index]
    return share


def coverage_by_day(ds: Dataset) -> pd.DataFrame:
    """``device_coverage`` of every device: one row per device, one column per local calendar day."""
    out = pd.DataFrame({d: device_coverage(ds, d) for d in ds.device_ids}).T.sort_index(axis=1)
    out.index.name = "device_id"
    return out


def device_table(ds: Dataset) -> pd.DataFrame:
    """One row per device: site, timezone, appliance inventory, sub-meters, readings and their span, and the
    share of the window's expected readings that arrived with a power value."""
    m = ds.manifest
    window_slots = (
        (pd.Timestamp(m.end) - pd.Timestamp(m.start)).total_seconds() / m.interval_s
        if m.start is not None and m.end is not None
        else np.nan
    )
    readings = ds.readings(columns=["device_id", "timestamp", "power_w"])
    per_device = readings.groupby("device_id", observed=True).agg(
        readings=("timestamp", "size"),
        with_power=("power_w", "count"),
        first=("timestamp", "min"),
        last=("timestamp", "max"),
    )
    rows = []
    for d in m.devices:
        stats = per_device.loc[d.device_id] if d.device_id in per_device.index else None
        rows.append(
            {
                "device_id": d.device_id,
                "site_type": d.site_type,
                "timezone": d.timezone,
                "appliances": len(d.appliances),
                "inventory": ", ".join(d.appliances),
                "sub_metered": d.has_ground_truth,
                "readings": int(stats["readings"]) if stats is not None else 0,
                "first_reading": stats["first"] if stats is not None else pd.NaT,
                "last_reading": stats["last"] if stats is not None else pd.NaT,
                "coverage": (float(stats["with_power"]) / window_slots) if stats is not None else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("device_id")


def first_complete_day(ds: Dataset, device_id: str, min_coverage: float = 0.95) -> str:
    """The device's first whole local day (YYYY-MM-DD) inside the dataset window with at least
    ``min_coverage`` of its readings; else the day with the most readings: a sensible day to look at."""
    tz = _device_timezone(ds, device_id)
    share = device_coverage(ds, device_id)
    expected = _expected_per_day(ds, tz)
    if share.empty or share.max() <= 0:
        raise DataError(f"device {device_id} has no readings", file=ds.root)
    m = ds.manifest
    for day, covered in share.items():
        start = pd.Timestamp(day).tz_localize(tz)
        whole = start >= pd.Timestamp(m.start) and start + pd.Timedelta(days=1) <= pd.Timestamp(m.end)
        if whole and covered >= min_coverage:
            return str(day)
    return str((share * expected.to_numpy()).idxmax())


def pick_device(ds: Dataset, split_file: Path | None = None) -> str:
    """A device to look at: the first test-split device (never seen in training) of ``split_file`` that
    the dataset holds, else the dataset's first device."""
    from airwatt.evaluate import read_split

    if split_file is not None and Path(split_file).is_file():
        held_out = [d for d in read_split(Path(split_file), "test") if d in ds.device_ids]
        if held_out:
            return held_out[0]
    if not ds.device_ids:
        raise DataError("the dataset has no devices", file=ds.root)
    return ds.device_ids[0]


def local_day(ds: Dataset, device_id: str, day: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the local calendar ``day`` (YYYY-MM-DD) in the device's timezone, tz-aware."""
    start = pd.Timestamp(day).tz_localize(None).normalize().tz_localize(_device_timezone(ds, device_id))
    return start, (start + pd.Timedelta(days=1)).normalize()


def day_labels(ds: Dataset, device_id: str, day: str) -> pd.DataFrame:
    """On/off intervals of the device overlapping the local ``day``, cut to that day, in local time, with
    their duration within the day (``duration_s``)."""
    start, end = local_day(ds, device_id, day)
    labels = ds.labels([device_id], start=start, end=end)
    tz = start.tz
    clipped_start = labels["start"].clip(lower=start).dt.tz_convert(tz)
    clipped_end = labels["end"].clip(upper=end).dt.tz_convert(tz)
    out = labels.assign(
        start=clipped_start,
        end=clipped_end,
        duration_s=(clipped_end - clipped_start).dt.total_seconds(),
    )
    return out.sort_values(["appliance", "start"]).reset_index(drop=True)


def plot_label_intervals(labels: pd.DataFrame, title: str = "label intervals") -> Figure:
    """One lane per appliance, a bar per on-interval, coloured by label source (sub-meter, annotator, model).
    ``labels`` as returned by ``day_labels`` (local times)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = {"sub-meter": "tab:blue", "annotator": "tab:green", "model": "tab:orange"}
    apps = sorted(labels["appliance"].unique()) if len(labels) else []
    fig = Figure(figsize=(14, 0.45 * max(len(apps), 1) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, app in enumerate(apps):
        sel = labels[labels["appliance"] == app]
        starts = sel["start"].dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
        ends = sel["end"].dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
        for source, colour in colours.items():
            mask = (sel["source"] == source).to_numpy()
            if mask.any():
                ax.barh(i, ends[mask] - starts[mask], left=starts[mask], height=0.6, color=colour)
    ax.set_yticks(range(len(apps)), apps)
    ax.set(title=title, xlabel="local time")
    present = set(labels["source"]) if len(labels) else set()
    handles = [Patch(color=c, label=s) for s, c in colours.items() if s in present]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    return fig


# ------------------------------------------------------------------------------------------ data quality
def expectation_table(result: ValidationResult) -> pd.DataFrame:
    """One row per Great Expectations expectation: its check and severity, what it asserts, the outcome,
    how many rows (or devices) were unexpected, the failing devices and the first example row."""
    rows = []
    for check in result.checks:
        for e in check.expectations:
            rows.append(
                {
                    "check": check.name,
                    "severity": check.severity,
                    "suite": e.suite,
                    "expectation": e.expectation,
                    "asserts": e.what,
                    "success": e.success,
                    "unexpected": e.unexpected_count,
                    "of": e.element_count,
                    "unexpected_%": e.unexpected_percent,
                    "observed": e.observed,
                    "devices": ", ".join(e.devices),
                    "example": str(e.examples[0]) if e.examples else "",
                    "error": e.error or "",
                }
            )
        if check.not_run:
            rows.append(
                {
                    "check": check.name,
                    "severity": check.severity,
                    "success": False,
                    "error": f"not run: {check.not_run}",
                }
            )
    return pd.DataFrame(rows)


def file_link(path: Path, text: str, notebook_dir: Path) -> str:
    """A Markdown link to a local file: relative to the notebook when the file is inside the repository
    (JupyterLab, started at the repository root, serves and opens it), else an absolute file:// URI."""
    from airwatt.lineage import repo_root

    path, here = Path(path).resolve(), Path(notebook_dir).resolve()
    if path.is_relative_to(repo_root(here)):
        return f"[{text}]({Path(os.path.relpath(path, here)).as_posix()})"
    return f"[{text}]({path.as_uri()})"


# ------------------------------------------------------------------------------- one device over one day
@dataclass(frozen=True)
class DeviceDay:
    """A device's local day on the model's grid: aggregate, truth and prediction per appliance.

    ``frame`` is indexed by local time; per appliance it holds ``<a>_truth_w``, ``<a>_pred_w``,
    ``<a>_prob_on``, ``<a>_truth_on`` (0/1) and ``<a>_on`` (NaN / 0 / False where not known or predicted).
    ``metrics`` holds the evaluation's metrics of that day per appliance (metrics.py definitions).
    """

    device_id: str
    day: str
    timezone: str
    interval_s: float
    appliances: list[str]
    frame: pd.DataFrame
    metrics: pd.DataFrame
    status_sources: dict[str, str]


def predict_device_day(ds: Dataset, bundle: ModelBundle, device_id: str, day: str) -> DeviceDay:
    """Grid the device around the local ``day`` (prepare's code, the model's gap policy), predict with
    ``bundle.predict_series`` (the one prediction path, the model's rule) and cut the day out; the model's
    history (window and decision memory) of context on both sides feeds the first readings."""
    from airwatt.evaluate import TRUTH_LABEL_SOURCES, device_totals
    from airwatt.metrics import metrics_table
    from airwatt.prepare.grid import grid_device

    start, end = local_day(ds, device_id, day)
    pad = pd.Timedelta(seconds=bundle.history_length * bundle.interval_s)
    readings = ds.readings([device_id], start=start - pad, end=end + pad, columns=["timestamp", "power_w"])
    in_day = readings["timestamp"].between(start, end, inclusive="left")
    if not in_day.any():
        raise DataError(f"device {device_id} has no readings on {day} ({start.tz})", file=ds.root)
    has_gt = ds.manifest.device(device_id).has_ground_truth
    gt = ds.ground_truth([device_id], start=start - pad, end=end + pad) if has_gt else None
    labels = ds.labels([device_id], start=start - pad, end=end + pad)
    labels = labels[labels["source"].isin(TRUTH_LABEL_SOURCES)]
    apps = bundle.appliances
    g = grid_device(
        readings, gt, labels, apps, interval_s=bundle.interval_s, max_fill_s=bundle.gap.max_fill_s
    )
    pred = bundle.predict_series(g.aggregate_w, g.valid)

    step_ms = round(bundle.interval_s * 1000)
    grid_ms = g.start_ms + np.arange(len(g), dtype=np.int64) * step_ms
    keep = (grid_ms >= start.value // 1_000_000) & (grid_ms < end.value // 1_000_000)
    g_day = replace(
        g,
        start_ms=int(grid_ms[keep][0]),
        aggregate_w=g.aggregate_w[keep],
        valid=g.valid[keep],
        power_w=g.power_w[keep],
        power_valid=g.power_valid[keep],
        status=g.status[keep],
        status_valid=g.status_valid[keep],
    )
    p_day = replace(
        pred,
        power_w=pred.power_w[keep],
        prob_on=pred.prob_on[keep],
        on=pred.on[keep],
        predicted=pred.predicted[keep],
    )
    has_power = np.array([gt is not None and a in gt.columns and bool(gt[a].notna().any()) for a in apps])
    totals, status_mask = device_totals(g_day, p_day, apps, has_power)
    table = metrics_table(totals.power, totals.onoff, apps, has_power=totals.has_power.tolist())
    metrics = pd.DataFrame(table).T.astype(float).rename_axis("appliance")
    metrics.insert(0, "truth_source", [g.status_sources.get(a, "") for a in apps])

    inventory = ds.manifest.device(device_id).appliances
    shown = [a for a in apps if a in inventory] if inventory else list(apps)
    cols: dict[str, Any] = {"aggregate_w": g_day.aggregate_w.astype(np.float32)}
    for j, a in enumerate(apps):
        if a not in shown:
            continue
        predicted = p_day.predicted
        cols[f"{a}_truth_w"] = g_day.power_w[:, j]
        cols[f"{a}_pred_w"] = np.where(predicted, p_day.power_w[:, j], np.nan).astype(np.float32)
        cols[f"{a}_prob_on"] = np.where(predicted, p_day.prob_on[:, j], np.nan).astype(np.float32)
        cols[f"{a}_truth_on"] = (g_day.status[:, j] & status_mask[:, j]).astype(np.uint8)
        cols[f"{a}_on"] = p_day.on[:, j]
    index = pd.DatetimeIndex(from_epoch_ms(grid_ms[keep])).tz_convert(start.tz).rename("local_time")
    return DeviceDay(
        device_id=device_id,
        day=str(start.date()),
        timezone=str(start.tz),
        interval_s=bundle.interval_s,
        appliances=shown,
        frame=pd.DataFrame(cols, index=index),
        metrics=metrics.loc[shown] if shown else metrics,
        status_sources=dict(g.status_sources),
    )


def day_energy(dd: DeviceDay) -> pd.DataFrame:
    """Per appliance of a ``DeviceDay``: energy (kWh) and on-hours of the truth and of the prediction."""
    kwh_per_w = dd.interval_s / 3.6e6  # 1 W held for one reading, in kWh
    h_per_reading = dd.interval_s / 3600
    f = dd.frame
    rows = {
        a: {
            "truth_kwh": f[f"{a}_truth_w"].sum() * kwh_per_w,
            "predicted_kwh": f[f"{a}_pred_w"].sum() * kwh_per_w,
            "truth_on_h": f[f"{a}_truth_on"].sum() * h_per_reading,
            "predicted_on_h": f[f"{a}_on"].sum() * h_per_reading,
        }
        for a in dd.appliances
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("appliance")


def disaggregation_figure(dd: DeviceDay, title: str | None = None) -> PlotlyFigure:
    """Interactive plotly figure of a ``DeviceDay``: top, the aggregate with one appliance's truth and
    prediction (W); below, its predicted on-probability over the true on-periods. A menu picks the
    appliance; drag to zoom, double-click to reset, click a legend entry to hide a line, hover to read values.

    Time is given as start + step (``x0``/``dx``), so the figure carries one float32 array per line and no
    timestamps: a day at 5 s stays small in the notebook.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not dd.appliances:
        raise DataError(f"device {dd.device_id}: none of the model's appliances is in its inventory")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04)
    x0 = dd.frame.index[0].tz_localize(None).isoformat()
    dx_ms = dd.interval_s * 1000
    f = dd.frame
    traces: list[tuple[int, str, str, str, str, dict[str, Any]]] = [
        (1, "aggregate_w", "aggregate", "#9e9e9e", "", {})
    ]
    for a in dd.appliances:  # PER_APPLIANCE traces each, in this order (the menu relies on it)
        traces += [
            (1, f"{a}_truth_w", f"{a} truth (W)", "#1f77b4", a, {}),
            (1, f"{a}_pred_w", f"{a} predicted (W)", "#ff7f0e", a, {}),
            (2, f"{a}_truth_on", f"{a} truth on", "#1f77b4", a, {"fill": "tozeroy", "opacity": 0.3}),
            (2, f"{a}_prob_on", f"{a} P(on)", "#ff7f0e", a, {}),
        ]
    for row, column, name, colour, app, extra in traces:
        trace = go.Scattergl(
            x0=x0,
            dx=dx_ms,
            y=f[column].to_numpy(np.uint8 if column.endswith("_truth_on") else np.float32),
            name=name,
            visible=app in ("", dd.appliances[0]),
            line={"color": colour, "width": 1.2},
            legendgroup=app or "aggregate",
            **extra,
        )
        fig.add_trace(trace, row=row, col=1)
    buttons = []
    for i, a in enumerate(dd.appliances):
        visible = [True] + [False] * (len(traces) - 1)
        visible[1 + PER_APPLIANCE * i : 1 + PER_APPLIANCE * (i + 1)] = [True] * PER_APPLIANCE
        m = dd.metrics.loc[a]
        buttons.append(
            {
                "label": a,
                "method": "update",
                "args": [{"visible": visible}, {"title.text": _title(dd, a, m, title)}],
            }
        )
    fig.update_layout(
        title={"text": _title(dd, dd.appliances[0], dd.metrics.loc[dd.appliances[0]], title)},
        updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.12, "yanchor": "top"}],
        hovermode="x unified",
        height=560,
        margin={"t": 90},
        legend={"orientation": "h", "y": -0.18},
    )
    fig.update_yaxes(title_text="power (W)", row=1, col=1)
    fig.update_yaxes(title_text="on", range=[-0.05, 1.05], row=2, col=1)
    fig.update_xaxes(title_text=f"local time ({dd.timezone})", row=2, col=1)
    return fig


def _title(dd: DeviceDay, appliance: str, metrics: pd.Series, prefix: str | None) -> str:
    def fmt(key: str, spec: str) -> str:
        v = metrics.get(key)
        return "n/a" if v is None or pd.isna(v) else format(float(v), spec)

    head = prefix or f"{dd.device_id} on {dd.day}"
    return f"{head}: {appliance} (MAE {fmt('mae_w', '.1f')} W, F1 {fmt('f1', '.2f')})"


# -------------------------------------------------------------------------------------------- reports
def report_week(report: DeviceReport, day: str | None = None) -> View:
    """The weekly view of a device report: the local ISO week (Monday to Sunday) holding ``day``
    (YYYY-MM-DD), or by default the report's own choice (its latest whole week)."""
    import datetime as dt

    from airwatt.report.charts import View, choose_view

    if not day:
        return choose_view(report.days, "week")
    monday = pd.Timestamp(day).date() - dt.timedelta(days=pd.Timestamp(day).weekday())
    iso = monday.isocalendar()
    return View(f"week {iso.year}-W{iso.week:02d}", [monday + dt.timedelta(days=k) for k in range(7)])


# ------------------------------------------------------------------------------------ MLflow runs, registry
def metric_histories(run_ids: list[str], keys: list[str], uri: str | None = None) -> pd.DataFrame:
    """Every logged value of ``keys`` for each run, long form: run_id, key, step, epoch, value.

    ``epoch`` comes from the run's own ``epoch`` metric at the same step (Lightning logs it), else it is the
    value's position in the history.
    """
    from airwatt.mlflow_store import client

    c = client(uri)
    frames = []
    for run_id in run_ids:
        epochs = {m.step: m.value for m in c.get_metric_history(run_id, "epoch")}
        for key in keys:
            hist = sorted(c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            if not hist:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": run_id,
                        "key": key,
                        "step": [m.step for m in hist],
                        "epoch": [int(epochs.get(m.step, i)) for i, m in enumerate(hist)],
                        "value": [m.value for m in hist],
                    }
                )
            )
    columns = ["run_id", "key", "step", "epoch", "value"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def registered_versions(name: str, uri: str | None = None) -> pd.DataFrame:
    """Versions of registered model ``name``, newest first: aliases, source run, status, creation time,
    and the promotion decision tag when the champion rule wrote one. Empty when the model does not exist."""
    from mlflow.exceptions import MlflowException

    from airwatt.mlflow_store import client

    c = client(uri)
    columns = ["version", "aliases", "run_id", "status", "created", "promotion"]
    try:
        aliases = c.get_registered_model(name).aliases or {}  # {alias: version}; search results lack them
    except MlflowException:
        return pd.DataFrame(columns=columns).set_index("version")
    rows = [
        {
            "version": int(v.version),
            "aliases": ", ".join(sorted(a for a, n in aliases.items() if str(n) == str(v.version))),
            "run_id": v.run_id,
            "status": v.status,
            "created": pd.Timestamp(v.creation_timestamp, unit="ms", tz="UTC"),
            "promotion": (v.tags or {}).get("promotion", ""),
        }
        for v in c.search_model_versions(f"name = '{name}'")
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("version", ascending=False).set_index("version")
