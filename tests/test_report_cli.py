"""`airwatt report` end to end: a small square-wave dataset, the really trained ``trained_bundle``, Parquet +
report.json + self-contained HTML pages. The measured energy does not depend on the model, so it is checked
against the hand-computed square wave (conftest.square_wave_device): 80 W base, fridge 100 W for 20 min of
every hour, kettle 2200 W for 3 min at 07:00 on the first day only."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from typer.testing import CliRunner

from airwatt.cli import app

pytestmark = pytest.mark.slow  # trains the session's small model once (~10 s) and predicts 2 devices x 2 days


def run_report(data: Path, model: Path, out: Path, *extra: str) -> object:
    args = ["report", "--data", str(data), "--model", str(model), "--out", str(out), *extra]
    return CliRunner().invoke(app, [*args, "--params", str(REPO / "params.yaml")])


def test_cli_writes_tables_json_and_pages(
    make_dataset: Callable[..., Path], trained_bundle: Path, tmp_path: Path
) -> None:
    data = make_dataset(devices=2, hours=48)
    out = tmp_path / "reports"
    result = run_report(data, trained_bundle, out, "--period", "week")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    days = pd.read_parquet(out / "days.parquet")
    assert sorted(days["device_id"].unique()) == ["d-0000", "d-0001"]
    assert len(days) == 4  # 2 devices x 2 UTC days (the devices' timezone)
    first = days[days["day"] == days["day"].min()]["measured_kwh"]
    second = days[days["day"] == days["day"].max()]["measured_kwh"]
    assert first.to_numpy() == pytest.approx(1.92 + 0.8 + 2.2 * 3 / 60, rel=1e-6)  # 2.83 kWh
    assert second.to_numpy() == pytest.approx(1.92 + 0.8, rel=1e-6)
    app_days = pd.read_parquet(out / "appliance_days.parquet")
    # Each device's inventory (fridge, kettle) restricts what is reported, whatever else the model predicts.
    assert set(app_days["appliance"]) == {"fridge", "kettle", "unexplained"}
    sums = app_days.groupby(["device_id", "day"])["energy_kwh"].sum().to_numpy()
    assert sums == pytest.approx(days.sort_values(["device_id", "day"])["measured_kwh"].to_numpy())
    assert (app_days["energy_kwh"] >= -1e-12).all() and app_days["share"].between(-1e-9, 1 + 1e-9).all()
    summary = json.loads((out / "report.json").read_text())
    assert summary["period"] == "week" and summary["currency"] == "USD"
    for name, info in summary["tables"].items():
        assert len(pd.read_parquet(out / info["file"])) == info["rows"], name
    assert summary["totals"]["measured_kwh"] == pytest.approx(2 * (2.83 + 2.72), rel=1e-6)
    periods = pd.read_parquet(out / "periods.parquet")
    assert set(periods["period"]) == {"2026-W02"}
    for dev in ("d-0000", "d-0001"):
        assert summary["devices"][dev]["totals"]["ok"]
        page = (out / summary["devices"][dev]["page"]).read_text()
        assert page.count("data:image/png;base64,") == 3
        assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)
        assert f"Energy report: {dev}" in page
        for png in ("daily_energy.png", "share.png", "on_hours.png"):
            assert (out / "devices" / dev / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_month_period_and_refusals(
    make_dataset: Callable[..., Path], trained_bundle: Path, tmp_path: Path
) -> None:
    data = make_dataset(devices=1, hours=24)
    out = tmp_path / "reports"
    result = run_report(data, trained_bundle, out, "--period", "month", "--no-pages")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert pd.read_parquet(out / "periods.parquet")["period"].tolist() == ["2026-01"]
    assert not (out / "devices").exists()
    result = run_report(data, trained_bundle, out, "--period", "month", "--no-pages")  # an earlier report
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = run_report(data, trained_bundle, precious)
    assert result.exit_code != 0 and "refusing to replace" in str(result.exception)  # type: ignore[attr-defined]
    assert (precious / "notes.txt").read_text() == "keep me"
    result = run_report(data, trained_bundle, out, "--devices", "nope")
    assert result.exit_code != 0 and "not in the dataset" in str(result.exception)  # type: ignore[attr-defined]


def test_device_ids_never_leave_the_pages_folder_or_share_a_folder(
    trained_bundle: Path, tmp_path: Path
) -> None:
    """Ids that are paths or differ only by case or by '/' vs '_' each get their own page inside devices/."""
    from conftest import square_wave_device

    from airwatt.dataset import DatasetWriter, DeviceInfo

    ids = ["..", "a/b", "a_b", "A_B", "../../escape", "sim-0001"]
    data = tmp_path / "odd-ids"
    start = pd.Timestamp("2026-01-05T00:00:00Z")
    with DatasetWriter(
        data, name="odd", appliances=["fridge", "kettle"], start=start, end=start + pd.Timedelta(hours=24)
    ) as w:
        for i, dev in enumerate(ids):
            readings, _ = square_wave_device(dev, base_w=80.0 + i)  # a different base load per device
            w.add_device(DeviceInfo(device_id=dev, appliances=["fridge", "kettle"]), readings)
    out = tmp_path / "work" / "reports"
    result = run_report(data, trained_bundle, out, "--period", "week")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads((out / "report.json").read_text())
    pages = {dev: (out / summary["devices"][dev]["page"]).resolve() for dev in ids}
    assert len(set(pages.values())) == len(ids)  # one page per device
    assert len({p.parent.name.lower() for p in pages.values()}) == len(ids)  # also on a case-blind disk
    for dev, page in pages.items():
        assert page.parent.parent == (out / "devices").resolve(), dev
        assert f"Energy report: {dev}" in page.read_text(), dev
    assert (out / "devices" / "sim-0001" / "report.html").is_file()  # plain ids keep their name
    assert not (out / "report.html").exists() and not (out / "daily_energy.png").exists()
    assert list((tmp_path / "work").iterdir()) == [out]  # nothing written beside the report folder
