"""The MLflow pyfunc of an AirWatt model, logged as a "model from code" (no pickle of the Python object).

MLflow stores this file with the model and runs it on load; ``mlflow.models.set_model`` names the model.
The weights travel as the pyfunc artifact ``bundle`` (model.json + weights.safetensors, loaded with
``ModelBundle.load``), and prediction is ``ModelBundle.predict_series``: the same code as evaluation and
serving. The environment that loads it needs the ``airwatt`` package installed.

Input: one device's readings, a DataFrame with ``timestamp`` (UTC; MLflow's schema wants naive datetimes,
which are read as UTC) and ``power_w``. They are put on the model's grid the way prepare does it (the model's
gap policy). Output: one row per grid slot: ``timestamp`` (naive UTC), ``predicted`` (the model answers that
reading: for a real-time model, the service's rule) and per appliance ``<name>_power_w`` and ``<name>_on``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from airwatt.models import ModelBundle
from airwatt.models.frame import predict_frame


class AirwattDisaggregator(PythonModel):
    """pyfunc wrapper: loads the bundle artifact, predicts one device's series."""

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return predict_frame(self.bundle, model_input)


mlflow.models.set_model(AirwattDisaggregator())
