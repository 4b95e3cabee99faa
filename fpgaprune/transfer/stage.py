"""The transfer stage: adapt a trained (pruned) model to new data by training only its top.

The conv layers are already sized for the FPGA, so they stay frozen (`trainable=False`: no
gradients, weights bit-identical, pruned kernels still 0.0). Only the last one or two Dense
layers (or everything above a named layer, or only newly inserted layers) train, on features
the frozen part computed once (`features.py`), so an epoch costs only the head:

    model, summary = transfer(model, data, cfg)   # cfg.transfer: what trains, new head, ...

`prepare` makes every decision and raises BadInput before any work: the edits (`heads.py`),
the layers that train, the layers gradual unfreezing will open later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..config import Config
from ..data import Dataset, check_fits
from ..errors import BadInput
from ..locks import scratch_dir
from ..masks import count_pruned, masked_max_abs, masks_of
from ..process import reseed
from ..training.fit import accuracy, compile_model, optimizer_from, resolved_optimizer, training_callbacks
from .features import Split, cache_features, speedup_bound, split_at_trainable
from .headfit import fit_head
from .heads import dense_layers, insert_identity, insert_scale, rebuild, replace_head

# How a transfer fixes labels its model has no outputs for (the end of check_fits' message).
LABEL_HINT = "set transfer.new_classes for a new head (or transfer.classes to keep fewer labels)"


@dataclass
class Plan:
    """What a transfer will do, decided (and checked) before any training."""

    model: tf.keras.Model  # the edited copy that trains
    trainable: list[str]
    new_layers: list[str]  # the new head's layers
    inserted: list[str]  # identity / scale layers
    unfreeze: list[str]  # opened after the head has trained, top first


def select_task(data: Dataset, classes: list[int] | None = None, per_class: int | None = None) -> Dataset:
    """Keep only `classes` (renumbered 0..k-1 in that order); at most `per_class` training images each.

    The training split is already shuffled by the run's seed, so "the first N of each class"
    is a seeded random sample.
    """
    if classes is not None and len(set(classes)) != len(classes):
        raise BadInput(f"transfer.classes: {classes} lists a class twice")
    renumber = None
    if classes is not None:
        renumber = np.full(max(classes) + 1, -1)
        renumber[classes] = np.arange(len(classes))

    def pick(x, y, limit):
        keep = np.isin(y, classes) if classes is not None else np.ones(len(y), bool)
        if limit is not None:
            for label in np.unique(y[keep]):
                keep[np.flatnonzero(keep & (y == label))[limit:]] = False
        y = y[keep]
        return x[keep], (renumber[y] if renumber is not None else y)

    x_train, y_train = pick(data.x_train, data.y_train, per_class)
    x_val, y_val = pick(data.x_val, data.y_val, None)
    x_test, y_test = pick(data.x_test, data.y_test, None)
    for c in classes or []:
        if not np.any(data.y_train == c):
            raise BadInput(f"transfer.classes: the training data has no images of class {c}")
    if len(x_train) == 0:
        raise BadInput(f"data {data.name}: no training images left for the transfer")
    n = len(classes) if classes is not None else data.num_classes
    return replace(
        data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test, num_classes=n
    )


def choose_trainable(model: tf.keras.Model, cfg, new_layers: list[str], inserted: list[str]) -> list[str]:
    """The layers that train, in model order: the chosen ones plus every new layer."""
    names = [layer.name for layer in model.layers]
    if cfg.train_inserted_only:
        chosen = []
    elif cfg.above is not None:
        if cfg.above not in names:
            raise BadInput(f"transfer.above: no layer named {cfg.above!r} (layers: {', '.join(names)})")
        chosen = [layer.name for layer in model.layers[names.index(cfg.above) + 1 :] if layer.weights]
        if not chosen:
            raise BadInput(f"transfer.above: no layer with weights above {cfg.above!r}, so nothing would train")
    else:
        dense = [d.name for d in dense_layers(model) if d.name not in inserted]
        if len(dense) < cfg.train_last:
            raise BadInput(f"transfer.train_last: {cfg.train_last} Dense layers asked for, the model has {len(dense)}")
        chosen = dense[-cfg.train_last :]
    wanted = set(chosen) | set(new_layers) | set(inserted)
    return [name for name in names if name in wanted]


def prepare(model: tf.keras.Model, cfg: Config) -> Plan:
    """Edit a copy of `model` as cfg.transfer asks and decide what trains; BadInput if it can't."""
    from ..models import load_model_file

    t = cfg.transfer
    if len(model.inputs) != 1:
        raise BadInput(f"model {model.name}: has {len(model.inputs)} inputs; transfer needs a single-input model")
    new_layers, inserted = [], []
    if t.new_classes is not None or t.head is not None:
        head = load_model_file(t.head, allow_custom_code=cfg.model.allow_custom_code) if t.head else None
        edited, new_layers = replace_head(
            model, new_classes=t.new_classes, head=head, replace_top=t.replace_top, seed=cfg.seed
        )
    else:
        edited = rebuild(model, seed=cfg.seed)
    if t.insert_scale:
        edited, names = insert_scale(edited, t.insert_scale, seed=cfg.seed)
        inserted += names
    if t.insert_identity:
        edited, name = insert_identity(edited, seed=cfg.seed)
        inserted.append(name)
    trainable = choose_trainable(edited, t, new_layers, inserted)
    frozen = [layer.name for layer in reversed(edited.layers) if layer.weights and layer.name not in trainable]
    if t.unfreeze > len(frozen):
        raise BadInput(f"transfer.unfreeze: {t.unfreeze} layers asked for, only {len(frozen)} are frozen")
    return Plan(edited, trainable, new_layers, inserted, frozen[: t.unfreeze])


