"""Few-label adaptation: fine-tune a trained model on one site's labelled days (``train.init_from``).

``airwatt train --init-from URI`` (a bundle directory or an MLflow model URI such as
``models:/airwatt-disaggregator@champion``) starts from that model's weights instead of a fresh one. The
model keeps everything its weights depend on: architecture and constructor arguments, window, target,
appliances (the prepared data must hold exactly these, in this order: prepare the site with
``prepare.appliances`` set to the model's), and its normalisation statistics (the site's own would shift
every input). ``train.finetune`` says what is updated:

- ``all`` (default): every weight, at ``train.lr``. With a few labelled days this adapts the trunk to the
  site's base load and appliance shapes; the validation split of the site's days picks the checkpoint, so
  an over-fitted epoch is not kept.
- ``heads``: only the per-appliance output heads (parameters of modules named ``*head``): a small per-site
  part (a few thousand weights) that cannot forget the shared representation, for a single labelled day.

The on/off rules (a real-time model's decision rule, every model's offline thresholds) are tuned again on
the site's validation days, as after any training. The bundle's provenance records ``init_from`` and the
initial model's provenance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from airwatt.errors import ConfigError, DataError
from airwatt.models import ModelBundle
from airwatt.models.bundle import ModelSpec

log = logging.getLogger(__name__)


def load_initial(uri: str) -> ModelBundle:
    """The model to start from (airwatt.model_uri: a bundle directory or an MLflow model URI)."""
    from airwatt.model_uri import load_bundle

    return load_bundle(uri)


def initial_spec(bundle: ModelBundle, uri: str, data_dir: Path) -> ModelSpec:
    """The spec of the fine-tuned model: the initial one's, without its on/off rules (tuned again), after
    checking the prepared data holds the model's appliances in its order and at its interval."""
    index_path = Path(data_dir) / "train" / "index.json"
    if not index_path.is_file():
        raise DataError("not a prepared directory (run `airwatt data prepare` first)", file=index_path)
    index = json.loads(index_path.read_text())
    spec = bundle.spec
    if index["appliances"] != spec.appliances:
        raise ConfigError(
            f"fine-tuning {uri}: the prepared data's appliances {index['appliances']} are not the model's "
            f"{spec.appliances}; prepare the site with prepare.appliances = {spec.appliances}"
        )
    if float(index["interval_s"]) != spec.interval_s:
        raise ConfigError(
            f"fine-tuning {uri}: the prepared data is at {index['interval_s']} s, the model at "
            f"{spec.interval_s} s"
        )
    return spec.model_copy(update={"decision": None, "offline_on_prob": None, "provenance": {}})


def initial_model(spec: ModelSpec, bundle: ModelBundle, mode: str) -> nn.Module:
    """A fresh model of ``spec`` holding the initial weights, with only what ``mode`` tunes trainable."""
    from airwatt.models import build_model

    model = build_model(spec)
    model.load_state_dict(bundle.model.state_dict())
    if mode == "heads":
        heads = [n for n, _ in model.named_modules() if n and n.split(".")[-1].endswith("head")]
        if not heads:
            raise ConfigError(f"train.finetune heads: model {spec.arch} has no output heads (modules *head)")
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(f"{h}.") for h in heads))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("fine-tuning %s: %d of %d weights trainable (%s)", spec.arch, trainable, total, mode)
    return model


def provenance_of(uri: str, bundle: ModelBundle, mode: str) -> dict[str, Any]:
    return {"init_from": uri, "finetune": mode, "init_provenance": dict(bundle.spec.provenance)}
