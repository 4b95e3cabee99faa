"""Which channels of a plain layer chain are constant, which are read, which a reduction keeps.

Read-only: `plan_channels(model, masks)` walks the model as a chain of links (a conv, a dense,
a channel-wise layer, a flatten, or a layer that mixes channels) and returns, for the input of
the chain and after every link, one value per channel (NaN where the channel varies with the
image, else the constant it holds at every pixel) and whether a reduced model keeps it.

    plan = plan_channels(pruned, masks)
    plan.keep[3]       # channels kept after the third link
    plan.consts[3]     # their constants (NaN: not constant)

Two passes, both exact. Forward: a conv output channel whose kernels from every varying input
are pruned is the constant act(bias + folded constants); a 'valid' conv folds a constant
input channel into its bias (every output pixel sees every tap), a 'same' conv cannot (its
zero padding makes the sum at the borders position-dependent) unless the constant is 0; a
Dense folds any constant input. Backward: a layer reads an input channel when it contributes
to a kept output, and a producer keeps what its consumer reads. A model the passes do not
understand raises `Refused`, with the reason, so nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..masks import masks_of

# Elementwise activations: a constant channel stays constant through them.
ELEMENTWISE = {"linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
               "softsign", "swish", "silu", "gelu", "exponential"}
# Activations that mix channels: every input is read, no output is constant.
MIXING = {"softmax", "log_softmax"}
# Layers that act on each channel alone (at inference): a constant channel stays that constant.
CHANNEL_WISE = {"ReLU", "Dropout", "MaxPooling2D", "AveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling2D"}
UNDERSTOOD = ("Conv2D, Dense, Flatten, ReLU, Activation, Softmax, Dropout, MaxPooling2D, AveragePooling2D "
              "and their global forms")


class Refused(Exception):
    """The model is not one the reduction understands; the message says why."""


class ConstantOutput(Refused):
    """The masks leave no path from the input to the output: the model computes a constant."""


@dataclass(frozen=True)
class Link:
    """One layer of the chain: kind is conv, dense, same (channel-wise), mix or flatten."""

    layer: tf.keras.layers.Layer
    kind: str
    mixes: bool = False  # a conv / dense whose own activation mixes channels (softmax)

    @property
    def padded(self) -> bool:
        """A conv whose zero padding reaches into the sum (so a constant input is not foldable)."""
        return self.kind == "conv" and self.layer.padding == "same" and tuple(self.layer.kernel_size) != (1, 1)

    def taps(self) -> np.ndarray:
        """[cin, cout]: what one unit of a constant input adds to each output (sum of the taps)."""
        w = np.asarray(self.layer.kernel.numpy(), np.float64)
        return w.sum(axis=(0, 1)) if self.kind == "conv" else w

    def bias(self) -> np.ndarray:
        b = self.layer.bias
        return np.zeros(self.layer.kernel.shape[-1]) if b is None else np.asarray(b.numpy(), np.float64)


@dataclass
class Plan:
    """Per tensor of the chain (0 = the model input, k = after link k-1): constants and kept channels."""

    links: list[Link]
    consts: list[np.ndarray]
    keep: list[np.ndarray]
    masks: dict[str, np.ndarray]

    def consumer(self, k: int) -> tuple[int, int | None]:
        """For link k's output: (the tensor its channels reach unchanged, the next reading link or None)."""
        t = k + 1
        while t < len(self.links) and self.links[t].kind == "same":
            t += 1
        j = t
        while j < len(self.links) and self.links[j].kind == "flatten":
            j += 1
        return t, (j if j < len(self.links) else None)


def chain_of(model: tf.keras.Model) -> list[Link]:
    """The model's layers as links of one chain; Refused for branches, nesting or unknown layers."""
    layers = list(model.layers)
    if isinstance(model, tf.keras.Sequential):
        layers = [layer for layer in layers if type(layer).__name__ != "InputLayer"]
    else:
        _check_chain(model)
        layers = layers[1:]
    if not layers:
        raise Refused("the model has no layers")
    return [_link(layer) for layer in layers]


def _check_chain(model: tf.keras.Model) -> None:
    config = model.get_config()
    if len(config["input_layers"]) != 1 or len(config["output_layers"]) != 1:
        raise Refused("the model has several inputs or outputs (only a plain chain is reduced)")
    entries = config["layers"]
    for prev, entry in zip(entries, entries[1:], strict=False):
        nodes = entry.get("inbound_nodes") or []
        if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != prev["name"]:
            raise Refused(f"layer {entry['name']!r} is not fed by the layer before it alone "
                          "(branches and shared layers are not reduced)")
    if config["output_layers"][0][0] != entries[-1]["name"]:
        raise Refused("the model's output is not its last layer")


