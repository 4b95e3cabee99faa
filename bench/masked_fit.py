"""Per-epoch time of masked `fit` against the same model's plain `fit`, and two alternatives.

Variants, all on the reference CNN with 80% of conv2's 2-D kernels pruned, trained on
mnist-5k (4,500 images, batch 32, Adam):

- plain:  the unmasked model, ordinary optimizer (the reference time);
- masked: fpgaprune's mechanism (`apply_masks` + `compile_model`: a KernelMask constraint and
  masked gradients), the product path;
- assign loop: the naive approach, a callback that zeroes every pruned kernel after each batch
  with one sliced `assign` per kernel (timed over `--loop-steps` steps, scaled to an epoch);
- tfmot: `tfmot.sparsity.keras.prune_low_magnitude` on conv2 (ConstantSparsity 0.8) with its
  `UpdatePruningStep` callback (element-wise, not kernel masks: a cost reference only).

Epochs are interleaved (plain, masked, ..., then the reverse order) so load from other
processes hits every variant alike; the first epoch of each (tracing) is dropped; medians over
`--repeats`, and for masked/plain also the median of the ratios of neighbouring epochs and of
`--steps` pairs of single training steps (the steadiest figure on a shared machine).

    python bench/masked_fit.py --repeats 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the assign loop is slow on purpose: no warning per epoch

from fpgaprune.config import ModelConfig  # noqa: E402
from fpgaprune.data import load_dataset  # noqa: E402
from fpgaprune.masks import KernelMask, apply_masks, masked_max_abs  # noqa: E402
from fpgaprune.models import build_reference_cnn  # noqa: E402
from fpgaprune.process import configure_process, reseed  # noqa: E402
from fpgaprune.training.fit import EpochTimer, compile_model, make_optimizer  # noqa: E402

FRACTION = 0.8
LAYER = "conv2"


def pruned_kernels(model: tf.keras.Model, fraction: float, seed: int) -> dict[str, np.ndarray]:
    cin, cout = model.get_layer(LAYER).kernel.shape[-2:]
    order = np.random.default_rng(seed).permutation(cin * cout)
    pruned = np.zeros(cin * cout, bool)
    pruned[order[: int(np.ceil(fraction * cin * cout))]] = True
    return {LAYER: pruned.reshape(cin, cout)}


class AssignLoop(tf.keras.callbacks.Callback):
    """The naive way: after every batch, assign zeros to each pruned kernel, one by one."""

    def __init__(self, layer, pruned: np.ndarray):
        super().__init__()
        self.kernel = layer.kernel
        self.pairs = [tuple(map(int, p)) for p in np.argwhere(pruned)]
        self.zero = tf.zeros(self.kernel.shape[:2])

    def on_train_batch_end(self, batch, logs=None):
        for cin, cout in self.pairs:
            self.kernel[:, :, cin, cout].assign(self.zero)


def build_variants(data, masks, seed):
    """name -> (model, callbacks), all from the same initial weights."""
    reseed(seed)
    base = build_reference_cnn(ModelConfig())
    adam = lambda: make_optimizer("adam", 1e-3)  # noqa: E731

    plain = tf.keras.models.clone_model(base)
    plain.set_weights(base.get_weights())
    compile_model(plain, adam(), masked=False)

    masked = apply_masks(base, masks)
    compile_model(masked, adam(), masked=True)

    loop = apply_masks(base, {})  # a plain copy
    compile_model(loop, adam(), masked=False)
    variants = {
        "plain": (plain, []),
        "masked": (masked, []),
        "assign loop": (loop, [AssignLoop(loop.get_layer(LAYER), masks[LAYER])]),
    }
    try:
        import tensorflow_model_optimization as tfmot

        sparsity = tfmot.sparsity.keras

        def wrap(layer):
            if layer.name == LAYER:
                return sparsity.prune_low_magnitude(
                    layer, pruning_schedule=sparsity.ConstantSparsity(FRACTION, begin_step=0, frequency=100)
                )
            return layer.__class__.from_config(layer.get_config())

        tfm = tf.keras.models.clone_model(base, clone_function=wrap)
        compile_model(tfm, adam(), masked=False)
        variants["tfmot"] = (tfm, [sparsity.UpdatePruningStep()])
    except ImportError:  # pragma: no cover
        print("tensorflow_model_optimization not installed: tfmot skipped", file=sys.stderr)
    return variants


def epoch_seconds(model, callbacks, data, batch_size, steps=None) -> tuple[float, float]:
    """Wall and process-CPU seconds of one training epoch (scaled up from `steps` batches).

    CPU time is reported beside wall time because it hardly moves when other processes share
    the cores, while wall time does.
    """
    timer = EpochTimer()
    n = len(data.x_train) if steps is None else steps * batch_size
    cpu = time.process_time()
    model.fit(
        data.x_train[:n], data.y_train[:n], batch_size=batch_size, epochs=1, shuffle=True,
        callbacks=[timer, *callbacks], verbose=0,
    )
    cpu = time.process_time() - cpu
    scale = -(-len(data.x_train) // batch_size) / steps if steps else 1.0
    return timer.seconds[0] * scale, cpu * scale


def mask_op_seconds(model: tf.keras.Model, calls: int = 2000) -> float:
    """Seconds per training step spent on the mask alone: every constraint and gradient mask.

    The ops run `calls` times inside one graph loop, so Python call overhead is not counted.
    """
    masked = [v for v in model.trainable_variables if isinstance(getattr(v, "constraint", None), KernelMask)]
    saved = [v.numpy() for v in masked]

    @tf.function
    def mask_steps(n):
        for _ in tf.range(n):
            for var in masked:
                grad = var.constraint.mask_gradient(tf.ones_like(var))
                var.assign(var.constraint(var - 1e-9 * grad))

    mask_steps(tf.constant(1))
    start = time.perf_counter()
    mask_steps(tf.constant(calls))
    seconds = (time.perf_counter() - start) / calls
    for var, value in zip(masked, saved, strict=True):
        var.assign(value)
    return seconds


def paired_step_times(plain, masked, data, batch_size: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of single training steps, plain and masked alternately on the same batches.

    Neighbouring steps (~5 ms apart) see the same load from other processes, so the median of
    their ratios is far steadier than whole epochs on a shared machine.
    """
    batches = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).batch(batch_size).repeat()
    fns = {"plain": plain.make_train_function(), "masked": masked.make_train_function()}
    its = {name: iter(batches) for name in fns}
    out: dict[str, list[float]] = {name: [] for name in fns}
    for step in range(steps + 10):  # the first 10 trace and warm up
        for name in (("plain", "masked") if step % 2 else ("masked", "plain")):
            start = time.perf_counter()
            fns[name](its[name])
            if step >= 10:
                out[name].append(time.perf_counter() - start)
    return out["plain"], out["masked"]


