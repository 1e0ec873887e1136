"""Run keys: what identifies a run, so that a run that finished is never run again.

A key hashes the suite name and the values of the resolved config that differ from the config's
defaults, with `KEY_SCHEME`. A field added later with a default that keeps the old behaviour
leaves every key as it was (finished runs stay finished); a value that changes, or a default
whose meaning changes (bump `KEY_SCHEME` then), makes new keys. See the README, "Run keys".
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from shapeprop.config import ExperimentConfig

# Bump when the meaning of a default changes (a run that relied on it would now train differently)
# or when a field is renamed: every key changes once, and every run is "to run" again.
# 3 (2026-12-07): Mask^X R-CNN (`model.mask_transfer`) became the authors' transfer+MLP variant.
KEY_SCHEME = 3


def non_default_values(model: BaseModel) -> dict[str, Any]:
    """The fields of `model` whose value differs from the field's default, as JSON values; nested
    sections likewise. A section that is None by default but set is kept even when empty, so that
    "no ShapeProp head" and "the default ShapeProp head" stay apart."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        default = info.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            nested = non_default_values(value)
            if nested or not isinstance(default, type(value)):
                out[name] = nested
        elif value != default:
            out[name] = model.model_dump(mode="json", include={name})[name]
    return out


def run_key(suite_name: str, config: ExperimentConfig) -> str:
    """Stable hash of the suite name and the config's non-default values (16 hex digits)."""
    payload = {"scheme": KEY_SCHEME, "suite": suite_name, "config": non_default_values(config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
