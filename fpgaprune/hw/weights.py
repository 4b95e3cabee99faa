"""The weights an exported project really holds, read back in Keras layout.

hls4ml writes every weight array twice: a C header the synthesis compiles and a `.txt` file
with the same values in the same order (for its `load_weights_from_txt` path). The `.txt`
file is plain comma-separated numbers, so it is read with numpy rather than by parsing C.
A Dense layer under distributed arithmetic has no weight file: hls4ml bakes its constants
into the generated adder graph (`firmware/nnet_utils/nnet_code_gen.h`); the export then
stores the kernel it handed to hls4ml in `da_weights.npz`, and the C-simulation, bit-exact
against QKeras, is what proves the generated code computes with exactly those weights.

    kernel = exported_kernel(project, layer)      # layer: a row of the manifest's "layers"
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInput

DA_WEIGHTS = "da_weights.npz"
CONV2D_CLASSES = ("Conv2D", "PointwiseConv2D", "DepthwiseConv2D")


def read_weight_values(project: Path, layer: dict) -> np.ndarray:
    """The layer's exported weight values in hls4ml's storage order (flat)."""
    if layer.get("weight_file") is None:
        return _da_weights(project, layer).reshape(-1)
    txt = project / Path(layer["weight_file"]).with_suffix(".txt")
    if not txt.is_file():
        raise BadInput(f"{txt}: missing weight file; export the project again")
    try:
        values = np.loadtxt(txt, delimiter=",", ndmin=1, dtype=np.float64)
    except ValueError:
        raise BadInput(f"{txt}: not an hls4ml weight file (comma-separated numbers)") from None
    expected = int(np.prod(layer.get("weight_file_shape") or layer["kernel_shape"]))
    if values.size != expected:
        raise BadInput(f"{txt}: {values.size} values where the layer has {expected} weights")
    return values


def exported_kernel(project: Path, layer: dict) -> np.ndarray:
    """The exported weights back in Keras layout.

    Resource strategies store them transposed ((F,H,W,C) for Conv2D, (out, in) for Dense);
    the manifest's stored shape and the strategy decide how to undo that.
    """
    kernel_shape = tuple(layer["kernel_shape"])
    if layer.get("weight_file") is None:
        return _da_weights(project, layer).reshape(kernel_shape)
    w = read_weight_values(project, layer)
    if layer["strategy"] not in ("resource", "resource_unrolled"):
        return w.reshape(kernel_shape)
    if layer["class"] == "Dense":
        return w.reshape(kernel_shape[::-1]).T
    if layer["class"] in CONV2D_CLASSES:
        h, wd, c, f = kernel_shape
        return np.transpose(w.reshape(f, h, wd, c), (1, 2, 3, 0))  # (F,H,W,C) -> (H,W,C,F)
    if layer["class"] == "Conv1D":
        k, c, f = kernel_shape
        return np.transpose(w.reshape(f, k, c), (1, 2, 0))
    raise BadInput(f"{layer['name']}: cannot map its exported weights back to the kernel {kernel_shape}")


def _da_weights(project: Path, layer: dict) -> np.ndarray:
    path = project / DA_WEIGHTS
    if not path.is_file():
        raise BadInput(f"{path}: missing (the weights of {layer['name']}'s distributed-arithmetic code); "
                       "export the project again")
    with np.load(path, allow_pickle=False) as saved:
        if layer["name"] not in saved.files:
            raise BadInput(f"{path}: no weights for layer {layer['name']!r}; export the project again")
        return np.asarray(saved[layer["name"]], np.float64)