def freeze(model: tf.keras.Model, trainable: list[str]) -> None:
    """Only the named layers train; the rest leave `trainable_variables` (no gradients at all)."""
    for layer in model.layers:
        layer.trainable = layer.name in trainable


def _features(split: Split, data: Dataset, t, cache_dir) -> tuple:
    """Cached training and validation features, and a description of the cache."""
    start = time.perf_counter()
    kw = {"memory_limit_mb": t.cache_memory_mb, "folder": cache_dir}
    x_train = cache_features(split.frozen, data.x_train, name="train", **kw)
    x_val = cache_features(split.frozen, data.x_val, name="val", **kw)
    info = {
        "cache_seconds": time.perf_counter() - start,
        "cache_storage": "memmap" if isinstance(x_train, np.memmap) else "memory",
        "cache_mib": (x_train.nbytes + x_val.nbytes) / 2**20,
    }
    return x_train, x_val, info


def train_layers(
    model, trainable, data: Dataset, cfg: Config, *, epochs, learning_rate, cache_dir=None, verbose=1,
    checkpoint_dir=None, resume: bool = False,
) -> dict:
    """Train only `trainable` layers of `model` (in place), from cached features where possible.

    Uncached, the frozen part computes each batch's features in the loop instead (or, when the
    model cannot be cut, the whole model trains with its frozen layers' trainable=False). With
    `checkpoint_dir` every epoch is saved; `resume` continues from the last one.
    """
    t = cfg.transfer
    trainable = [layer.name for layer in model.layers if layer.name in trainable]
    freeze(model, trainable)
    split = split_at_trainable(model)
    cached = t.cache_features and split.head is not None
    reason = None if cached else ("transfer.cache_features is false" if split.head is not None else split.reason)
    info = {"layers": list(trainable), "cached_features": cached, "cut": split.cut, "uncached_reason": reason,
            **resolved_optimizer(cfg.train, t.optimizer, learning_rate)}
    net, frozen, x_train, x_val = model, None, data.x_train, data.x_val
    if split.head is not None:
        net = split.head
        info["speedup_bound"] = speedup_bound(model, [layer.name for layer in net.layers])
        if cached:
            x_train, x_val, cache_info = _features(split, data, t, cache_dir)
            info.update(cache_info)
        else:
            frozen = split.frozen
    compile_model(net, optimizer_from(cfg.train, t.optimizer, learning_rate))  # masked; callbacks find it
    loop = training_callbacks(
        net, epochs, patience=cfg.train.early_stopping_patience, validation=len(x_val) > 0,
        checkpoint_dir=checkpoint_dir, resume=resume, record_history=False,
    )
    result = fit_head(
        net, x_train, data.y_train, x_val, data.y_val, optimizer=net.optimizer, batch_size=cfg.train.batch_size,
        epochs=epochs, seed=cfg.seed, frozen=frozen, first_epoch=loop.first_epoch, history=loop.history,
        callbacks=loop.callbacks, jit=t.jit_compile, verbose=verbose,
    )
    loop.finish()
    info.update(
        epochs=result.epochs, epoch_seconds=result.epoch_seconds, compiled=result.compiled, history=loop.history
    )
    return info


