"""The selection flags analyze and prune share: shortcuts for the config's prune section."""

from __future__ import annotations

from .common import config_data, parse_with_flags

# flag -> (prune.select, key holding the value)
SELECT_FLAGS = {
    "threshold": ("threshold", "threshold"),
    "fraction": ("fraction", "fraction"),
    "global_fraction": ("global_fraction", "fraction"),
    "spec": ("spec", "spec"),
}


def add_selection_arguments(p) -> None:
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="conv layers to prune (default: prune.layers, else all)")
    p.add_argument("--norm", choices=("l1", "l2", "max"), help="kernel magnitude (default: prune.norm)")
    p.add_argument("--normalize", action="store_true", default=None, help="divide magnitudes by each layer's mean")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, metavar="X", help="prune kernels with magnitude below X")
    group.add_argument("--fraction", type=float, metavar="F", help="prune the smallest fraction F of each layer")
    group.add_argument("--global-fraction", type=float, metavar="F",
                       help="prune the smallest fraction F of all kernels together")
    group.add_argument("--spec", metavar="FILE", help="prune exactly the kernels of a mask spec (YAML) or masks (.npz)")


def explicit_selection(args) -> bool:
    return any(getattr(args, k, None) is not None for k in SELECT_FLAGS)


def prune_config_from_args(args, extra: dict | None = None):
    """The config with --set applied, then the selection flags (validated again)."""
    data = config_data(args)
    prune = data.setdefault("prune", {})
    flag = None
    for name, (select, key) in SELECT_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            flag = f"--{name.replace('_', '-')}"
            prune["select"], prune[key] = select, value
    if args.layers is not None:
        prune["layers"] = args.layers
    if args.norm is not None:
        prune["norm"] = args.norm
    if args.normalize:
        prune["normalize"] = True
    prune.update(extra or {})
    return parse_with_flags(data, args, flag)
