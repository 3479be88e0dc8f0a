"""The Label Studio round trip against a real server (its own virtualenv, a free loopback port).

Annotations are made through the API as a labeler's client would (SDK ``annotations.create``). Without the
server's virtualenv these tests skip, naming labeling/install-server.sh; with AIRWATT_REQUIRE_LABEL_STUDIO=1
(CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO
from test_labeling import HOUR_MS, write_beta_dataset

from airwatt.config import Params, load_params
from airwatt.dataset import Dataset
from airwatt.labeling.client import LabelStudioClient, LabelStudioError
from airwatt.labeling.pull import pull
from airwatt.labeling.push import existing_keys, model_version, push, setup_project
from airwatt.labeling.server import INSTALL_SCRIPT, LocalServer, local_server, server_executable, server_venv
from airwatt.models.predict import ModelBundle
from airwatt.prepare.grid import grid_device
from airwatt.timeutil import to_epoch_ms

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real Label Studio for the session (~45 s cold start), or skip/fail as the module docstring says."""
    if server_executable() is None:
        why = f"Label Studio server not installed in {server_venv()}: run {INSTALL_SCRIPT}"
        if os.environ.get("AIRWATT_REQUIRE_LABEL_STUDIO") == "1":
            pytest.fail(why + " (AIRWATT_REQUIRE_LABEL_STUDIO=1)")
        pytest.skip(why)
    with local_server(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture
def ls_env(label_studio: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    monkeypatch.setenv("AIRWATT_LABEL_STUDIO_TOKEN", label_studio.token)
    return label_studio


def params_for(server: LocalServer, title: str, **label: Any) -> Params:
    overrides = {
        "label.url": server.url,
        "label.project_title": title,
        **{f"label.{k}": v for k, v in label.items()},
    }
    return load_params(REPO / "params.yaml", overrides=overrides)


def client_of(server: LocalServer) -> LabelStudioClient:
    return LabelStudioClient(server.url, server.token, timeout_s=60)


def region(label: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    value = {"start": start_ms, "end": end_ms, "instant": False, "timeserieslabels": [label]}
    return {"from_name": "appliance", "to_name": "ts", "type": "timeserieslabels", "value": value}


# ------------------------------------------------------------------------------------------------ setup
def test_setup_is_idempotent_and_follows_the_inventory(ls_env: LocalServer, tmp_path: Path) -> None:
    from airwatt.dataset import read_manifest

    client = client_of(ls_env)
    beta = read_manifest(write_beta_dataset(tmp_path / "beta", devices=1, hours=1))
    metered = read_manifest(write_beta_dataset(tmp_path / "metered", devices=1, hours=1, ground_truth=True))
    first = setup_project(client, beta, "setup test")
    assert first.action == "created"
    assert setup_project(client, beta, "setup test").action == "unchanged"
    updated = setup_project(client, metered, "setup test")  # sub-meter channels appear
    assert updated.action == "updated" and updated.project.id == first.project.id
    assert 'column="fridge_w"' in client.get_project(first.project.id).label_config
    found = client.find_project("setup test")
    assert found is not None and found.id == first.project.id


# ------------------------------------------------------------------------------------------------ push
def test_push_selects_windows_with_pre_annotations_and_never_duplicates(
    ls_env: LocalServer, trained_bundle: Path, tmp_path: Path
) -> None:
    data = write_beta_dataset(tmp_path / "beta", devices=3, hours=48)  # 12 candidate windows
    params = params_for(ls_env, "push test", budget=5, random_share=0.4)
    report = push(
        params, data, model_uris=[str(trained_bundle), str(trained_bundle)], report_path=tmp_path / "r.json"
    )
    assert report.candidates == 12 and len(report.pushed) == 5
    assert sorted(p.selection for p in report.pushed) == ["random"] * 2 + ["uncertainty"] * 3
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True
    client = client_of(ls_env)
    project = client.find_project("push test")
    assert project is not None
    tasks = client.task_summaries(project.id)
    assert len(tasks) == 5
    version = report.models[0].version
    assert version.startswith("causal:")
    assert all(t["predictions"] and t["predictions"][0]["model_version"] == version for t in tasks)
    assert all(t["meta"]["dataset"] == "beta" for t in tasks)

    again = push(params, data, model_uris=[str(trained_bundle)], budget=100)
    assert again.already_pushed == 5 and len(again.pushed) == 7
    keys = existing_keys(client, project.id)
    assert len(keys) == 12  # every candidate once, none twice
    assert push(params, data, model_uris=[], budget=3).pushed == []


class FailingClient(LabelStudioClient):
    """A real client whose second import fails as a dropped connection would."""

    def __init__(self, *args: Any, fail_on: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls, self.fail_on = 0, fail_on

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url} (simulated)")
        return super().import_tasks(project_id, tasks)


def test_a_failed_push_loses_nothing_and_a_rerun_continues(ls_env: LocalServer, tmp_path: Path) -> None:
    data = write_beta_dataset(tmp_path / "beta", devices=2, hours=48)  # 8 windows
    params = params_for(ls_env, "resume test", budget=6, import_batch=2)
    failing = FailingClient(ls_env.url, ls_env.token, timeout_s=60)
    with pytest.raises(LabelStudioError, match=r"2 of 6 tasks were pushed.*rerun `airwatt label push`"):
        push(params, data, model_uris=[], client=failing, report_path=tmp_path / "r.json")
    partial = json.loads((tmp_path / "r.json").read_text())
    assert partial["complete"] is False and len(partial["pushed"]) == 2
    done = push(params, data, model_uris=[], budget=6)
    assert done.already_pushed == 2 and len(done.pushed) == 6
    project = client_of(ls_env).find_project("resume test")
    assert project is not None and len(existing_keys(client_of(ls_env), project.id)) == 8


def test_refused_token_names_the_url_and_the_token_variables(ls_env: LocalServer) -> None:
    with pytest.raises(
        LabelStudioError, match=rf"{ls_env.url} refused the token \(HTTP 401\).*LABEL_STUDIO_API_KEY"
    ):
        LabelStudioClient(ls_env.url, "0" * 40).check()


# ------------------------------------------------------------------------------------------------ pull
def _second_annotator(server: LocalServer) -> int:
    from label_studio_sdk import LabelStudio

    sdk = LabelStudio(base_url=server.url, api_key=server.token)
    existing = {u.email: u.id for u in sdk.users.list()}
    if "second@example.com" in existing:
        return int(existing["second@example.com"])
    return int(sdk.users.create(username="second", email="second@example.com", password="pw-second-123").id)


def test_pull_merges_annotations_reports_skips_and_agreement_and_is_idempotent(
    ls_env: LocalServer, trained_bundle: Path, tmp_path: Path
) -> None:
    data = write_beta_dataset(tmp_path / "beta", devices=2, hours=24)  # 4 windows, no sub-meters
    params = params_for(ls_env, "pull test", budget=4)
    push(params, data, model_uris=[str(trained_bundle)])
    client = client_of(ls_env)
    project = client.find_project("pull test")
    assert project is not None
    tasks = sorted(
        client.task_summaries(project.id),
        key=lambda t: (t["meta"]["device_id"], t["meta"]["window_start_ms"]),
    )
    t0, t1, t2, t3 = tasks
    w0 = t0["meta"]["window_start_ms"]
    second = _second_annotator(ls_env)
    # b-0, 00:00-12:00: the kettle ran 07:00-07:03. A second annotator sees it a minute longer (agreement
    # < 1); the admin annotates later, so by the conflict rule (latest wins) the admin's annotation is merged.
    kettle = (w0 + 7 * HOUR_MS, w0 + 7 * HOUR_MS + 175_000)  # last on reading 07:02:55
    client.create_annotation(t0["id"], [region("kettle", kettle[0], kettle[1] + 60_000)], completed_by=second)
    client.create_annotation(
        t0["id"],
        [
            region("kettle", *kettle),
            region("hovercraft", w0, w0 + 60_000),  # unknown label
            region("fridge", w0 + 120_000, w0 + 60_000),  # reversed
            region("fridge", w0 - HOUR_MS, w0 + 60_000),  # before the window
        ],
    )
    # The next task: fridge runs (on 20 min every hour); then a task that will be deleted.
    w1 = t1["meta"]["window_start_ms"]
    client.create_annotation(
        t1["id"], [region("fridge", w1 + h * HOUR_MS, w1 + h * HOUR_MS + 1_195_000) for h in range(12)]
    )
    client.create_annotation(
        t2["id"], [region("fridge", t2["meta"]["window_start_ms"], t2["meta"]["window_start_ms"] + 600_000)]
    )
    client.create_annotation(
        t3["id"],
        [region("kettle", t3["meta"]["window_start_ms"], t3["meta"]["window_start_ms"] + 60_000)],
        was_cancelled=True,
    )

    report = pull(params, data, report_path=tmp_path / "pull.json")
    labels = Dataset(data).labels()
    annot = labels[labels["source"] == "annotator"]
    assert set(annot["task_id"]) == {t0["id"], t1["id"], t2["id"]}  # the cancelled annotation is not merged
    kettle_rows = annot[annot["appliance"] == "kettle"]
    assert len(kettle_rows) == 1 and kettle_rows["annotator_id"].iloc[0] == ls_env.username
    assert to_epoch_ms(kettle_rows["start"]).tolist() == [kettle[0]]
    assert to_epoch_ms(kettle_rows["end"]).tolist() == [kettle[1] + 5000]  # exclusive end
    assert (annot["appliance"] == "fridge").sum() == 13
    assert report["skipped"]["counts"] == {"out_of_range": 1, "reversed_interval": 1, "unknown_label": 1}
    assert report["annotations"] == {"seen": 5, "merged": 3, "superseded": 1, "cancelled": 1}
    kettle_agreement = report["agreement"]["annotators"]["kettle"]
    assert kettle_agreement["tasks"] == 1 and 0.6 < kettle_agreement["iou"] < 0.9
    version = model_version(str(trained_bundle), ModelBundle.load(trained_bundle))
    model = report["agreement"]["model"]
    assert list(model) == [version] and model[version]["all"]["slots"] > 0
    assert report["label_checks"] == {"label_order": True, "label_span": True, "label_known": True}

    # The same server state again: labels.parquet untouched.
    before = (data / "labels.parquet").read_bytes()
    assert pull(params, data)["labels"]["changed"] is False
    assert (data / "labels.parquet").read_bytes() == before

    # A deleted task's labels leave the dataset, counted and listed.
    client.delete_task(t2["id"])
    after = pull(params, data)
    assert after["skipped"]["counts"]["deleted_task"] == 1
    assert t2["id"] not in set(Dataset(data).labels()["task_id"].dropna())

    # The loop: prepare's grid takes the annotator labels as on/off targets (no sub-meter here).
    readings = Dataset(data).readings(["b-0"])
    g = grid_device(
        readings, None, Dataset(data).labels(["b-0"]), ["fridge", "kettle"], interval_s=5, max_fill_s=30
    )
    assert g.status_sources == {"fridge": "annotator", "kettle": "annotator"}
    slot_ms = g.start_ms + np.arange(len(g), dtype=np.int64) * 5000
    on = slot_ms[g.status[:, 1]]
    assert (on.min(), on.max()) == (kettle[0], kettle[1])


def test_pull_fetches_annotations_through_the_export_not_one_request_per_task(
    ls_env: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull of N annotated tasks makes a fixed number of requests (the export), not N more."""
    from airwatt.labeling import client as client_module

    data = write_beta_dataset(tmp_path / "beta", devices=5, hours=24)  # 10 windows
    params = params_for(ls_env, "export test", budget=10)
    push(params, data, model_uris=[])
    client = client_of(ls_env)
    project = client.find_project("export test")
    assert project is not None
    tasks = client.task_summaries(project.id)
    assert len(tasks) == 10
    for t in tasks:
        w = t["meta"]["window_start_ms"]
        client.create_annotation(t["id"], [region("kettle", w + 7 * HOUR_MS, w + 7 * HOUR_MS + 175_000)])
    monkeypatch.setattr(client_module, "EXPORT_BATCH", 4, raising=False)  # 10 tasks: 3 export requests

    counted = client_of(ls_env)
    requests: list[str] = []
    http = counted._sdk._client_wrapper.httpx_client.httpx_client
    http.event_hooks["request"].append(lambda r: requests.append(f"{r.method} {r.url.path}"))
    report = pull(params, data, client=counted)
    assert report["annotations"]["merged"] == 10
    labels = Dataset(data).labels()
    assert set(labels[labels["source"] == "annotator"]["task_id"]) == {t["id"] for t in tasks}
    exports = [r for r in requests if r.endswith("/export")]
    assert len(exports) == 3
    assert len(requests) - len(exports) <= 6, requests  # project lookup, task list pages, users: not per task
    assert not [r for r in requests if "/annotations" in r]


def test_pull_skips_a_task_whose_readings_changed_since_the_push(ls_env: LocalServer, tmp_path: Path) -> None:
    """A re-sync (another seed, source or export) replaced a device's readings under a task: its annotation
    describes readings the dataset no longer holds, so pull lists it and merges nothing of it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_beta_dataset(tmp_path / "beta", devices=2, hours=12)  # one 12 h window per device
    params = params_for(ls_env, "stale test", budget=2)
    push(params, data, model_uris=[])
    client = client_of(ls_env)
    project = client.find_project("stale test")
    assert project is not None
    tasks = {t["meta"]["device_id"]: t for t in client.task_summaries(project.id)}
    for t in tasks.values():
        w = t["meta"]["window_start_ms"]
        client.create_annotation(t["id"], [region("kettle", w + 7 * HOUR_MS, w + 7 * HOUR_MS + 175_000)])
    table = pq.read_table(data / "readings.parquet").to_pandas()
    table.loc[table["device_id"] == "b-1", "power_w"] += 50.0  # b-1's readings are not those pushed
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), data / "readings.parquet")

    report = pull(params, data)
    merged = Dataset(data).labels()
    assert set(merged[merged["source"] == "annotator"]["device_id"]) == {"b-0"}
    skipped = [i for i in report["skipped"]["items"] if i["reason"] == "readings_changed"]
    assert [(i["task_id"], i["device_id"]) for i in skipped] == [(tasks["b-1"]["id"], "b-1")]


def test_prepare_writes_annotator_targets_after_a_pull(ls_env: LocalServer, tmp_path: Path) -> None:
    """prepare (the DVC stage's function) on a pulled dataset: status targets come from the annotator."""
    from airwatt.prepare import prepare

    data = write_beta_dataset(tmp_path / "beta", devices=3, hours=12)
    params = params_for(ls_env, "prepare test", budget=3)
    push(params, data, model_uris=[])
    client = client_of(ls_env)
    project = client.find_project("prepare test")
    assert project is not None
    for t in client.task_summaries(project.id):
        w = t["meta"]["window_start_ms"]
        client.create_annotation(t["id"], [region("kettle", w + 7 * HOUR_MS, w + 7 * HOUR_MS + 175_000)])
    pull(params, data)
    out = tmp_path / "prepared"
    prepare(data, params, out)
    devices = [d for p in sorted(out.rglob("index.json")) for d in json.loads(p.read_text())["devices"]]
    assert len(devices) == 3
    # every appliance of the labeling config was reviewed in each task window: the fridge, never labelled on,
    # is an "off" target there, not an unknown
    assert all(d["status_sources"] == {"fridge": "annotator", "kettle": "annotator"} for d in devices)
    assert set(Dataset(data).labels()["source"]) == {"annotator", "reviewed"}


# ------------------------------------------------------------------------------------ the server's install
CONSTRAINTS = REPO / "labeling" / "constraints-labelstudio.txt"


def _pins(lines: list[str]) -> dict[str, str]:
    pairs = [ln.split("#")[0].strip().partition("==") for ln in lines]
    return {n.lower().replace("_", "-"): v for n, _, v in pairs if n}


def test_the_server_install_pins_every_dependency() -> None:
    """install-server.sh installs the label-studio its constraints file pins, under those constraints; the
    file pins each package exactly (a `pip freeze`); the installed server matches it package for package."""
    script = (REPO / INSTALL_SCRIPT).read_text()
    version = re.search(r'^LABEL_STUDIO_VERSION="([^"]+)"', script, re.M)
    assert version is not None
    lines = [ln for ln in CONSTRAINTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^\s=]+", ln) for ln in lines), "name==version lines only"
    pins = _pins(lines)
    assert pins["label-studio"] == version.group(1) and "django" in pins and "label-studio-sdk" in pins
    assert '-c "$constraints"' in script
    if server_executable() is None:
        pytest.skip(f"Label Studio server not installed in {server_venv()}: run {INSTALL_SCRIPT}")
    pip = [str(server_venv() / "bin" / "python"), "-m", "pip", "freeze"]
    freeze = subprocess.run(pip, capture_output=True, text=True, check=True).stdout.splitlines()
    assert _pins(freeze) == pins