def accuracy_before(model: tf.keras.Model, plan: Plan, data: Dataset, task: Dataset, classes: list[int] | None) -> dict:
    """Where the transfer starts, on the task's evaluation images, in the summary's labelled keys.

    Head kept: the untouched model's accuracy (`accuracy_before`, `accuracy_before_untouched`).
    Head replaced: the new, still random head's (`accuracy_before`, `accuracy_before_new_head`), and
    the untouched model's on the same images with their original labels, where those labels fit
    its outputs (else None, and `accuracy_before_untouched_note` says why).
    """
    x, y, split = task.eval_split()
    if not plan.new_layers:
        kept = accuracy(model, x, y)
        return {"accuracy_before": kept, "accuracy_before_untouched": kept, "accuracy_before_new_head": None,
                "accuracy_before_untouched_note": None}
    new_head = accuracy(plan.model, x, y)
    x_old, y_old = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if classes is not None:
        keep = np.isin(y_old, classes)
        x_old, y_old = x_old[keep], y_old[keep]
    outputs = int(model.outputs[0].shape[-1])
    untouched, note = None, None
    if not len(y_old):
        note = "no evaluation images"
    elif int(y_old.max()) >= outputs:
        note = f"its {outputs} outputs do not cover these images' labels ({int(y_old.min())}..{int(y_old.max())})"
    else:
        untouched = accuracy(model, x_old, y_old)
    return {"accuracy_before": new_head, "accuracy_before_untouched": untouched,
            "accuracy_before_new_head": new_head, "accuracy_before_untouched_note": note}


def transfer(model: tf.keras.Model, data: Dataset, cfg: Config, verbose: int = 1, checkpoint_dir=None, resume=False):
    """Train the top of a copy of `model` on `data` as cfg.transfer says; return it and a summary.

    With `checkpoint_dir`, the head and the unfrozen training each checkpoint every epoch
    (its head/ and unfreeze/ folders); `resume` continues from there.
    """
    t = cfg.transfer
    reseed(cfg.seed)
    plan = prepare(model, cfg)
    task = select_task(data, t.classes, t.per_class)
    check_fits(plan.model, task, LABEL_HINT)
    x_eval, y_eval, split_name = task.eval_split()
    before = accuracy_before(model, plan, data, task, t.classes)
    never_trained = [layer for layer in plan.model.layers if layer.name not in plan.trainable + plan.unfreeze]
    frozen_weights = {layer.name: [w.copy() for w in layer.get_weights()] for layer in never_trained}
    lr = t.learning_rate or cfg.train.learning_rate
    with scratch_dir("features", t.cache_dir) as cache_dir:
        def checkpoint(name):
            return None if checkpoint_dir is None else Path(checkpoint_dir) / name

        head = train_layers(
            plan.model, plan.trainable, task, cfg, epochs=t.epochs, learning_rate=lr, cache_dir=cache_dir,
            verbose=verbose, checkpoint_dir=checkpoint("head"), resume=resume,
        )
        unfrozen = None
        if plan.unfreeze:
            unfrozen = train_layers(
                plan.model, plan.trainable + plan.unfreeze, task, cfg, epochs=t.unfreeze_epochs,
                learning_rate=t.unfreeze_learning_rate or lr / 10, cache_dir=cache_dir, verbose=verbose,
                checkpoint_dir=checkpoint("unfreeze"), resume=resume,
            )
    freeze(plan.model, [layer.name for layer in plan.model.layers])  # a plain model again
    unchanged = all(
        all(np.array_equal(a, b) for a, b in zip(frozen_weights[layer.name], layer.get_weights(), strict=True))
        for layer in never_trained
    )
    summary = {
        "stage": "transfer",
        "trainable_layers": plan.trainable,
        "frozen_layers": [layer.name for layer in never_trained if layer.weights],
        "new_layers": plan.new_layers,
        "inserted_layers": plan.inserted,
        "cached_features": head["cached_features"],
        **before,
        "accuracy_after": accuracy(plan.model, x_eval, y_eval),
        "accuracy_split": split_name,
        "optimizer": head["optimizer"],
        "learning_rate": head["learning_rate"],
        "epoch_seconds": head["epoch_seconds"],
        "head": {k: v for k, v in head.items() if k != "epoch_seconds"},
        "unfreeze": unfrozen,
        "frozen_weights_unchanged": unchanged,
        "pruned_kernels": count_pruned(masks_of(plan.model)),
        "masked_max_abs": masked_max_abs(plan.model),
        "classes": task.num_classes,
        "dataset": task.name,
        "test_dataset": task.test_name if len(task.x_test) else None,
        "split_sizes": task.sizes(),
        "params": int(plan.model.count_params()),
        "seed": cfg.seed,
    }
    return plan.model, summary


