"""One self-contained HTML page per device: the view's totals, per-appliance table, events, gaps and the three
charts embedded as base64 PNG (no CDN, no script: it opens offline and can be mailed as one file)."""

from __future__ import annotations

import base64
import html
from typing import Any

import pandas as pd

from airwatt.report.charts import View
from airwatt.report.core import UNEXPLAINED, DeviceReport

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
.muted{color:#666;font-size:.9em} table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left} .cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card b{display:block;font-size:1.3em} img{max-width:100%} .warn{color:#b00}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str) -> str:
    return "&ndash;" if x is None or pd.isna(x) else format(x, fmt)


def _appliance_rows(report: DeviceReport, view: View) -> list[str]:
    a = report.appliance_days[report.appliance_days["day"].isin(set(view.days))]
    g = a.groupby("appliance", sort=False).agg(
        energy_kwh=("energy_kwh", "sum"),
        on_hours=("on_hours", lambda x: x.sum(min_count=1)),
        cycles=("cycles", lambda x: x.sum(min_count=1)),
        peak_w=("peak_w", "max"),
        cost=("cost", "sum"),
    )
    total = g["energy_kwh"].sum()
    g = g.sort_values("energy_kwh", ascending=False)
    g = pd.concat([g.drop(index=UNEXPLAINED, errors="ignore"), g.loc[g.index == UNEXPLAINED]])
    return [
        f"<tr><td>{_esc(name.replace('_', ' '))}</td><td>{r.energy_kwh:.2f}</td>"
        f"<td>{_num(r.energy_kwh / total if total > 0 else None, '.0%')}</td>"
        f"<td>{_num(r.on_hours, '.1f')}</td>"
        f"<td>{_num(r.cycles, '.0f')}</td><td>{_num(r.peak_w, ',.0f')}</td><td>{r.cost:.2f}</td></tr>"
        for name, r in g.iterrows()
    ]


def device_page(report: DeviceReport, view: View, charts: dict[str, bytes], meta: dict[str, Any]) -> str:
    """The HTML text of one device's page; ``meta`` holds site_type, model and tariff lines."""
    days = report.days[report.days["day"].isin(set(view.days))]
    events = report.events[report.events["day"].isin(set(view.days))]
    gaps_h = float(days["missing_hours"].sum())
    cur = _esc(report.currency)
    cards = [
        ("Measured", f"{days['measured_kwh'].sum():.1f} kWh"),
        ("Cost", f"{days['cost'].sum():.2f} {cur}"),
        ("Explained by appliances", f"{days['explained_kwh'].sum():.1f} kWh"),
        ("Missing data", f"{gaps_h:.1f} h"),
        ("Events", str(len(events))),
    ]
    event_items = "".join(
        f"<li><b>{_esc(e.day)}</b> {_esc(e.kind.replace('_', ' '))}: {_esc(e.message)}</li>"
        for e in events.itertuples()
    )
    images = "".join(
        f'<p><img alt="{_esc(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'
        for name, png in charts.items()
    )
    short = days[days["missing_hours"] > 0]
    gap_rows = "".join(
        f"<tr><td>{_esc(d.day)}</td><td>{d.missing_hours:.1f}</td><td>{d.hours_expected:.0f}</td></tr>"
        for d in short.itertuples()
    )
    head = "<tr><th>Appliance</th><th>kWh</th><th>Share</th><th>On-hours</th><th>Cycles</th><th>Peak W</th>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>AirWatt report {_esc(report.device_id)}</title>
<style>{CSS}</style></head><body>
<h1>Energy report: {_esc(report.device_id)}</h1>
<p class="muted">{_esc(meta.get("site_type", ""))} &middot; {_esc(view.label)} &middot; local days in
{_esc(report.timezone)} &middot; {_esc(view.days[0])} to {_esc(view.days[-1])}</p>
<div class="cards">{"".join(f"<div class='card'>{_esc(k)}<b>{v}</b></div>" for k, v in cards)}</div>
<h2>By appliance</h2>
<table>{head}<th>Cost ({cur})</th></tr>{"".join(_appliance_rows(report, view))}</table>
<p class="muted">Appliance energy is the model's estimate, never more than was measured; "unexplained" is the
measured energy no appliance accounts for (base load, devices the model does not know).</p>
<h2>Events</h2>
{f"<ul>{event_items}</ul>" if event_items else "<p>None in this view.</p>"}
<h2>Charts</h2>{images}
<h2>Missing data</h2>
{
        f"<table><tr><th>Day</th><th>Missing h</th><th>Day length h</th></tr>{gap_rows}</table>"
        if gap_rows
        else "<p>No gaps in this view.</p>"
    }
<p class="muted">Gaps are not filled beyond the prepare policy (short gaps only), so energy and cost cover the
measured hours. Model: {_esc(meta.get("model", ""))}. Tariff: {_esc(meta.get("tariff", ""))}.</p>
</body></html>
"""
