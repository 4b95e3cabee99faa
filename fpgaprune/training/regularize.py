"""Sparsity terms added to the loss while pruned layers retrain, so more of them can go.

- group lasso: the sum of each 2-D kernel's L2 norm (a Dense "kernel" is one weight, so |w|):
  whole kernels are pushed toward zero together, and the next pruning round finds them small;
- L1: the sum of |w| over every weight: quantization then rounds more of the kept weights to
  zero, and a zero weight is an adder the distributed-arithmetic design does not build.

Both are `model.add_loss` terms on the layers' kernels (no layer is rebuilt), at the strength
Keras' own `regularizers.L1` uses (a sum, not a mean). Masked kernels are exactly 0.0 and their
gradients are masked, so the terms never move them.

    add_sparsity_terms(model, ["conv2", "fc1"], l1=1e-5, group_lasso=1e-4)
"""

from __future__ import annotations

import tensorflow as tf

from ..masks import conv_kernel

EPS = 1e-12  # inside the square root: the norm's gradient at an all-zero kernel is 0, not NaN


def add_sparsity_terms(model: tf.keras.Model, layers: list[str], *, l1: float = 0.0, group_lasso: float = 0.0) -> None:
    """Add the group-lasso and L1 terms of `layers`' kernels to `model`'s loss (zero strengths: nothing)."""
    for name in layers:
        kernel = conv_kernel(model.get_layer(name))
        if l1 > 0:
            model.add_loss(lambda k=kernel: l1 * tf.reduce_sum(tf.abs(k)))
        if group_lasso > 0:
            model.add_loss(lambda k=kernel: group_lasso * kernel_group_norms(k))


def kernel_group_norms(kernel: tf.Variable) -> tf.Tensor:
    """Sum over 2-D kernels of their L2 norm ([kh, kw, cin, cout] conv; [in, out] Dense: sum |w|)."""
    if kernel.shape.rank == 4:
        return tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=(0, 1)) + EPS))
    return tf.reduce_sum(tf.abs(kernel))