# The built-in demonstration: no download, MNIST digits only.
DEMO_OLD_CLASSES = [0, 1, 2, 3, 4]
DEMO_NEW_CLASSES = [5, 6, 7, 8, 9]
DEMO_PER_CLASS = 100


def run_demo(cfg: Config, data: Dataset, verbose: int = 1, say=print):
    """Pretrain the reference CNN on digits 0-4, transfer it to 5-9 from 100 images per class.

    transfer.per_class changes the 100; the other transfer settings apply as configured, with a
    new 5-class output layer. The same network trained from scratch on the same small set is the comparison; it gets
    as many epochs as the transfer's head and unfrozen layers had together (at least the train
    section's), and the accuracies are measured on the same held-out images (test split where
    given, else validation). Returns (transferred model, summary, pretrained model).

    Each of the three trainings is announced in one line and runs without per-epoch output
    (`verbose` > 0 only adds the phase lines; 120 unlabelled epoch blocks told a reader nothing).
    """
    import time

    from ..models import build_reference_cnn
    from ..training.fit import compile_model, fit

    old = select_task(data, DEMO_OLD_CLASSES)
    per_class = cfg.transfer.per_class or DEMO_PER_CLASS
    new = select_task(data, DEMO_NEW_CLASSES, per_class)
    model_cfg = replace(cfg.model, source="reference", num_classes=len(DEMO_OLD_CLASSES))
    # transfer() picks the new classes itself, so it knows their original labels (5-9, which the
    # pretrained model's 5 outputs cannot be compared on)
    t = replace(cfg.transfer, new_classes=len(DEMO_NEW_CLASSES), head=None, classes=DEMO_NEW_CLASSES,
                per_class=per_class)
    demo_cfg = replace(cfg, transfer=t)
    prepare(build_reference_cnn(model_cfg), demo_cfg)  # bad settings fail before any training

    def phase(text: str, start: float) -> float:
        if verbose:
            say(f"transfer demo {text} in {time.perf_counter() - start:.0f} s")
        return time.perf_counter()

    scratch_epochs = max(cfg.train.epochs, t.epochs + (t.unfreeze_epochs if t.unfreeze else 0))
    start = time.perf_counter()
    reseed(cfg.seed)
    pretrained = build_reference_cnn(model_cfg)
    compile_model(pretrained, optimizer_from(cfg.train), masked=False)
    pre = fit(
        pretrained, old, cfg.train.epochs, cfg.train.batch_size, patience=cfg.train.early_stopping_patience,
        verbose=0,
    )
    start = phase(f"1/3, pretrain: digits 0-4, {len(old.x_train)} images, {pre.epochs} epochs,", start)
    model, summary = transfer(pretrained, data, demo_cfg, verbose=0)
    start = phase(f"2/3, head: digits 5-9, {per_class} images per class, {t.epochs} epochs,", start)
    reseed(cfg.seed)
    scratch = build_reference_cnn(replace(model_cfg, num_classes=len(DEMO_NEW_CLASSES)))
    compile_model(scratch, optimizer_from(cfg.train), masked=False)
    fit(scratch, new, scratch_epochs, cfg.train.batch_size, verbose=0)
    phase(f"3/3, scratch: the same network from random weights, same images, {scratch_epochs} epochs,", start)
    x_eval, y_eval, split_name = new.eval_split()
    x_old, y_old, _ = old.eval_split()
    summary["demo"] = {
        "pretrained_on": DEMO_OLD_CLASSES,
        "transferred_to": DEMO_NEW_CLASSES,
        "images_per_class": per_class,
        "training_images": len(new.x_train),
        "pretrained_epochs": pre.epochs,
        "pretrained_accuracy": accuracy(pretrained, x_old, y_old),
        "transfer_accuracy": summary["accuracy_after"],
        "scratch_accuracy": accuracy(scratch, x_eval, y_eval),
        "scratch_epochs": scratch_epochs,
        "accuracy_split": split_name,
        "eval_images": len(x_eval),
    }
    return model, summary, pretrained
