"""Models by name: a plain dict, read-only in practice, built at import with no side effects elsewhere.

Every model class takes ``(n_appliances, window_length, *, target=None, **arch_kwargs)``, has the class
attributes ``default_target``, ``default_window_length`` and ``trainable``, the instance attributes
``n_appliances``, ``window_length`` and ``target``, and maps a (B, W) normalised aggregate to a
``ModelOutput`` at ``target_index(W, target)``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from airwatt.errors import ConfigError
from airwatt.models.base import TargetPosition
from airwatt.models.baselines import AlwaysOff, MeanPower
from airwatt.models.causal import CausalNet
from airwatt.models.multitask import MultiTaskNet
from airwatt.models.seq2point import Seq2Point

MODELS: dict[str, type[nn.Module]] = {
    "seq2point": Seq2Point,
    "multitask": MultiTaskNet,
    "causal": CausalNet,
    "mean": MeanPower,
    "always_off": AlwaysOff,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ConfigError listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None


def default_window_length(name: str) -> int:
    """The window a model is designed for (seq2point and multitask 599, causal 512, baselines 1)."""
    cls: Any = model_class(name)
    return int(cls.default_window_length)


def default_target(name: str) -> TargetPosition:
    """The reading a model predicts unless told otherwise: "midpoint" or "last" (causal)."""
    cls: Any = model_class(name)
    target: TargetPosition = cls.default_target
    return target


def is_trainable(name: str) -> bool:
    """False for the no-skill baselines: they have nothing to fit."""
    cls: Any = model_class(name)
    return bool(cls.trainable)


def create_model(name: str, *, n_appliances: int, window_length: int, **arch_kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; unknown names and unknown arguments raise ConfigError."""
    cls = model_class(name)
    try:
        inspect.signature(cls).bind(n_appliances, window_length, **arch_kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(cls).parameters if p not in ("n_appliances", "window_length")]
        raise ConfigError(f"model {name!r}: {e}; its arguments: {', '.join(params)}") from None
    return cls(n_appliances, window_length, **arch_kwargs)
