"""Disaggregation models (plain torch ``nn.Module``s, by name), their self-describing bundle, and the one
prediction code path. Nothing here imports Lightning or MLflow: serving needs only torch.

    model = create_model("multitask", n_appliances=4, window_length=599)
    bundle = ModelBundle.load("models/champion")
    prediction = bundle.predict_series(aggregate_w)
"""

from airwatt.models.base import ModelOutput, TargetPosition, target_index
from airwatt.models.bundle import (
    GapPolicy,
    ModelLoadError,
    ModelSpec,
    NormStats,
    OnOffSpec,
    read_spec,
    save_bundle,
)
from airwatt.models.decision import ApplianceDecision, DecisionSpec
from airwatt.models.predict import (
    ON_PROBABILITY_THRESHOLD,
    ModelBundle,
    OutputDecoder,
    SeriesOutputs,
    SeriesPrediction,
    build_model,
    spec_from_prepared,
)
from airwatt.models.registry import (
    MODEL_NAMES,
    create_model,
    default_target,
    default_window_length,
    is_trainable,
)

__all__ = [
    "MODEL_NAMES",
    "ON_PROBABILITY_THRESHOLD",
    "ApplianceDecision",
    "DecisionSpec",
    "GapPolicy",
    "ModelBundle",
    "ModelLoadError",
    "ModelOutput",
    "ModelSpec",
    "NormStats",
    "OnOffSpec",
    "OutputDecoder",
    "SeriesOutputs",
    "SeriesPrediction",
    "TargetPosition",
    "build_model",
    "create_model",
    "default_target",
    "default_window_length",
    "is_trainable",
    "read_spec",
    "save_bundle",
    "spec_from_prepared",
    "target_index",
]
