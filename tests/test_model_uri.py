"""airwatt.model_uri: the one parser of model URIs (every form, and the malformed ones refused naming the
text), and what resolving a bundle directory or a missing registry entry gives, without a trained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from airwatt.model_uri import (
    ModelRef,
    RegistryVersion,
    download_bundle,
    match_model_uri,
    parse_model_uri,
    registry_info,
    resolve,
)
from airwatt.models import ModelLoadError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/airwatt-disaggregator@champion", {"name": "airwatt-disaggregator", "alias": "champion"}),
        ("models:/airwatt-disaggregator@champion/", {"name": "airwatt-disaggregator", "alias": "champion"}),
        ("models:/m.v2_x@candidate-1", {"name": "m.v2_x", "alias": "candidate-1"}),
        ("models:/airwatt-disaggregator/12", {"name": "airwatt-disaggregator", "version": "12"}),
        ("models:/airwatt-disaggregator/3/", {"name": "airwatt-disaggregator", "version": "3"}),
    ],
)
def test_registered_model_uris(uri: str, expected: dict[str, str]) -> None:
    ref = parse_model_uri(uri)
    assert ref == ModelRef(
        uri, "registered", name=expected["name"], alias=expected.get("alias"), version=expected.get("version")
    )
    assert ref.in_store


@pytest.mark.parametrize(
    ("uri", "run_id", "path"),
    [
        ("runs:/0123456789abcdef/model", "0123456789abcdef", "model"),
        ("runs:/0123456789abcdef/model/", "0123456789abcdef", "model"),
        ("runs:/abc/nested/model", "abc", "nested/model"),
    ],
)
def test_run_model_uris(uri: str, run_id: str, path: str) -> None:
    assert parse_model_uri(uri) == ModelRef(uri, "run", run_id=run_id, artifact_path=path)


def test_a_bundle_directory_is_used_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    ref = parse_model_uri(tmp_path / "bundle")
    assert ref == ModelRef(str(tmp_path / "bundle"), "bundle", path=tmp_path / "bundle")
    assert not ref.in_store
    resolved = resolve(str(tmp_path / "bundle"), tmp_path / "never-written")
    assert resolved.bundle_dir == (tmp_path / "bundle").resolve() and resolved.registry is None
    assert not (tmp_path / "never-written").exists()
    assert registry_info(tmp_path / "bundle") is None


@pytest.mark.parametrize(
    "uri",
    [
        "models:/",
        "models:/airwatt-disaggregator",  # neither alias nor version
        "models:/airwatt-disaggregator@",
        "models:/@champion",
        "models:/airwatt-disaggregator/latest",  # MLflow's own forms the workbench does not resolve
        "models:/airwatt-disaggregator/Production",
        "models:/airwatt-disaggregator/1/extra",
        "models:/airwatt-disaggregator@champion/extra",
        "models:/a b@champion",
        "runs:/",
        "runs:/0123456789abcdef",  # no model path inside the run
        "runs://model",
        "s3://bucket/models/champion",
        "file:///tmp/bundle",
    ],
)
def test_malformed_uris_are_refused_naming_them(uri: str) -> None:
    assert match_model_uri(uri) is None
    with pytest.raises(ModelLoadError) as e:
        parse_model_uri(uri)
    message = str(e.value)
    assert message.startswith(f"{uri}: ") and "not an MLflow model URI" in message
    assert "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model" in message
    assert registry_info(uri) is None


def test_a_missing_directory_says_there_is_no_bundle_there(tmp_path: Path) -> None:
    for text in ("champion", "", str(tmp_path / "no-such-bundle")):
        with pytest.raises(ModelLoadError, match="no model bundle directory there, and not an MLflow") as e:
            parse_model_uri(text)
        assert str(e.value).startswith(f"{text}: ")


def test_download_takes_only_models_in_the_store(tmp_path: Path) -> None:
    """A bundle directory or a malformed URI is refused before the store is asked."""
    (tmp_path / "bundle").mkdir()
    for text in (str(tmp_path / "bundle"), "models:/x", "champion"):
        with pytest.raises(ModelLoadError, match="not an MLflow model URI") as e:
            download_bundle(text, tmp_path / "dst")
        assert str(e.value).startswith(text)
    assert not (tmp_path / "dst").exists()


def test_a_registry_version_pins_to_its_number() -> None:
    rv = RegistryVersion("airwatt-disaggregator", "7", "champion", "abc")
    assert rv.uri == "models:/airwatt-disaggregator/7"
    assert parse_model_uri(rv.uri).version == "7"
    assert rv.as_json() == {
        "name": "airwatt-disaggregator",
        "alias": "champion",
        "version": "7",
        "run_id": "abc",
    }


@pytest.mark.slow  # creates an MLflow sqlite store
def test_resolving_what_the_registry_lacks_names_the_uri_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for uri, why in (
        ("models:/airwatt-disaggregator@champion", "no version of registered model"),
        ("models:/airwatt-disaggregator/3", "not found at tracking URI"),
    ):
        with pytest.raises(ModelLoadError) as e:
            resolve(uri, tmp_path / "bundle")
        assert str(e.value).startswith(f"{uri}: ") and why in str(e.value) and store in str(e.value)
    assert registry_info("models:/airwatt-disaggregator@champion") is None
    assert not (tmp_path / "bundle").exists()


def test_tracking_keeps_the_names_read_from_it() -> None:
    """airwatt.protocol reads repo_root and git_state from airwatt.tracking, and the pyfunc_model.py stored
    with every model logged before airwatt.models.frame existed imports predict_frame from it."""
    from airwatt import lineage, tracking
    from airwatt.models import frame

    assert tracking.repo_root is lineage.repo_root and tracking.git_state is lineage.git_state
    assert tracking.predict_frame is frame.predict_frame
