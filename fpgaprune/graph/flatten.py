"""Flattening: a model built from nested Sequential / functional sub-models as one graph.

Masks, quantization and hls4ml all work on one flat graph of layers, so a user's nested model
(a feature block reused as a sub-model, a base model inside a transfer model) is rebuilt with
the sub-models' layers inline, weights copied, and checked to compute the same outputs. A
layer of a sub-model keeps its name unless that name is taken, then it becomes
`<submodel>_<layer>` (the report lists every rename, so a mask spec can name it).

    flat, report = flatten_model(model)
    report   # {"inlined": ["block"], "renamed": {}, "max_abs_diff": 0.0, "images": 16}
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import WorkFailed
from .rebuild import has_nested, max_abs_difference, probe_batch, rebuild


def flatten_model(model: tf.keras.Model, x: np.ndarray | None = None) -> tuple[tf.keras.Model, dict]:
    """`model` with every nested model inlined, and what was done; a flat model is returned as is.

    The flat model is checked against `model` on `x` (or seeded random images of its input shape).
    """
    if not has_nested(model):
        return model, {"inlined": [], "renamed": {}}
    rebuilt = rebuild(model)
    batch = probe_batch(model, x)
    diff, scale = max_abs_difference(model, rebuilt.model, batch)
    if diff > 1e-5 * (1.0 + scale):  # the same layers in the same order: equal up to float reordering
        raise WorkFailed(f"model {model.name}: the flattened model differs from the nested one (max |diff| {diff:g})")
    report = {"inlined": rebuilt.inlined, "renamed": rebuilt.renamed, "max_abs_diff": diff, "images": len(batch)}
    return rebuilt.model, report
