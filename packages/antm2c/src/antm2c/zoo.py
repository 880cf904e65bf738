"""Model registry: name -> class, and a constructor from a fitted encoder."""

from __future__ import annotations

from typing import Any

from .features import FeatureEncoder
from .models import DIN, DNN, LR, AutoInt, CTRModel, DCNv2, DeepFM, FieldLayout
from .scenario import PLE, STAR, MMoE, SharedBottom

__all__ = ["MODELS", "MULTI_SCENARIO", "build_model"]

MODELS: dict[str, type[CTRModel]] = {
    m.name: m for m in (LR, DNN, DeepFM, DCNv2, AutoInt, DIN, SharedBottom, MMoE, PLE, STAR)
}
MULTI_SCENARIO = ("sharedbottom", "mmoe", "ple", "star")


def build_model(name: str, encoder: FeatureEncoder, **kwargs: Any) -> CTRModel:
    """Instantiate model ``name`` (case-insensitive) for the encoder's fields."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[key](FieldLayout.from_encoder(encoder), **kwargs)
