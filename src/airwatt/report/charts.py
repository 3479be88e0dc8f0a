"""Charts a business owner reads at a glance: stacked daily energy by appliance, share of the total, and an
on-hours heat map (appliance x day), over the weekly view or the nearest three months.

The view: ``week``, the latest local ISO week (Monday to Sunday) whose seven days all lie in the report
window, else the latest week with any day in it; ``month``, the latest calendar month wholly in the window
(else the latest with any day) and the two months before it. Days of the view outside the window are empty.
Figures use ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state), as airwatt.plots does.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from airwatt.appliances import APPLIANCES
from airwatt.report.core import FULL_DAY_H, UNEXPLAINED, DeviceReport, Period

REMAINDER_COLOR = "0.78"
MISSING_COLOR = "tab:red"


@dataclass(frozen=True)
class View:
    """The days a device's charts and page show."""

    label: str  # e.g. "week 2026-W02" or "2025-11 to 2026-01"
    days: list[dt.date]


def appliance_color(name: str) -> tuple[float, float, float, float] | str:
    """The same colour for an appliance on every chart and page (its place in the vocabulary)."""
    if name == UNEXPLAINED:
        return REMAINDER_COLOR
    order = list(APPLIANCES)
    return colormaps["tab20"](order.index(name) % 20 if name in order else 19)


def _whole_days(days: pd.DataFrame) -> set[dt.date]:
    return set(days.loc[days["hours_expected"] >= FULL_DAY_H, "day"])


def choose_view(days: pd.DataFrame, period: Period, months: int = 3) -> View:
    """The view of ``period`` (module docstring) from a device's day table."""
    all_days = sorted(days["day"])
    whole = _whole_days(days)
    if period == "week":
        mondays = sorted({d - dt.timedelta(days=d.weekday()) for d in all_days})
        complete = [m for m in mondays if all(m + dt.timedelta(days=k) in whole for k in range(7))]
        monday = (complete or mondays)[-1]
        iso = monday.isocalendar()
        return View(f"week {iso.year}-W{iso.week:02d}", [monday + dt.timedelta(days=k) for k in range(7)])
    firsts = sorted({d.replace(day=1) for d in all_days})
    complete = [f for f in firsts if all(d in whole for d in _month_days(f))]
    last = (complete or firsts)[-1]
    first = (pd.Timestamp(last) - pd.DateOffset(months=months - 1)).date()
    span = pd.date_range(first, _month_days(last)[-1], freq="D")
    return View(f"{first:%Y-%m} to {last:%Y-%m}", [d.date() for d in span])


def _month_days(first: dt.date) -> list[dt.date]:
    end = (pd.Timestamp(first) + pd.offsets.MonthEnd(0)).date()
    return [d.date() for d in pd.date_range(first, end, freq="D")]


def _pivot(report: DeviceReport, view: View, column: str) -> pd.DataFrame:
    """(days of the view) x (appliances with energy, largest first; the remainder last) of ``column``."""
    a = report.appliance_days[report.appliance_days["day"].isin(set(view.days))]
    table = a.pivot_table(index="day", columns="appliance", values=column, aggfunc="sum", dropna=False)
    table = table.reindex(index=view.days)
    energy = a.groupby("appliance")["energy_kwh"].sum()
    order = [n for n in energy.sort_values(ascending=False).index if n != UNEXPLAINED and energy[n] > 0]
    cols = order + ([UNEXPLAINED] if UNEXPLAINED in table.columns else [])
    return table.reindex(columns=cols)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _date_labels(days: list[dt.date]) -> list[str]:
    if len(days) <= 14:
        return [f"{d:%a}\n{d:%d %b}" for d in days]
    return [f"{d:%d %b}" if d.day in (1, 8, 15, 22) else "" for d in days]


