"""The mask spec: a YAML file a person reads and edits, listing the kernels to prune.

    # W[:, :, cin, cout] of each layer listed here is fixed at 0.0
    conv2: [[29, 13], [4, 7]]
    fc1: [[120, 3]]          # a Dense layer: the weights W[i, o], as [input, output] pairs
    # conv2: {keep: [[0, 3], [5, 1]]}   instead: the kernels to keep, every other one pruned

`read_mask_spec` / `parse_mask_spec` check the structure; `spec_to_masks` checks it against a
model (layer exists, is a conv layer, indices in range; a `keep:` list is resolved against the
layer's shape) and returns boolean masks. `write_masks` writes whichever form is shorter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .errors import BadInput
from .io import atomic_path
from .masks import check_masks, conv_kernel, is_dense, prunable_layers
from .yamlio import DuplicateKey, load_yaml


@dataclass(frozen=True)
class Keep:
    """A layer's kernels to keep, [cin, cout] pairs; every other kernel of the layer is pruned."""

    pairs: tuple[tuple[int, int], ...]


MaskSpec = dict[str, "list[tuple[int, int]] | Keep"]

HEADER = (
    "# fpgaprune mask spec: for each conv layer, the 2-D kernels W[:, :, cin, cout] to prune,\n"
    "# as [cin, cout] pairs, or {keep: [[cin, cout], ...]}: those kept, every other one pruned.\n"
    "# A Dense layer: its weights W[i, o], as [input, output] pairs.\n"
    "# Pruned kernels are fixed at exactly 0.0 from here on. Edit freely: add or remove pairs, or a layer.\n"
)


def parse_mask_spec(data: object, source: str = "mask spec") -> MaskSpec:
    """Validate the structure of parsed YAML (no model needed)."""
    if data is None:
        raise BadInput(f"{source}: empty; expected e.g. 'conv2: [[29, 13]]'")
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping of layer name to [cin, cout] pairs, got {type(data).__name__}")
    spec: MaskSpec = {}
    for layer, pairs in data.items():
        if not isinstance(layer, str):
            raise BadInput(f"{source}: layer name {layer!r} is not a string")
        if isinstance(pairs, dict):
            if set(pairs) != {"keep"}:
                raise BadInput(f"{source}: {layer}: expected {{keep: [[cin, cout], ...]}}, got keys {sorted(pairs)}")
            spec[layer] = Keep(tuple(_pairs(pairs["keep"] or [], f"{source}: {layer}.keep")))
            continue
        spec[layer] = _pairs([] if pairs is None else pairs, f"{source}: {layer}")
    return spec


def _pairs(pairs: object, where: str) -> list[tuple[int, int]]:
    """A list of distinct non-negative [cin, cout] integer pairs, sorted."""
    if not isinstance(pairs, list):
        raise BadInput(f"{where}: expected a list of [cin, cout] pairs, got {pairs!r}")
    seen: set[tuple[int, int]] = set()
    for i, pair in enumerate(pairs):
        ok = isinstance(pair, list) and len(pair) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in pair)
        if not ok:
            raise BadInput(f"{where}[{i}]: expected a pair [cin, cout] of integers, got {pair!r}")
        if min(pair) < 0:
            raise BadInput(f"{where}[{i}]: negative index in {pair}")
        key = (pair[0], pair[1])
        if key in seen:
            raise BadInput(f"{where}[{i}]: duplicate entry {pair}")
        seen.add(key)
    return sorted(seen)


def read_mask_spec(path: str | Path) -> MaskSpec:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"mask spec {path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise BadInput(f"mask spec {path}: not a text file") from None
    try:
        data = load_yaml(text)
    except DuplicateKey as exc:
        raise BadInput(f"mask spec {path}: {exc.problem} (YAML would keep only the last; merge the lists)") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"mask spec {path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_mask_spec(data, f"mask spec {path}")


def spec_to_masks(spec: MaskSpec, model, source: str = "mask spec") -> dict[str, np.ndarray]:
    """Boolean masks (True = pruned) for the layers the spec names, checked against `model`."""
    layers = {layer.name: layer for layer in prunable_layers(model)}
    shapes = {name: tuple(conv_kernel(layer).shape[-2:]) for name, layer in layers.items()}
    masks = {}
    for name, pairs in spec.items():
        if name in shapes:
            n_in, n_out = shapes[name]
            axes = ("input", "output") if is_dense(layers[name]) else ("cin", "cout")
            listed = pairs.pairs if isinstance(pairs, Keep) else pairs
            for cin, cout in listed:
                if cin >= n_in or cout >= n_out:
                    raise BadInput(
                        f"{source}: {name}: [{cin}, {cout}] is out of range; the layer has "
                        f"{axes[0]} 0..{n_in - 1}, {axes[1]} 0..{n_out - 1}"
                    )
            keep = isinstance(pairs, Keep)
            pruned = np.full((n_in, n_out), keep)
            for cin, cout in listed:
                pruned[cin, cout] = not keep
            masks[name] = pruned
        else:
            masks[name] = np.zeros((0, 0), bool)  # check_masks names the problem
    try:
        check_masks(model, masks)
    except BadInput as exc:
        raise BadInput(f"{source}: {str(exc).removeprefix('mask: ')}") from None
    return masks


def masks_to_spec(masks: dict[str, np.ndarray]) -> MaskSpec:
    """The pruned pairs of each mask (the long form; `shorter_spec` picks per layer)."""
    return {name: [(int(a), int(b)) for a, b in np.argwhere(m)] for name, m in masks.items()}


def shorter_spec(masks: dict[str, np.ndarray]) -> MaskSpec:
    """Per layer, the pruned pairs or {keep: ...}, whichever lists fewer pairs."""
    spec: MaskSpec = {}
    for name, m in masks.items():
        m = np.asarray(m, bool)
        if np.count_nonzero(~m) < np.count_nonzero(m):
            spec[name] = Keep(tuple((int(a), int(b)) for a, b in np.argwhere(~m)))
        else:
            spec[name] = [(int(a), int(b)) for a, b in np.argwhere(m)]
    return spec


def format_mask_spec(spec: MaskSpec) -> str:
    lines = [HEADER.rstrip("\n")]
    for name, pairs in spec.items():
        listed = pairs.pairs if isinstance(pairs, Keep) else pairs
        body = "[" + ", ".join(f"[{a}, {b}]" for a, b in listed) + "]"
        if isinstance(pairs, Keep):
            lines.append(f"{name}: {{keep: {body}}}  # {len(listed)} kernels kept, every other one pruned")
        else:
            lines.append(f"{name}: {body}  # {len(listed)} kernels")
    return "\n".join(lines) + "\n"


def write_mask_spec(spec: MaskSpec, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(format_mask_spec(spec))


def write_masks(masks: dict[str, np.ndarray], path: str | Path) -> None:
    """Boolean masks as a mask spec, each layer in its shorter form (what the stages write)."""
    write_mask_spec(shorter_spec(masks), path)