def _link(layer) -> Link:
    kind = type(layer).__name__
    if isinstance(layer, tf.keras.Model):
        raise Refused(f"layer {layer.name!r} is a nested model")
    config = layer.get_config()
    if config.get("data_format") not in (None, "channels_last"):
        raise Refused(f"layer {layer.name!r} is channels_first")
    rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else 0
    if kind == "Conv2D" and config.get("groups", 1) == 1:
        return Link(layer, "conv", mixes=_activation_kind(layer, config["activation"]) == "mix")
    if kind == "Dense" and rank == 2:
        return Link(layer, "dense", mixes=_activation_kind(layer, config["activation"]) == "mix")
    if kind == "Flatten" and rank in (2, 4):
        return Link(layer, "flatten" if rank == 4 else "same")
    if kind in CHANNEL_WISE:
        return Link(layer, "same")
    if kind == "Activation":
        return Link(layer, _activation_kind(layer, config["activation"]))
    if kind == "Softmax":
        return Link(layer, "mix")
    detail = {"Conv2D": " (grouped)", "Dense": f" (on a rank-{rank} input)", "Flatten": f" (rank {rank})"}
    raise Refused(f"layer {layer.name!r} ({kind}{detail.get(kind, '')}) is not one the reduction understands "
                  f"(it reduces chains of {UNDERSTOOD})")


def _activation_kind(layer, activation) -> str:
    if isinstance(activation, str) and activation in ELEMENTWISE:
        return "same"
    if isinstance(activation, str) and activation in MIXING:
        return "mix"
    raise Refused(f"layer {layer.name!r}: activation {activation!r} is not one the reduction understands")


def plan_channels(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> Plan:
    """The channels a reduced `model` keeps, and the constants of the others; see the module docstring."""
    links = chain_of(model)
    masks = {**masks_of(model), **masks}
    first = links[0].layer.input_shape
    consts = [np.full(int(first[-1]), np.nan)]
    for link in links:
        consts.append(_constants_after(link, consts[-1], masks))
    need = _needed(links, consts, masks)
    keep = [np.ones(len(consts[0]), bool)]  # the model's input is what it is
    for k, link in enumerate(links):
        if link.kind in ("conv", "dense"):
            keep.append(need[k + 1])
        elif link.kind == "flatten":
            keep.append(np.tile(keep[k], _positions(link)))
        else:
            keep.append(keep[k].copy())
        if not keep[-1].any():
            raise ConstantOutput(f"every channel after layer {link.layer.name!r} is constant or unused "
                                 "(the model's output does not depend on its input)")
    return Plan(links, consts, keep, masks)


def contributions(link: Link, const_in: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """[cin, cout]: whether input channel cin changes output cout in a way no bias can carry."""
    varying = np.isnan(const_in)
    if link.kind == "dense":
        return (np.asarray(link.layer.kernel.numpy()) != 0) & varying[:, None]
    pruned = masks.get(link.layer.name, np.zeros(link.layer.kernel.shape[-2:], bool))
    unfoldable = varying | (link.padded & (np.nan_to_num(const_in) != 0))
    return ~pruned & unfoldable[:, None]


def _constants_after(link: Link, const_in: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    if link.kind == "flatten":
        return np.tile(const_in, _positions(link))
    if link.kind == "mix":
        return np.full(len(const_in), np.nan)
    if link.kind == "same":
        out = const_in.copy()
        known = ~np.isnan(out)
        if known.any() and type(link.layer).__name__ in ("ReLU", "Activation"):
            out[known] = link.layer.call(tf.constant(out[known][None], tf.float32)).numpy()[0]
        return out
    pre = link.bias() + np.nan_to_num(const_in) @ link.taps()
    out = np.full(len(pre), np.nan)
    constant = ~contributions(link, const_in, masks).any(axis=0) & (not link.mixes)
    if constant.any():
        out[constant] = link.layer.activation(tf.constant(pre[constant], tf.float32)).numpy()
    return out


def _needed(links: list[Link], consts: list[np.ndarray], masks: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per tensor: the channels some later layer reads (the model's output: all of them)."""
    need = [None] * len(consts)
    need[-1] = np.ones(len(consts[-1]), bool)
    for k in reversed(range(len(links))):
        link, out = links[k], need[k + 1]
        if link.kind in ("conv", "dense"):
            if link.mixes:
                out = need[k + 1] = np.ones(len(out), bool)
            need[k] = contributions(link, consts[k], masks)[:, out].any(axis=1)
        elif link.kind == "flatten":
            need[k] = out.reshape(-1, len(consts[k])).any(axis=0)
        elif link.kind == "mix":
            need[k] = np.ones(len(consts[k]), bool)
        else:
            need[k] = out.copy()
    return need


def _positions(link: Link) -> int:
    """Pixels per channel of a Flatten's 4-D input (channels_last: flat index = pixel * C + c)."""
    return int(np.prod(link.layer.input_shape[1:-1]))
