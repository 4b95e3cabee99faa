"""The networks the compression benchmark prunes, by name.

- `reference`: fpgaprune's reference CNN (configs/mnist_cnn.yaml): conv 32 -> conv 32 -> fc1 32 -> fc2.
- `bn`: the user-model corpus's Sequential BatchNorm architecture (tests/test_user_models.py,
  `sequential_bn`) at the reference's widths: conv(32, 'same', no bias) -> BN -> ReLU -> pool ->
  conv(32, 'valid', no bias) -> BN -> ReLU -> pool -> Flatten -> Dropout -> Dense(10) -> Softmax.
  It trains with its BatchNorm layers, as a user's model is brought; the baseline is then folded
  (`fpgaprune.graph.prepare_model`), as fpgaprune's baseline step folds a user's model, and every
  method prunes the folded model. No hidden Dense layer: the conv layers are most of its cost.
"""

from __future__ import annotations

from dataclasses import replace

import tensorflow as tf

L = tf.keras.layers
NETWORKS = ("reference", "bn")


def bn_cnn() -> tf.keras.Model:
    return tf.keras.Sequential([
        L.Input((28, 28, 1)),
        L.Conv2D(32, 3, padding="same", use_bias=False, name="conv1"), L.BatchNormalization(name="bn1"),
        L.Activation("relu", name="relu1"), L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(32, 3, use_bias=False, name="conv2"), L.BatchNormalization(name="bn2"), L.ReLU(name="relu2"),
        L.MaxPooling2D(2, name="pool2"), L.Flatten(name="flatten"), L.Dropout(0.25, name="drop"),
        L.Dense(10, name="fc"), L.Softmax(name="softmax"),
    ], name="bn_cnn")


def network_config(cfg, network: str):
    """`cfg` set up for the named network (model source; per-layer bits only for layers it has)."""
    if network == "reference":
        return cfg
    if network != "bn":
        raise ValueError(f"unknown network {network!r} (known: {', '.join(NETWORKS)})")
    model = replace(cfg.model, source="python:compression_networks:bn_cnn")
    quantize = replace(cfg.quantize, layers={"conv2": cfg.quantize.layers["conv2"]})
    return replace(cfg, model=model, quantize=quantize, export=replace(cfg.export, layer_reuse={}, layer_strategy={}))
