"""Importers: small generated files with known answers, bad input, the CLI, and the real public data."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airwatt.dataset import open_dataset, read_manifest
from airwatt.errors import DataError
from airwatt.importers import import_dataset, redd
from airwatt.labels import derive_labels
from airwatt.timeutil import to_epoch_ms

REPO = Path(__file__).resolve().parents[1]
STEP_MS = 5000
AIRWATT_IMPORT = [sys.executable, "-m", "airwatt.cli", "data", "import"]
PARAMS = ["--params", str(REPO / "params.yaml")]


# ---------------------------------------------------------------------------------------------- writers
def write_redd_sync(path: Path, n: int, columns: dict[str, float], main_w: float) -> Path:
    """A synchronised REDD file: unnamed index column, constant appliance columns, `main` last."""
    df = pd.DataFrame({name: np.full(n, w) for name, w in columns.items()})
    df["main"] = main_w
    df.to_csv(path)  # writes the unnamed index column first, as the public files do
    return path


def write_channel(path: Path, start_s: int, step_s: int, n: int, power_w: float | np.ndarray) -> None:
    t = start_s + np.arange(n) * step_s
    p = np.broadcast_to(np.asarray(power_w, float), (n,))
    path.write_text("".join(f"{ti} {pi:.2f}\n" for ti, pi in zip(t, p, strict=True)))


def write_timestamped(path: Path, ts: pd.DatetimeIndex, cols: dict[str, np.ndarray], **kw: object) -> Path:
    """REFIT 8 s / UK-DALE form: `timestamp` with +00:00, `aggregate`, appliances."""
    df = pd.DataFrame({"timestamp": [t.isoformat(sep=" ") for t in ts], **cols})
    df.to_csv(path, index=False, **kw)
    return path


def write_refit_month(path: Path, start: str, n: int, cols: dict[str, np.ndarray]) -> Path:
    """REFIT monthly 30 s gzip: naive `Time`, Aggregate, appliances."""
    ts = pd.date_range(start, periods=n, freq="30s")
    df = pd.DataFrame({"Time": ts.strftime("%Y-%m-%d %H:%M:%S"), **cols})
    with gzip.open(path, "wt") as f:
        df.to_csv(f, index=False)
    return path


def readings_of(out: Path, device: str | None = None) -> pd.DataFrame:
    return open_dataset(out).readings(devices=[device] if device else None)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---------------------------------------------------------------------------------------------- REDD
def test_redd_synchronised_rows_are_placed_every_3_46_s_and_segments_one_hour_apart(tmp_path: Path) -> None:
    src = tmp_path / "redd"
    src.mkdir()
    write_redd_sync(src / "redd_house2_0.csv", 100, {"fridge": 150.0, "washer dryer": 0.0}, 400.0)
    write_redd_sync(src / "redd_house2_2.csv", 50, {"fridge": 0.0, "washer dryer": 600.0}, 900.0)
    m = import_dataset("redd", src, tmp_path / "out")

    assert m.device_ids == ["redd-house2"]
    r = readings_of(tmp_path / "out")
    t = to_epoch_ms(r["timestamp"])
    epoch_ms = int(redd.EPOCH.value // 1_000_000)
    assert t[0] == epoch_ms
    assert (np.diff(t) == STEP_MS).all()
    # Segment 0: rows at 0 .. 99 * 3.46 s; segment 2 starts one hour after segment 0's last row.
    seg0_last_ms = epoch_ms + 99 * 3460
    seg2_first_ms = seg0_last_ms + 3600 * 1000
    seg2_last_ms = seg2_first_ms + 49 * 3460
    assert t[-1] == seg2_last_ms // STEP_MS * STEP_MS
    assert len(r) == (seg2_last_ms // STEP_MS - epoch_ms // STEP_MS) + 1
    power = r["power_w"].to_numpy()
    in_seg0 = t <= seg0_last_ms
    in_seg2 = t >= seg2_first_ms // STEP_MS * STEP_MS
    assert (power[in_seg0] == 400).all() and (power[in_seg2] == 900).all()
    # The hour between the files is marked: null power, not filled, except the bounded forward fill.
    between = ~in_seg0 & ~in_seg2
    assert r.loc[between, "filled"].sum() == 60 // 5
    assert r.loc[between & ~r["filled"], "power_w"].isna().all()
    assert r.loc[between & ~r["filled"]].shape[0] > 600

    gt = open_dataset(tmp_path / "out").ground_truth()
    assert list(m.appliances) == ["fridge", "washing_machine"]  # "washer dryer" normalised
    assert (gt.loc[in_seg2, "washing_machine"] == 600).all()
    prov = m.provenance
    assert prov["timestamps_reconstructed"] is True
    assert "reconstructed" in m.device("redd-house2").provenance
    assert prov["details"]["redd-house2"]["missing_segments"] == [1]
    labels = open_dataset(tmp_path / "out").labels()
    fridge = labels[labels["appliance"] == "fridge"]
    assert len(fridge) == 1 and fridge["start"].iloc[0] == r["timestamp"].iloc[0]


def test_redd_empty_cells_become_missing_appliance_values_not_errors(tmp_path: Path) -> None:
    src = tmp_path / "redd"
    src.mkdir()
    path = write_redd_sync(src / "redd_house5_0.csv", 3, {"fridge": 100.0, "microwave": 5.0}, 300.0)
    text = lines_of(path)
    text[1] = "0,,5.0,300.0"  # an empty fridge cell on the first data row, as in redd_house5_0.csv
    path.write_text("\n".join(text) + "\n")
    import_dataset("redd", src, tmp_path / "out", max_fill_s=0)
    gt = open_dataset(tmp_path / "out").ground_truth()
    assert gt["fridge"].tolist() == [100.0, 100.0]  # slot 0 holds rows 0 (empty) and 1: mean of the valid


def _raw_house(root: Path, labels: str) -> Path:
    house = root / "low_freq" / "house_1"
    house.mkdir(parents=True)
    (house / "labels.dat").write_text(labels)
    return house


def test_redd_raw_low_freq_sums_mains_and_maps_labels_dat(tmp_path: Path) -> None:
    house = _raw_house(
        tmp_path,
        "1 mains\n2 mains\n3 refrigerator\n4 kitchen_outlets\n5 washer_dryer\n6 washer_dryer\n7 dishwaser\n",
    )
    t0 = 1_303_132_930  # a multiple of 5 s
    write_channel(house / "channel_1.dat", t0, 1, 600, 100.0)
    write_channel(house / "channel_2.dat", t0, 1, 600, 250.0)
    write_channel(house / "channel_3.dat", t0 + 1, 3, 200, 120.0)
    write_channel(house / "channel_4.dat", t0 + 1, 3, 200, 30.0)
    write_channel(house / "channel_5.dat", t0 + 1, 3, 200, 400.0)
    write_channel(house / "channel_6.dat", t0 + 1, 3, 200, 200.0)
    write_channel(house / "channel_7.dat", t0 + 1, 3, 200, 0.0)
    m = import_dataset("redd", tmp_path, tmp_path / "out")

    assert m.device_ids == ["redd-house1"]
    r = readings_of(tmp_path / "out")
    assert r["timestamp"].iloc[0] == pd.Timestamp(t0, unit="s", tz="UTC")  # real timestamps
    assert len(r) == 120  # 600 s of data
    assert (r["power_w"] == 350).all()  # mains legs summed
    gt = open_dataset(tmp_path / "out").ground_truth()
    assert (gt["fridge"] == 120).all()
    assert (gt["washing_machine"] == 600).all()  # both legs of the 240 V washer dryer
    assert set(m.appliances) == {"fridge", "washing_machine", "dishwasher"}
    details = m.provenance["details"]["redd-house1"]
    assert details["skipped_circuits"] == {"4": "kitchen_outlets"}
    assert m.provenance["timestamps_reconstructed"] is False


def test_redd_raw_unknown_label_names_labels_dat(tmp_path: Path) -> None:
    house = _raw_house(tmp_path, "1 mains\n2 hot_tub\n")
    write_channel(house / "channel_1.dat", 0, 1, 10, 1.0)
    write_channel(house / "channel_2.dat", 0, 1, 10, 1.0)
    with pytest.raises(DataError, match="unknown appliance name 'hot_tub'") as e:
        import_dataset("redd", tmp_path, tmp_path / "out")
    assert e.value.file is not None and e.value.file.endswith("labels.dat")


def test_redd_raw_missing_channel_file_is_named(tmp_path: Path) -> None:
    house = _raw_house(tmp_path, "1 mains\n2 mains\n3 refrigerator\n")
    write_channel(house / "channel_1.dat", 0, 1, 10, 1.0)
    write_channel(house / "channel_2.dat", 0, 1, 10, 1.0)
    with pytest.raises(DataError, match="file not found") as e:
        import_dataset("redd", tmp_path, tmp_path / "out")
    assert e.value.file is not None and e.value.file.endswith("channel_3.dat")


def test_redd_raw_bad_power_names_line_and_column(tmp_path: Path) -> None:
    house = _raw_house(tmp_path, "1 mains\n")
    write_channel(house / "channel_1.dat", 0, 1, 10, 1.0)
    lines = lines_of(house / "channel_1.dat")
    lines[6] = "6 n/a"
    (house / "channel_1.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="not a number: 'n/a'") as e:
        import_dataset("redd", tmp_path, tmp_path / "out")
    assert (e.value.row, e.value.column) == (7, "power_w")


def test_redd_last_column_must_be_main(tmp_path: Path) -> None:
    src = tmp_path / "redd"
    src.mkdir()
    pd.DataFrame({"fridge": [1.0], "aggregate": [2.0]}).to_csv(src / "redd_house2_0.csv")
    with pytest.raises(DataError, match="'main'") as e:
        import_dataset("redd", src, tmp_path / "out")
    assert e.value.file is not None and e.value.file.endswith("redd_house2_0.csv")


# ---------------------------------------------------------------------------------------------- REFIT
def test_refit_30s_outage_rows_are_kept_and_naive_time_is_utc(tmp_path: Path) -> None:
    n = 20
    agg = np.full(n, 500.0)
    kettle = np.zeros(n)
    agg[5:10] = 0.0  # a meter outage: every column 0 W
    src = tmp_path / "refit30"
    src.mkdir()
    write_refit_month(
        src / "REFIT_House2_2014-03.gzip",
        "2014-03-30 00:50:00",  # through 01:00-02:00, which does not exist in UK local time
        n,
        {"Aggregate": agg, "Kettle": kettle, "WashingMachine": np.full(n, 30.0)},
    )
    m = import_dataset("refit", src, tmp_path / "out")

    assert m.device_ids == ["refit-house2"]
    r = readings_of(tmp_path / "out")
    assert r["timestamp"].iloc[0] == pd.Timestamp("2014-03-30 00:50:00", tz="UTC")
    assert len(r) == (n - 1) * 6 + 1  # 30 s -> six 5 s slots, up to the last sample's slot
    assert r["power_w"].notna().all()
    assert (r["power_w"] == 0).sum() == 5 * 6  # outage rows kept as 0 W (not dropped, not null)
    assert r["filled"].sum() == (n - 1) * 5  # the 25 s after each 30 s value are forward-filled
    assert m.device("refit-house2").timezone == "Europe/London"
    assert m.device("refit-house2").appliances == ["kettle", "washing_machine"]  # WashingMachine normalised


def test_refit_8s_csv_form_is_detected_and_gets_house_2(tmp_path: Path) -> None:
    ts = pd.date_range("2015-01-04", periods=16, freq="8s", tz="UTC")
    src = tmp_path / "refit8"
    src.mkdir()
    write_timestamped(
        src / "REFIT_HF_validation.csv",
        ts,
        {"aggregate": np.arange(16) * 10.0, "fridge": np.full(16, 80.0), "washing_machine": np.zeros(16)},
    )
    m = import_dataset("refit", src, tmp_path / "out")
    r = readings_of(tmp_path / "out")
    assert m.device_ids == ["refit-house2"]
    assert len(r) == 15 * 8 // 5 + 1
    # 8 s samples at 0, 8, 16, 24 s -> slots 0, 5, 15, 20 s; slot 10 s is filled from 5 s.
    assert r["power_w"].iloc[:5].tolist() == [0.0, 10.0, 10.0, 20.0, 30.0]
    assert r["filled"].iloc[:5].tolist() == [False, False, True, False, False]
    assert m.appliances == ["fridge", "washing_machine"]


# ---------------------------------------------------------------------------------------------- UK-DALE
def _ukdale(src: Path, name: str = "UKDALE_HF_test.csv", minutes: int = 30) -> Path:
    src.mkdir(exist_ok=True)
    n = minutes * 10
    ts = pd.date_range("2014-11-09", periods=n, freq="6s", tz="UTC")
    t_s = np.arange(n) * 6
    fridge = np.where((t_s % 1200) < 600, 90.0, 1.0)  # on 10 min of every 20
    return write_timestamped(
        src / name,
        ts,
        {"aggregate": 100 + fridge, "fridge": fridge, "dishwasher": np.zeros(n), "microwave": np.zeros(n)},
    )


def test_ukdale_fridge_square_wave_gives_known_labels(tmp_path: Path) -> None:
    _ukdale(tmp_path / "uk", minutes=60)
    m = import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert m.device_ids == ["ukdale-house1"]  # the test split is house 1
    labels = open_dataset(tmp_path / "out").labels()
    fridge = labels[labels["appliance"] == "fridge"]
    assert len(fridge) == 3
    assert ((fridge["end"] - fridge["start"]).dt.total_seconds() == 600).all()
    assert (fridge["source"] == "sub-meter").all()
    assert m.device("ukdale-house1").rated_max_w == 23000


def test_window_keeps_only_slots_in_start_end(tmp_path: Path) -> None:
    _ukdale(tmp_path / "uk", minutes=30)
    m = import_dataset(
        "ukdale", tmp_path / "uk", tmp_path / "out", start="2014-11-09T00:10:00Z", end="2014-11-09T00:20:00Z"
    )
    r = readings_of(tmp_path / "out")
    assert len(r) == 120
    assert r["timestamp"].iloc[0] == pd.Timestamp("2014-11-09T00:10:00Z")
    assert m.start == pd.Timestamp("2014-11-09T00:10:00Z")
    with pytest.raises(DataError, match="no data in the window"):
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out2", start="2020-01-01", end="2020-01-02")


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("kind", "column", "expected"),
    [
        ("refit", "WashingMachine", "washing_machine"),
        ("refit", "washing_machine", "washing_machine"),
        ("ukdale", "Washer Dryer", "washing_machine"),
        ("ukdale", "dish washer", "dishwasher"),
        ("ukdale", "Fridge-Freezer", "fridge"),
    ],
)
def test_appliance_names_are_normalised(tmp_path: Path, kind: str, column: str, expected: str) -> None:
    ts = pd.date_range("2015-01-04", periods=4, freq="8s", tz="UTC")
    src = tmp_path / "src"
    src.mkdir()
    write_timestamped(src / "x_house3.csv", ts, {"aggregate": np.ones(4), column: np.ones(4)})
    m = import_dataset(kind, src, tmp_path / "out")
    assert m.appliances == [expected]
    assert m.device_ids == [f"{kind}-house3"]


def test_unknown_appliance_column_names_the_file(tmp_path: Path) -> None:
    ts = pd.date_range("2015-01-04", periods=4, freq="8s", tz="UTC")
    src = tmp_path / "src"
    src.mkdir()
    write_timestamped(src / "REFIT_HF_test.csv", ts, {"aggregate": np.ones(4), "hairdryer": np.ones(4)})
    with pytest.raises(DataError, match="unknown appliance name 'hairdryer'") as e:
        import_dataset("refit", src, tmp_path / "out")
    assert e.value.file is not None and e.value.file.endswith("REFIT_HF_test.csv")


# ---------------------------------------------------------------------------------------------- bad input
def _edit_line(path: Path, line_no: int, old: str, new: str) -> None:
    """Replace text on one line (1-based, as an editor shows it)."""
    lines = lines_of(path)
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")


def test_missing_source_is_an_error_naming_it(tmp_path: Path) -> None:
    for kind in ("redd", "refit", "ukdale"):
        with pytest.raises(DataError) as e:
            import_dataset(kind, tmp_path / "nowhere", tmp_path / "out")
        assert "nowhere" in str(e.value)


def test_folder_without_dataset_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no REDD files found"):
        import_dataset("redd", tmp_path / "empty", tmp_path / "out")


def test_missing_aggregate_column_is_named(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    df = pd.read_csv(path).drop(columns="aggregate")
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="missing column 'aggregate'") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert e.value.column == "aggregate" and e.value.file is not None


def test_non_numeric_power_names_file_line_and_column(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    _edit_line(path, 17, ",0.0,0.0", ",abc,0.0")  # the dishwasher cell of line 17
    with pytest.raises(DataError, match="not a number: 'abc'") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert (e.value.row, e.value.column) == (17, "dishwasher")
    assert "line number" in str(e.value) and str(path) in str(e.value)


def test_unparsable_timestamp_names_line(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    _edit_line(path, 9, "2014-11-09", "2014-13-09")
    with pytest.raises(DataError, match="unparsable timestamp") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert (e.value.row, e.value.column) == (9, "timestamp")


def test_mixed_timezones_are_an_error_naming_line(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    _edit_line(path, 12, "+00:00", "")
    with pytest.raises(DataError, match="mixed timezones") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert (e.value.row, e.value.column) == (12, "timestamp")


def test_naive_timestamps_where_offsets_are_expected_are_an_error(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    path.write_text(path.read_text().replace("+00:00", ""))
    with pytest.raises(DataError, match="no timezone"):
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")


def test_refit_30s_time_with_an_offset_is_mixed_timezones(tmp_path: Path) -> None:
    src = tmp_path / "refit30"
    src.mkdir()
    ts = pd.date_range("2014-03-01", periods=5, freq="30s").strftime("%Y-%m-%d %H:%M:%S").tolist()
    ts[3] += "+01:00"
    df = pd.DataFrame({"Time": ts, "Aggregate": 1.0, "Kettle": 0.0})
    with gzip.open(src / "REFIT_House2_2014-03.gzip", "wt") as f:
        df.to_csv(f, index=False)
    with pytest.raises(DataError, match="mixed timezones") as e:
        import_dataset("refit", src, tmp_path / "out")
    assert (e.value.row, e.value.column) == (5, "Time")


def test_timestamps_going_backwards_name_the_line(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    lines = lines_of(path)
    lines[9], lines[10] = lines[10], lines[9]  # lines 10 and 11 swapped
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="does not increase") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert e.value.row == 11


def test_ragged_csv_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    _edit_line(path, 20, ",0.0,0.0", ",0.0,0.0,7,8")
    with pytest.raises(DataError, match=r"not a valid CSV.*line 20") as e:
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out")
    assert e.value.file == str(path)


def test_unknown_house_is_an_error(tmp_path: Path) -> None:
    _ukdale(tmp_path / "uk")
    with pytest.raises(DataError, match=r"house\(s\) \[7\] not found; available: \[1\]"):
        import_dataset("ukdale", tmp_path / "uk", tmp_path / "out", houses=[7])


def test_a_bad_file_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    src = tmp_path / "uk"
    _ukdale(src, "UKDALE_HF_test.csv")
    out = tmp_path / "out"
    import_dataset("ukdale", src, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # A second house whose file breaks half-way through the import.
    bad = _ukdale(src, "UKDALE_HF_train.csv")
    _edit_line(bad, 50, ",0.0,0.0", ",oops,0.0")
    with pytest.raises(DataError, match="oops"):
        import_dataset("ukdale", src, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "uk"]  # no temporary leftovers


def test_cli_import_exits_2_with_a_one_line_message_for_a_bad_file(tmp_path: Path) -> None:
    path = _ukdale(tmp_path / "uk")
    _edit_line(path, 17, ",0.0,0.0", ",abc,0.0")
    proc = subprocess.run(
        [*AIRWATT_IMPORT, "ukdale", str(tmp_path / "uk"), "--out", str(tmp_path / "out"), *PARAMS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}, row 17, column 'dishwasher': not a number: 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_import_writes_a_dataset(tmp_path: Path) -> None:
    _ukdale(tmp_path / "uk")
    proc = subprocess.run(
        [*AIRWATT_IMPORT, "ukdale", str(tmp_path / "uk"), "--out", str(tmp_path / "out"), *PARAMS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    m = read_manifest(tmp_path / "out")
    assert m.device_ids == ["ukdale-house1"]
    assert m.provenance["max_fill_s"] == 60  # params.yaml import.max_fill_s reached the importer


def test_an_error_while_writing_leaves_the_previous_output_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "uk"
    _ukdale(src, "UKDALE_HF_test.csv")
    _ukdale(src, "UKDALE_HF_train.csv")
    out = tmp_path / "out"
    import_dataset("ukdale", src, out, houses=[1])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import airwatt.importers.run as importers  # where import_dataset looks derive_labels up

    calls = []

    def failing_second_device(*args: object, **kwargs: object) -> pd.DataFrame:
        calls.append(1)
        if len(calls) == 2:
            raise DataError("disk trouble while writing the second device")
        return derive_labels(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importers, "derive_labels", failing_second_device)
    with pytest.raises(DataError, match="disk trouble"):
        import_dataset("ukdale", src, out)
    assert len(calls) == 2  # the first device had been written into the temporary directory
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "uk"]


# ---------------------------------------------------------------------------------------------- real data
MAX_FILL_SLOTS = 60 // 5  # params.yaml import.max_fill_s at 5 s


def expected_counts(source_ms: np.ndarray) -> dict[str, int]:
    """Slots, forward-filled and null rows the policy must give for samples at ``source_ms``."""
    occupied = np.unique(source_ms // STEP_MS)
    empty_runs = np.diff(occupied) - 1
    filled = np.minimum(empty_runs, MAX_FILL_SLOTS)
    return {
        "slots": int(occupied[-1] - occupied[0] + 1),
        "filled": int(filled.sum()),
        "null": int((empty_runs - filled).sum()),
        "first_ms": int(occupied[0] * STEP_MS),
        "last_ms": int(occupied[-1] * STEP_MS),
    }


def assert_grid(r: pd.DataFrame, source_ms: np.ndarray) -> None:
    """Row count, span, cadence, fill and gap marking of one device against its source timestamps."""
    want = expected_counts(source_ms)
    t = to_epoch_ms(r["timestamp"])
    assert len(r) == want["slots"]
    assert (t[0], t[-1]) == (want["first_ms"], want["last_ms"])
    assert (np.diff(t) == STEP_MS).all()
    assert int(r["filled"].sum()) == want["filled"]
    assert int(r["power_w"].isna().sum()) == want["null"]


def redd_source_ms(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructed source times (the documented placement) and `main` of a house's files."""
    times, mains = [], []
    start_ms = int(redd.EPOCH.value // 1_000_000)
    for path in files:
        df = pd.read_csv(path)
        idx = df.iloc[:, 0].to_numpy()
        t = start_ms + (idx - idx[0]) * 3460
        times.append(t)
        mains.append(df["main"].to_numpy())
        start_ms = int(t[-1]) + 3_600_000
    return np.concatenate(times), np.concatenate(mains)


@pytest.fixture(scope="module")
def redd_import(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("redd") / "out"
    import_dataset("redd", shared_data / "redd", out)
    return out


@pytest.mark.realdata
def test_real_redd_all_houses_rows_span_cadence_and_gaps(shared_data: Path, redd_import: Path) -> None:
    ds = open_dataset(redd_import)
    assert ds.device_ids == [f"redd-house{h}" for h in (2, 3, 4, 5, 6)]
    for house in (2, 3, 4, 5, 6):
        files = sorted((shared_data / "redd").glob(f"redd_house{house}_*.csv"))
        source_ms, main = redd_source_ms(files)
        r = ds.readings(devices=[f"redd-house{house}"])
        assert_grid(r, source_ms)
        if len(files) > 1:
            assert r["power_w"].isna().any()  # the marked gaps between files
        measured = r.loc[~r["filled"] & r["power_w"].notna(), "power_w"]
        assert measured.mean() == pytest.approx(main.mean(), rel=0.01)  # mean-of-bins keeps the energy


@pytest.mark.realdata
def test_real_redd_appliances_and_fridge_labels(shared_data: Path, redd_import: Path) -> None:
    m = read_manifest(redd_import)
    house2 = m.device("redd-house2")
    assert house2.appliances == [
        "microwave",
        "fridge",
        "dishwasher",
        "washing_machine",
        "electric_stove",
        "waste_disposal",
    ]
    assert "consumer_electronics" in m.device("redd-house3").appliances  # "CE appliance"
    assert "space_heater" in m.device("redd-house6").appliances  # "electric space heater"
    assert all(d.timezone == "America/New_York" and d.has_ground_truth for d in m.devices)
    assert m.provenance["timestamps_reconstructed"] is True
    assert m.provenance["details"]["redd-house2"]["missing_segments"] == [5]
    labels = open_dataset(redd_import).labels()
    fridge = labels[labels["appliance"] == "fridge"]
    assert set(fridge["device_id"]) == {"redd-house2", "redd-house3", "redd-house5", "redd-house6"}
    assert (fridge.groupby("device_id").size() >= 10).all()  # a fridge cycles many times a day
    assert ((fridge["end"] - fridge["start"]).dt.total_seconds() >= 60).all()  # min on 60 s


def _timestamped_source_ms(files: list[Path], column: str) -> np.ndarray:
    frames = [pd.read_csv(f, usecols=[column]) for f in files]
    ts = pd.to_datetime(pd.concat(frames)[column], utc=True)
    return to_epoch_ms(ts)


@pytest.mark.realdata
def test_real_refit_8s(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "refit_house2_8s"
    m = import_dataset("refit", src, tmp_path / "out")
    assert m.device_ids == ["refit-house2"]
    assert m.appliances == ["microwave", "fridge", "dishwasher", "washing_machine"]
    r = readings_of(tmp_path / "out")
    assert_grid(r, _timestamped_source_ms(sorted(src.glob("*.csv")), "timestamp"))
    assert r["timestamp"].iloc[0] == pd.Timestamp("2015-01-04", tz="UTC")
    labels = open_dataset(tmp_path / "out").labels()
    assert (labels["appliance"] == "fridge").sum() > 100  # two weeks of fridge cycles


def _assert_refit_30s(files: list[Path], out: Path) -> None:
    r = readings_of(out)
    source = pd.concat([pd.read_csv(f, compression="gzip") for f in files], ignore_index=True)
    source_ms = to_epoch_ms(pd.to_datetime(source["Time"]).dt.tz_localize("UTC"))
    assert (np.diff(source_ms) == 30_000).all()  # the known answer below assumes a gapless 30 s grid
    assert_grid(r, source_ms)
    # Outage rows (every column 0 W) are kept: each 30 s zero row gives six 5 s zero rows (one if last).
    outage = (source.drop(columns="Time") == 0).all(axis=1).to_numpy()
    zero_slots = int(outage.sum()) * 6 - 5 * int(outage[-1])
    assert int((r["power_w"] == 0).sum()) == zero_slots
    assert outage.mean() > 0  # the month has outages to keep


@pytest.mark.realdata
def test_real_refit_30s_one_month_keeps_outage_rows(shared_data: Path, tmp_path: Path) -> None:
    month = shared_data / "refit_house2_30s" / "REFIT_House2_2013-10.gzip"
    m = import_dataset("refit", month, tmp_path / "out")
    assert m.device_ids == ["refit-house2"]
    assert m.appliances == ["kettle", "microwave", "dishwasher", "washing_machine"]
    _assert_refit_30s([month], tmp_path / "out")


@pytest.mark.realdata
@pytest.mark.slow
def test_real_refit_30s_all_months(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "refit_house2_30s"
    import_dataset("refit", src, tmp_path / "out")
    _assert_refit_30s(sorted(src.glob("*.gzip")), tmp_path / "out")


@pytest.mark.realdata
def test_real_refit_30s_window_reads_only_overlapping_months(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "refit_house2_30s"
    m = import_dataset("refit", src, tmp_path / "out", start="2014-03-01", end="2014-03-15")
    assert m.provenance["files"]["refit-house2"] == ["REFIT_House2_2014-02.gzip", "REFIT_House2_2014-03.gzip"]
    r = readings_of(tmp_path / "out")
    assert len(r) == 14 * 17280
    assert r["power_w"].notna().all()


@pytest.mark.realdata
def test_real_ukdale(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ukdale_days"
    m = import_dataset("ukdale", src, tmp_path / "out")
    assert m.device_ids == ["ukdale-house1", "ukdale-house2"]
    assert all(d.timezone == "Europe/London" and d.rated_max_w == 23000 for d in m.devices)
    files = {
        1: [src / "UKDALE_HF_test.csv"],
        2: [src / "UKDALE_HF_train.csv", src / "UKDALE_HF_validation.csv"],
    }
    for house, fs in files.items():
        r = readings_of(tmp_path / "out", f"ukdale-house{house}")
        assert_grid(r, _timestamped_source_ms(fs, "timestamp"))
    labels = open_dataset(tmp_path / "out").labels()
    fridge = labels[labels["appliance"] == "fridge"]
    assert set(fridge["device_id"]) == {"ukdale-house1", "ukdale-house2"}
