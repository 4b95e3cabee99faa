"""Graph transformations over a Keras model: each returns a new model and never changes its input.

`flatten_model` inlines nested sub-models; `fold_batchnorm` merges every BatchNormalization into
the conv/dense layer before it (both check the new model against the old on a batch); the
baseline step runs both, so every later stage (and the analyzer's ranking) sees the layers the
hardware computes. `reduce_model` (reduce.py) removes the channels a prune made dead.

    flat, flat_report = flatten_model(model)
    folded, fold_report = fold_batchnorm(flat, x_batch)
"""

from .flatten import flatten_model
from .fold import fold_batchnorm


def prepare_model(model, x=None):
    """Flattened, then BN-folded: the model as the flow prunes it; returns (model, report)."""
    flat, flat_report = flatten_model(model, x)
    folded, fold_report = fold_batchnorm(flat, x)
    return folded, {"flatten": flat_report, "batchnorm_fold": fold_report}


__all__ = ["flatten_model", "fold_batchnorm", "prepare_model"]
