"""The pruning methods the compression benchmark compares, each behind one signature.

    model, info = METHODS[name](baseline, fraction, data, cfg, epochs)

`baseline` is a trained Keras model (never changed), `fraction` the share of each pruned
conv layer's weights to remove (kernels, filters or single weights: the same share of that
layer's multiplications), `data` has no test split (methods never see the test set), `cfg`
the reference config with the seed of this repeat and the layers to prune in
`cfg.prune.layers` (the harness sets them, default LAYERS), `epochs` the extra training budget, the
same for every method. Every method trains with the prune section's optimizer and learning
rate, at the train section's batch size. `info` holds what a method wants recorded (its
schedule, epochs actually run).

Methods use the libraries' own entry points: fpgaprune's `prune_oneshot` / `prune_gradual`,
tfmot's `prune_low_magnitude`, hls4ml's `dsp_aware_pruning.optimize_model`.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import tempfile
from dataclasses import replace

import numpy as np
import tensorflow as tf

from fpgaprune.analysis.kernels import kernel_norms, propose
from fpgaprune.training.fit import compile_model, fit, optimizer_from
from fpgaprune.training.gradual import prune_gradual
from fpgaprune.training.retrain import masked_retrain, prune_oneshot

# The default pruned layers: both conv layers of the reference CNN. conv2 alone holds 85% of
# the conv multiplications, so 90% and 95% of them cannot be removed without conv1.
LAYERS = ["conv1", "conv2"]
# Rounds of gradual schedules (fpgaprune gradual, tfmot PolynomialDecay): Zhu & Gupta's cubic
# ramp, reaching the target after 3/4 of the budget; the last quarter retrains at the target.
GRADUAL_ROUNDS = 4


def prune_config(cfg, fraction: float, epochs: int, **changes):
    """`cfg` with a prune section that prunes its layers by the fraction of each layer (all
    layers stepped together: the shipped per-layer budget would let each stop on its own)."""
    p = replace(cfg.prune, layers=layers_of(cfg), norm="l1", normalize=False, select="fraction",
                fraction=fraction, epochs=epochs, budget="shared", **changes)
    return replace(cfg, prune=p)


def layers_of(cfg) -> list[str]:
    return list(cfg.prune.layers or LAYERS)


def unpruned(baseline, fraction, data, cfg, epochs):
    """The reference: the baseline trained for the same extra epochs, nothing pruned."""
    model, result = masked_retrain(baseline, {}, data, cfg, epochs=epochs, verbose=0)
    return model, {"epochs": result.epochs}


def kernel_oneshot(baseline, fraction, data, cfg, epochs):
    """fpgaprune: the smallest-L1 2-D kernels of each layer masked at once, masked retraining."""
    masks = propose(kernel_norms(baseline, "l1"), "fraction", fraction=fraction, layers=layers_of(cfg))
    model, summary = prune_oneshot(baseline, masks, data, prune_config(cfg, fraction, epochs, mode="oneshot"), verbose=0)
    return model, {"epochs": epochs, "kernels_pruned": summary["kernels_pruned"]}


def gradual_fractions(fraction: float, rounds: int) -> list[float]:
    """Cubic ramp to `fraction` in `rounds` steps (Zhu & Gupta 2017), ending exactly on it."""
    ramp = [fraction * (1 - (1 - k / rounds) ** 3) for k in range(1, rounds + 1)]
    return [round(f, 6) for f in ramp[:-1]] + [fraction]


def kernel_gradual(baseline, fraction, data, cfg, epochs, **options):
    """fpgaprune gradual mode with its accuracy budget off, so every point reaches its target.

    `options`: prune-section sparsity options (group_lasso, l1, channel_weight, filter_weight) for the variants.
    """
    rounds = min(GRADUAL_ROUNDS, epochs)
    if epochs % rounds:
        raise ValueError(f"kernel-gradual: {epochs} epochs do not split into {rounds} equal rounds")
    schedule = gradual_fractions(fraction, rounds)
    pcfg = prune_config(cfg, fraction, epochs // rounds, mode="gradual", schedule=schedule,
                        max_accuracy_drop=1.0, patience=rounds, **options)
    model, summary = prune_gradual(baseline, data, pcfg, verbose=0, progress=False)
    reached = summary["history"][-1]["fraction"]
    if not math.isclose(reached, fraction):
        raise RuntimeError(f"kernel-gradual stopped at fraction {reached}, not {fraction}")
    return model, {"epochs": epochs, "schedule": schedule, "epochs_per_round": epochs // rounds, **options}


# The sparsity options of `prune`, each measured as a variant of kernel-gradual (issue 16), at
# the strengths the full-throughput runs of the reference flow used.
GROUP_LASSO = 1e-4
L1 = 1e-5
CHANNEL_WEIGHT = 1.0
FILTER_WEIGHT = 16.0


def kernel_gradual_group_lasso(baseline, fraction, data, cfg, epochs):
    """kernel-gradual with a group-lasso term (L2 per 2-D kernel) while the pruned layers retrain."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, group_lasso=GROUP_LASSO)


