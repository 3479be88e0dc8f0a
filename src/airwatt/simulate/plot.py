"""A quick look at one device-day: the aggregate over the stacked sub-metered appliances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from airwatt.dataset import Dataset
from airwatt.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_device_day(dataset_dir: str | Path, device: str, day: str | pd.Timestamp) -> Figure:
    """Figure of ``device`` on the local calendar ``day`` (e.g. "2026-01-06"): aggregate power as a line,
    ground-truth appliances stacked beneath it, in the site's timezone."""
    from matplotlib.figure import Figure  # heavy import only when plotting

    ds = Dataset(dataset_dir)
    try:
        tz = ds.manifest.device(device).timezone
    except KeyError:
        raise DataError(f"device not in the dataset; known: {ds.device_ids}", file=dataset_dir) from None
    start = pd.Timestamp(day).tz_localize(None).tz_localize(tz)
    end = start + pd.Timedelta(days=1)
    readings = ds.readings(devices=[device], start=start, end=end, columns=["timestamp", "power_w"])
    gt = ds.ground_truth(devices=[device], start=start, end=end)
    apps = [a for a in ds.manifest.device(device).appliances if a in gt.columns]
    fig = Figure(figsize=(14, 5), layout="constrained")
    ax = fig.add_subplot()
    if len(gt) and apps:
        t = gt["timestamp"].dt.tz_convert(tz).dt.tz_localize(None)
        ax.stackplot(t, *(gt[a].fillna(0).to_numpy() for a in apps), labels=apps, alpha=0.8)
    t = readings["timestamp"].dt.tz_convert(tz).dt.tz_localize(None)
    ax.plot(t, readings["power_w"], color="black", linewidth=0.6, label="aggregate")
    ax.set(title=f"{device} on {start.date()} ({tz})", xlabel="local time", ylabel="power [W]")
    ax.legend(loc="upper left", fontsize="small", ncols=2)
    return fig