def main(argv=None) -> int:
    configure_process()  # an entry point: deterministic kernels for every figure
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=25, help="timed epochs per variant (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--loop-steps", type=int, default=10, help="batches timed for the assign loop (it is slow)")
    ap.add_argument("--loop-repeats", type=int, default=3, help="timed repeats of the assign loop")
    ap.add_argument("--steps", type=int, default=1000, help="paired single steps timed (plain, masked)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)

    data = load_dataset("mnist-5k", validation_fraction=0.1, seed=args.seed)
    probe = build_reference_cnn(ModelConfig())
    masks = pruned_kernels(probe, FRACTION, args.seed)
    variants = build_variants(data, masks, args.seed)
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    names = list(variants)
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up (tracing), dropped
        order = names if repeat % 2 else names[::-1]  # alternate, so no variant always runs first
        for name in order:
            if name == "assign loop" and repeat > args.loop_repeats:
                continue
            model, callbacks = variants[name]
            steps = args.loop_steps if name == "assign loop" else None
            wall, cpu_s = epoch_seconds(model, callbacks, data, args.batch_size, steps)
            if repeat:
                times[name].append(wall)
                cpu[name].append(cpu_s)
    step_plain, step_masked = paired_step_times(
        variants["plain"][0], variants["masked"][0], data, args.batch_size, args.steps
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    median_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    masked_model = variants["masked"][0]
    steps_per_epoch = -(-len(data.x_train) // args.batch_size)
    result = {
        "command": "python bench/masked_fit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}",
        "load_average": [load_before, os.getloadavg()[0]],
        "train_images": len(data.x_train),
        "batch_size": args.batch_size,
        "pruned_kernels": int(masks[LAYER].sum()),
        "repeats": args.repeats,
        "median_epoch_seconds": median,
        "median_epoch_cpu_seconds": median_cpu,
        "ratio_to_plain": {name: median[name] / median["plain"] for name in median},
        "cpu_ratio_to_plain": {name: median_cpu[name] / median_cpu["plain"] for name in median},
        "min_ratio_to_plain": {name: min(times[name]) / min(times["plain"]) for name in median},
        "masked_neighbour_ratio_median": statistics.median(
            m / p for m, p in zip(times["masked"], times["plain"], strict=True)
        ),
        "step_seconds_median": {"plain": statistics.median(step_plain), "masked": statistics.median(step_masked)},
        "masked_step_ratio_median": statistics.median(m / p for m, p in zip(step_masked, step_plain, strict=True)),
        "steps": args.steps,
        "mask_op_fraction_of_step": mask_op_seconds(masked_model) / (median["plain"] / steps_per_epoch),
        "masked_max_abs_after_training": masked_max_abs(masked_model, masks),
        "epoch_seconds": times,
        "epoch_cpu_seconds": cpu,
        "wall_seconds": time.perf_counter() - started,
    }
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def format_result(r: dict) -> str:
    lines = [
        f"command: {r['command']}",
        f"machine: {r['machine']}; load average {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}",
        f"{r['train_images']} images/epoch, batch {r['batch_size']}, {r['pruned_kernels']} of conv2's "
        f"1024 kernels masked; medians of {r['repeats']} epochs (assign loop: fewer, scaled from a few steps)",
        f"{'variant':<12} {'s/epoch':>8} {'vs plain':>9} {'CPU s':>7} {'vs plain':>9} {'min vs min':>11}",
    ]
    for name, seconds in r["median_epoch_seconds"].items():
        lines.append(
            f"{name:<12} {seconds:>8.3f} {r['ratio_to_plain'][name]:>8.3f}x "
            f"{r['median_epoch_cpu_seconds'][name]:>7.3f} {r['cpu_ratio_to_plain'][name]:>8.3f}x "
            f"{r['min_ratio_to_plain'][name]:>10.3f}x"
        )
    lines.append(f"masked/plain, median of ratios of neighbouring epochs: {r['masked_neighbour_ratio_median']:.3f}")
    st = r["step_seconds_median"]
    lines.append(
        f"single steps, {r['steps']} pairs: plain {1e3 * st['plain']:.2f} ms, masked {1e3 * st['masked']:.2f} ms; "
        f"median of paired ratios masked/plain: {r['masked_step_ratio_median']:.3f}"
    )
    lines.append(f"mask ops alone (constraint + gradient mask): {100 * r['mask_op_fraction_of_step']:.2f}% of a plain step")
    lines.append(f"masked weights after training, max |w|: {r['masked_max_abs_after_training']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