def kernel_gradual_l1(baseline, fraction, data, cfg, epochs):
    """kernel-gradual with an L1 term on the weights while the pruned layers retrain."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, l1=L1)


def kernel_gradual_channel(baseline, fraction, data, cfg, epochs):
    """kernel-gradual ranking kernels by norm x (channel strength)^1: weak channels empty first."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, channel_weight=CHANNEL_WEIGHT)


def kernel_gradual_group_lasso_channel(baseline, fraction, data, cfg, epochs):
    """Group lasso and channel-aware ranking together."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, group_lasso=GROUP_LASSO,
                          channel_weight=CHANNEL_WEIGHT)


def kernel_gradual_filter(baseline, fraction, data, cfg, epochs):
    """kernel-gradual ranking kernels by norm x (filter's share)^16: the weakest filters empty whole."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, filter_weight=FILTER_WEIGHT)


def kernel_gradual_group_lasso_filter(baseline, fraction, data, cfg, epochs):
    """Group lasso and filter-aware ranking together."""
    return kernel_gradual(baseline, fraction, data, cfg, epochs, group_lasso=GROUP_LASSO,
                          filter_weight=FILTER_WEIGHT)


def filter_l1(baseline, fraction, data, cfg, epochs):
    """Whole output channels with the smallest L1 norm (Li et al. 2017), as fpgaprune masks.

    A filter's L1 norm is the sum of its kernels' L1 norms; pruning it masks all its cin
    kernels, so `apply_masks` / masked retraining do the rest. Biases stay (prune_bias off, as
    for the kernel methods).
    """
    layers = layers_of(cfg)
    norms = kernel_norms(baseline, "l1")
    filters = {name: norms[name].sum(axis=0, keepdims=True) for name in layers}
    chosen = propose(filters, "fraction", fraction=fraction, layers=layers)
    masks = {name: np.broadcast_to(chosen[name], norms[name].shape).copy() for name in layers}
    model, _ = prune_oneshot(baseline, masks, data, prune_config(cfg, fraction, epochs, mode="oneshot"), verbose=0)
    return model, {"epochs": epochs, "filters_pruned": {n: int(chosen[n].sum()) for n in layers}}


def _tfmot(baseline, fraction, data, cfg, epochs, schedule_kind: str):
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    steps_per_epoch = -(-len(data.x_train) // cfg.train.batch_size)
    total = steps_per_epoch * epochs
    frequency = max(1, min(100, steps_per_epoch // 2))
    if schedule_kind == "constant":
        schedule = sparsity.ConstantSparsity(fraction, begin_step=0, frequency=frequency)
        info = {"frequency": frequency}
    else:
        # The last mask update must fall on end_step (updates happen every `frequency` steps).
        end = max(frequency, frequency * int(0.75 * total // frequency))
        schedule = sparsity.PolynomialDecay(0.0, fraction, begin_step=0, end_step=end, power=3, frequency=frequency)
        info = {"frequency": frequency, "end_step": end, "total_steps": total}

    # tfmot's documented way: wrap the layers of a model in clone_model. The wrappers reuse
    # the layers they wrap (weights included), so wrap a private copy, never the baseline.
    copy = tf.keras.models.clone_model(baseline)
    copy.set_weights(baseline.get_weights())

    layers = layers_of(cfg)

    def wrap(layer):
        return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in layers else layer

    wrapped = tf.keras.models.clone_model(copy, clone_function=wrap)
    compile_model(wrapped, optimizer_from(cfg.train, cfg.prune.optimizer, cfg.prune.learning_rate), masked=False)
    result = fit(wrapped, data, epochs, cfg.train.batch_size, seed=cfg.seed,
                 callbacks=[sparsity.UpdatePruningStep()], verbose=0)
    return sparsity.strip_pruning(wrapped), {"epochs": result.epochs, **info}


def tfmot_constant(baseline, fraction, data, cfg, epochs):
    """tfmot prune_low_magnitude, ConstantSparsity: the target from the first step."""
    return _tfmot(baseline, fraction, data, cfg, epochs, "constant")


def tfmot_polynomial(baseline, fraction, data, cfg, epochs):
    """tfmot prune_low_magnitude, PolynomialDecay 0 -> target over 3/4 of the budget (cubic)."""
    return _tfmot(baseline, fraction, data, cfg, epochs, "polynomial")


def _conv_dsp_estimator(layers: list[str]):
    """hls4ml's VivadoDSPEstimator, restricted to the pruned conv layers."""
    from hls4ml.optimization.dsp_aware_pruning.attributes import OptimizationAttributes
    from hls4ml.optimization.dsp_aware_pruning.objectives.vivado_objectives import (
        VivadoDSPEstimator,
    )

    class ConvDSPEstimator(VivadoDSPEstimator):
        @classmethod
        def is_layer_optimizable(cls, layer_attributes):
            if layer_attributes.name not in layers:  # attributes, not None: optimize_model reads them
                return False, OptimizationAttributes(pruning=False)
            return super().is_layer_optimizable(layer_attributes)

    return ConvDSPEstimator


@contextlib.contextmanager
def _serializable_hls4ml_regularizers():
    """Work around an hls4ml 1.3 / Keras 2.14 incompatibility, for the duration of a call.

    hls4ml's Conv2DRegularizer / DenseRegularizer return their `structure_type` Enum from
    get_config; Keras 2.14's serializer refuses it (TypeError in `model.to_json()`, which
    dsp_aware_pruning calls). Serialize it as its string value, which their __init__ accepts.
    """
    from hls4ml.optimization.dsp_aware_pruning.keras import regularizers

    classes = (regularizers.Conv2DRegularizer, regularizers.DenseRegularizer)
    originals = {cls: cls.get_config for cls in classes}

    def patched(original):
        def get_config(self):
            config = original(self)
            config["structure_type"] = getattr(config["structure_type"], "value", config["structure_type"])
            return config
        return get_config

    try:
        for cls in classes:
            cls.get_config = patched(originals[cls])
        yield
    finally:
        for cls in classes:
            cls.get_config = originals[cls]


def hls4ml_dsp_aware(baseline, fraction, data, cfg, epochs):
    """hls4ml's DSP-aware pruning (`dsp_aware_pruning.optimize_model`) at a fixed target.

    Latency strategy, reuse factor 1, hls4ml's default ap_fixed<16,6> (its DSP objective sees
    only weights of 9 bits or more). Fixed target: ConstantScheduler(fraction, fraction) and
    rtol 0, so the first (and only) pruning round is accepted; `local` gives every conv layer
    the same share, as for the other methods. `epochs + 1` because hls4ml ends a round with one
    unmasked "rewinding" epoch that it then discards (it reloads the masked round's weights):
    the model gets `epochs` masked epochs, the wall time includes the extra one.
    Manual tuner: hls4ml's default L1 regularization (1e-6), no hyper-parameter search.
    """
    import hls4ml
    from hls4ml.optimization.dsp_aware_pruning.attributes import (
        get_attributes_from_keras_model_and_hls4ml_config,
    )
    from hls4ml.optimization.dsp_aware_pruning.keras import optimize_model
    from hls4ml.optimization.dsp_aware_pruning.scheduler import ConstantScheduler

    model = tf.keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    # hls4ml 1.x configs say "auto" per layer and nest the model precision in a dict, which
    # dsp_aware_pruning (written for the older format) cannot read: spell out hls4ml's default
    # precision for every layer, plus the project-level IOType it also expects.
    default = hls4ml.utils.config_from_keras_model(model, granularity="model", backend="Vivado")
    precision = default["Model"]["Precision"]["default"]  # fixed<16,6>
    hls_config = {
        "IOType": cfg.export.io_type,
        "Model": {"Precision": precision, "ReuseFactor": 1, "Strategy": "Latency"},
        "LayerName": {layer.name: {"Precision": {"weight": precision, "result": precision}} for layer in model.layers},
    }
    attributes = get_attributes_from_keras_model_and_hls4ml_config(model, hls_config)
    log = io.StringIO()
    with (tempfile.TemporaryDirectory(prefix="hls4ml-opt-") as tmp, contextlib.redirect_stdout(log),
          _serializable_hls4ml_regularizers()):
        pruned = optimize_model(
            model, attributes, _conv_dsp_estimator(layers_of(cfg)), ConstantScheduler(fraction, fraction),
            data.x_train, data.y_train, data.x_val, data.y_val,
            batch_size=cfg.train.batch_size, epochs=epochs + 1,
            optimizer=optimizer_from(cfg.train, cfg.prune.optimizer, cfg.prune.learning_rate),
            loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(),
            validation_metric=tf.keras.metrics.SparseCategoricalAccuracy(),
            increasing=True, rtol=0.0, ranking_metric="l1", local=True, rewinding_epochs=1,
            directory=tmp, tuner="Manual", knapsack_solver="CBC_MIP",
        )
    # Every weight saves one DSP, so hls4ml's knapsack takes its equal-weights shortcut (the
    # largest magnitudes) and never calls OR-Tools; record it if that ever changes.
    return pruned, {"epochs": epochs, "epochs_run": epochs + 1, "ortools_used": "ortools" in sys.modules}


# name -> (method, granularity of what it removes, one line for the table)
METHODS = {
    "unpruned": (unpruned, None, "baseline + the same extra epochs, nothing pruned"),
    "kernel-oneshot": (kernel_oneshot, "kernel", "fpgaprune: 2-D kernels, one-shot + masked retraining"),
    "kernel-gradual": (kernel_gradual, "kernel", "fpgaprune: 2-D kernels, gradual (cubic, 4 rounds)"),
    "kernel-gradual-gl": (kernel_gradual_group_lasso, "kernel",
                          f"fpgaprune: kernel-gradual + group lasso {GROUP_LASSO:g} (prune.group_lasso)"),
    "kernel-gradual-l1": (kernel_gradual_l1, "kernel", f"fpgaprune: kernel-gradual + L1 {L1:g} (prune.l1)"),
    "kernel-gradual-channel": (kernel_gradual_channel, "kernel",
                               f"fpgaprune: kernel-gradual, channel-aware ranking (prune.channel_weight {CHANNEL_WEIGHT:g})"),
    "kernel-gradual-gl-channel": (kernel_gradual_group_lasso_channel, "kernel",
                                  "fpgaprune: kernel-gradual, group lasso + channel-aware ranking"),
    "kernel-gradual-filter": (kernel_gradual_filter, "kernel",
                              f"fpgaprune: kernel-gradual, filter-aware ranking (prune.filter_weight {FILTER_WEIGHT:g})"),
    "kernel-gradual-gl-filter": (kernel_gradual_group_lasso_filter, "kernel",
                                 "fpgaprune: kernel-gradual, group lasso + filter-aware ranking"),
    "tfmot-constant": (tfmot_constant, "weight", "tfmot prune_low_magnitude, ConstantSparsity"),
    "tfmot-polynomial": (tfmot_polynomial, "weight", "tfmot prune_low_magnitude, PolynomialDecay"),
    "hls4ml-dsp": (hls4ml_dsp_aware, "weight", "hls4ml dsp_aware_pruning (VivadoDSPEstimator)"),
    "filter-l1": (filter_l1, "filter", "whole filters, L1 (Li et al.), fpgaprune masks"),
}