def daily_energy_figure(report: DeviceReport, view: View) -> Figure:
    """Stacked daily energy by appliance (kWh), the remainder on top; days with missing hours are marked."""
    table = _pivot(report, view, "energy_kwh").fillna(0.0)
    x = np.arange(len(view.days))
    fig = _figure(max(8.0, 0.12 * len(x) + 4), 4.2)
    ax = fig.subplots()
    bottom = np.zeros(len(x))
    for name in table.columns:
        ax.bar(
            x,
            table[name],
            bottom=bottom,
            color=appliance_color(name),
            label=name.replace("_", " "),
            width=0.8,
        )
        bottom += table[name].to_numpy()
    missing = report.days.set_index("day")["missing_hours"].reindex(view.days)
    outside = missing.isna().to_numpy()
    short = (missing.fillna(0) > 0).to_numpy()
    if len(x) <= 14:  # room to say it in words
        for i in np.flatnonzero(short | outside):
            text = "no data" if outside[i] else f"{missing.iloc[i]:.1f} h\nmissing"
            ax.annotate(text, (x[i], bottom[i]), ha="center", va="bottom", fontsize=6, color=MISSING_COLOR)
    else:  # a marker per day with missing hours; days outside the data have no bar
        ax.plot(x[short], bottom[short], "v", color=MISSING_COLOR, ms=4, label="hours missing")
        ax.set_xlabel("no bar: no data that day")
    ax.set_xticks(x, _date_labels(view.days), fontsize=7)
    ax.set_ylabel("energy (kWh)")
    ax.set_title(f"Daily energy by appliance, {view.label} ({report.device_id}, local days)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    ax.margins(y=0.15)
    return fig


def share_figure(report: DeviceReport, view: View) -> Figure:
    """Donut of each appliance's share of the view's measured energy."""
    energy = _pivot(report, view, "energy_kwh").sum(axis=0)
    energy = energy[energy > 0]
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    total = float(energy.sum())
    if total > 0:
        names = [f"{n.replace('_', ' ')} {v / total:.0%}" for n, v in energy.items()]
        wedges, _ = ax.pie(
            energy.to_numpy(),
            colors=[appliance_color(n) for n in energy.index],
            labels=[t if v / total >= 0.03 else "" for t, v in zip(names, energy, strict=True)],
            startangle=90,
            counterclock=False,
            wedgeprops={"width": 0.38, "edgecolor": "white"},
            textprops={"fontsize": 8},
        )
        ax.legend(
            wedges, names, loc="center left", bbox_to_anchor=(1.05, 0.5), fontsize="small", frameon=False
        )
    ax.text(0, 0, f"{total:.1f} kWh", ha="center", va="center", fontsize=11)
    ax.set_title(f"Share of energy, {view.label}")
    return fig


def on_hours_figure(report: DeviceReport, view: View) -> Figure:
    """Heat map of predicted on-hours, appliance x day (the remainder has no on-hours)."""
    table = _pivot(report, view, "on_hours").drop(columns=[UNEXPLAINED], errors="ignore")
    names = [c for c in report.appliances if c in table.columns] or list(table.columns)
    data = table.reindex(columns=names).to_numpy(dtype=float).T  # (A, D)
    fig = _figure(max(8.0, 0.12 * len(view.days) + 4), 0.35 * max(len(names), 2) + 1.6)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="YlOrRd", vmin=0, vmax=24)
    ax.set_yticks(np.arange(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_xticks(np.arange(len(view.days)), _date_labels(view.days), fontsize=7)
    if len(view.days) <= 14:
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if v < 14 else "white",
                )
    fig.colorbar(im, ax=ax, label="on-hours per day")
    ax.set_title(f"On-hours by appliance and day, {view.label}")
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def device_charts(report: DeviceReport, view: View) -> dict[str, bytes]:
    """PNG bytes of the three charts, by file name."""
    return {
        "daily_energy.png": png_bytes(daily_energy_figure(report, view)),
        "share.png": png_bytes(share_figure(report, view)),
        "on_hours.png": png_bytes(on_hours_figure(report, view)),
    }
