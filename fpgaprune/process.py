"""Process-wide settings, set once by an entry point (the CLI, `run_flow`, a test session).

Library stages never call these on import or on their own: a notebook that imports fpgaprune
keeps its own TensorFlow settings until it runs the flow.

    configure_process()        # deterministic kernels, checkpointable dropout RNG, quiet TF
    reseed(seed)               # Python, NumPy and TF random state (initial weights, dropout)
"""

from __future__ import annotations

import logging
import os
import warnings

_configured = False

# What TensorFlow and Keras log on every run that says nothing about this one; anything else
# they log still shows.
TF_NOISE = (
    # Masked fits, evaluations and the sensitivity sweep trace one function per small model.
    "triggered tf.function retracing",
    # Loading a compiled stage model before it is evaluated.
    "compiled metrics have yet to be built",
)


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in TF_NOISE)


def quiet_tensorflow() -> None:
    """TF's C++ log level and the Python warnings fpgaprune's own output should not drown in.

    Level 3: the cuDNN/cuFFT/cuBLAS "Unable to register factory" lines TF writes at import are
    errors (E) to its C++ logger, so level 2 shows them. It only helps before TF is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise())
    # QKeras serializes its quantizers through keras.constraints.serialize, which warns for
    # every non-constraint object; the saved models are correct.
    warnings.filterwarnings("ignore", message=r"The `keras\.constraints\.serialize\(\)` API")
    # Rebuilding layers from their configs re-uses initializer configs; the weights are copied.
    warnings.filterwarnings("ignore", message=r"The initializer \w+ is unseeded")


def quiet_optuna() -> None:
    """Optuna's notes on its experimental features (heartbeats, the retry callback) and on heartbeats
    outside `optimize` (the sweep's worker loop runs its own heartbeat thread), and its log line per
    trial: the sweep prints its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def configure_process() -> None:
    """Deterministic TF kernels and checkpointable dropout generators (idempotent).

    Dropout draws from a `tf.random.Generator` for layers built after this call, whose state a
    checkpoint saves, so a resumed run draws the same masks as an unbroken one.
    """
    global _configured
    quiet_tensorflow()
    if _configured:
        return
    import tensorflow as tf

    tf.keras.backend.experimental.enable_tf_random_generator()
    tf.config.experimental.enable_op_determinism()
    _configured = True


def reseed(seed: int) -> None:
    """Seed Python, NumPy and TF: what a stage calls before drawing initial weights or batches."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(int(seed))
