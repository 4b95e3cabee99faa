"""Transfer: frozen layers untouched, zeros kept, cached == uncached, edits start as no-ops, bad input exits 2."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fpgaprune.checkpoint import TrainingCheckpoint
from fpgaprune.cli import main
from fpgaprune.config import Config, DataConfig, ModelConfig, TrainConfig, TransferConfig, config_to_dict
from fpgaprune.data import load_dataset
from fpgaprune.errors import BadInput
from fpgaprune.masks import apply_masks, masked_max_abs
from fpgaprune.models import build_reference_cnn, save_model
from fpgaprune.process import reseed
from fpgaprune.report.text import transfer_line
from fpgaprune.run import Run
from fpgaprune.training.fit import accuracy, compile_model, fit, optimizer_from
from fpgaprune.transfer.features import cache_features, split_at_trainable
from fpgaprune.transfer.stage import accuracy_before, freeze, prepare, select_task, transfer

from .conftest import error_lines, run_cli

TINY = ModelConfig(conv_filters=[4, 8], fc_units=16)
MASK = np.random.RandomState(0).rand(4, 8) < 0.5  # conv2: half of its 32 kernels pruned
pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with a baseline and a pruned stage (conv2 masked), trained briefly on 600 images."""
    root = tmp_path_factory.mktemp("transfer")
    cfg = Config(
        name="t",
        runs_dir=str(root / "runs"),
        model=TINY,
        train=TrainConfig(epochs=1, batch_size=32),
        transfer=TransferConfig(epochs=2, start_from="pruned"),
        data=DataConfig(limit=600),
    )
    data = load_dataset("mnist-5k", limit=600, seed=cfg.seed)
    reseed(0)
    model = build_reference_cnn(TINY)
    compile_model(model, optimizer_from(cfg.train), masked=False)
    fit(model, data, 3, 32, verbose=0)
    Run(cfg).save("baseline", model, {"stage": "baseline"})
    Run(cfg).save("pruned", apply_masks(model, {"conv2": MASK}), {"stage": "pruned"})
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return cfg, data, config_file


def with_transfer(cfg, **changes):
    return replace(cfg, transfer=replace(cfg.transfer, **changes))


def weights(model, names):
    return {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in names}


def same(a, b, atol=0.0):
    return all(np.allclose(x, y, rtol=0, atol=atol) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("train_last", [1, 2])
def test_cached_and_uncached_train_the_same_model_frozen_bit_identical(run, train_last):
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    frozen = ["conv1", "conv2"] + (["fc1"] if train_last == 1 else [])
    trained = ["fc1", "fc2"][-train_last:]
    before = weights(pruned, frozen + trained)

    results = {}
    for label, changes in {
        "memory": {"cache_features": True},
        "memmap": {"cache_features": True, "cache_memory_mb": 0},
        "uncached": {"cache_features": False},
    }.items():
        if label == "memmap" and train_last == 2:
            continue  # one memmap run is enough
        model, summary = transfer(pruned, data, with_transfer(cfg, train_last=train_last, **changes), verbose=0)
        results[label] = model.get_weights()
        assert summary["trainable_layers"] == trained
        assert summary["cached_features"] == (label != "uncached")
        assert summary["frozen_weights_unchanged"] is True
        # the dropout between fc1 and fc2 stays above the cut, in the head, where it is random
        if label != "uncached":
            assert summary["head"]["cut"] == ("relu_fc1" if train_last == 1 else "flatten")
            assert summary["head"]["cache_storage"] == label
        after = weights(model, frozen + trained)
        for name in frozen:  # bit-identical
            assert all(np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True)), name
        for name in trained:  # and the trained ones really moved
            assert not same(before[name], after[name], atol=1e-4), name
        kernel = model.get_layer("conv2").kernel.numpy()
        assert masked_max_abs(model) == 0.0 and np.all(kernel[:, :, MASK] == 0.0)

    # Same seed, same batch order, same dropout masks: the same weights. (Bit-identical on the
    # development machine; the tolerance only allows for a BLAS that sums differently per batch
    # size. A different batch order or dropout mask moves the weights by ~1e-2.)
    for label in results:
        assert same(results[label], results["uncached"], atol=1e-6), label


def test_freeze_removes_frozen_layers_from_trainable_variables(run):
    cfg, _, _ = run
    model, _ = Run(cfg).load("pruned")
    freeze(model, ["fc2"])
    assert {v.name.split("/")[0] for v in model.trainable_variables} == {"fc2"}


def test_random_layer_below_the_cut_falls_back_to_uncached(small_data):
    layers = tf.keras.layers
    x = inputs = layers.Input((28, 28, 1))
    x = layers.Conv2D(4, 3, name="conv1")(x)
    x = layers.GaussianNoise(0.1, name="noise")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(10, activation="softmax", name="fc")(x)
    model = tf.keras.Model(inputs, x)
    freeze(model, ["fc"])
    split = split_at_trainable(model)
    assert split.head is None and "'noise'" in split.reason and "random in training" in split.reason

    cfg = Config(model=TINY, train=TrainConfig(epochs=1), transfer=TransferConfig(epochs=1))
    before = model.get_layer("conv1").get_weights()
    trained, summary = transfer(model, small_data, cfg, verbose=0)
    assert summary["cached_features"] is False and "noise" in summary["head"]["uncached_reason"]
    assert same(before, trained.get_layer("conv1").get_weights())


def test_skip_connection_over_the_cut_falls_back():
    layers = tf.keras.layers
    inputs = layers.Input((8,))
    a = layers.Dense(8, name="a")(inputs)
    b = layers.Dense(8, name="b")(a)
    c = layers.Dense(8, name="c")(b)
    out = layers.Dense(2, name="out")(layers.Add(name="add")([a, c]))
    model = tf.keras.Model(inputs, out)
    freeze(model, ["c", "out"])
    split = split_at_trainable(model)
    assert split.head is None and "skip connection" in split.reason


def test_memmap_cache_is_a_file_with_the_same_features(tmp_path, run):
    cfg, data, _ = run
    model, _ = Run(cfg).load("baseline")
    freeze(model, ["fc2"])
    split = split_at_trainable(model)
    in_memory = cache_features(split.frozen, data.x_val)
    mapped = cache_features(split.frozen, data.x_val, memory_limit_mb=0, folder=tmp_path, name="val")
    assert isinstance(mapped, np.memmap) and (tmp_path / "val.npy").is_file()
    np.testing.assert_array_equal(in_memory, mapped)


def test_identity_and_scale_insertion_leave_predictions_unchanged(run):
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    x = data.x_val[:64]
    expected = pruned.predict(x, verbose=0)
    plan = prepare(pruned, with_transfer(cfg, insert_identity=True, insert_scale=["conv1", "conv2"]))
    assert plan.inserted == ["conv1_scale", "conv2_scale", "fc_identity"]
    names = [layer.name for layer in plan.model.layers]
    assert names.index("conv2_scale") == names.index("conv2") + 1
    assert names.index("fc_identity") == names.index("fc2") - 1
    np.testing.assert_array_equal(plan.model.predict(x, verbose=0), expected)


def test_training_only_the_inserted_layer(run):
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    before = weights(pruned, ["conv1", "conv2", "fc1", "fc2"])
    changes = with_transfer(cfg, insert_identity=True, train_inserted_only=True)
    model, summary = transfer(pruned, data, changes, verbose=0)
    assert summary["trainable_layers"] == ["fc_identity"] and summary["cached_features"]
    after = weights(model, ["conv1", "conv2", "fc1", "fc2"])
    assert all(same(before[n], after[n]) for n in before)
    kernel, bias = model.get_layer("fc_identity").get_weights()
    assert not np.array_equal(kernel, np.eye(len(kernel))) and np.abs(bias).max() > 0
    assert masked_max_abs(model) == 0.0


@pytest.mark.slow
def test_new_head_for_fewer_classes_reuses_the_rest(run):
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    changes = with_transfer(
        cfg, new_classes=3, classes=[7, 8, 9], per_class=50, train_last=2, epochs=15, learning_rate=0.01
    )
    model, summary = transfer(pruned, data, changes, verbose=0)
    assert model.output_shape == (None, 3) and summary["new_layers"] == ["fc2"]
    assert 100 < summary["split_sizes"]["train"] <= 150 and summary["classes"] == 3
    assert same(weights(pruned, ["conv1", "conv2"])["conv2"], model.get_layer("conv2").get_weights())
    assert summary["accuracy_after"] > max(0.6, summary["accuracy_before"])  # chance: 1/3
    # before: the new random head's accuracy, and the untouched model's on the same images (labels 7-9)
    assert summary["accuracy_before"] == summary["accuracy_before_new_head"]
    keep = np.isin(data.y_val, [7, 8, 9])
    assert summary["accuracy_before_untouched"] == accuracy(pruned, data.x_val[keep], data.y_val[keep])
    assert summary["accuracy_before_untouched_note"] is None
    assert (summary["optimizer"], summary["learning_rate"]) == ("adam", 0.01)
    assert (summary["head"]["optimizer"], summary["head"]["learning_rate"]) == ("adam", 0.01)
    line = transfer_line("out", summary)
    assert (f"validation accuracy {summary['accuracy_before_new_head']:.4f} (new random head) -> "
            f"{summary['accuracy_after']:.4f}; untouched model {summary['accuracy_before_untouched']:.4f} "
            "on the same images") in line


def test_accuracy_before_where_the_labels_do_not_fit_the_untouched_model(run):
    """A 3-output model moved to digits 7-9: its outputs cannot be compared on labels 7-9, so no figure."""
    cfg, data, _ = run
    reseed(0)
    small = build_reference_cnn(replace(TINY, num_classes=3))
    c = with_transfer(cfg, new_classes=3, classes=[7, 8, 9])
    plan = prepare(small, c)
    before = accuracy_before(small, plan, data, select_task(data, [7, 8, 9]), [7, 8, 9])
    assert before["accuracy_before_untouched"] is None and before["accuracy_before_new_head"] is not None
    assert before["accuracy_before_untouched_note"] == "its 3 outputs do not cover these images' labels (7..9)"
    summary = {**before, "accuracy_after": 0.9, "accuracy_split": "val", "head": {"cut": "x"}, "cached_features": True,
               "epoch_seconds": [0.1], "trainable_layers": ["fc2"]}
    assert transfer_line("out", summary).endswith(
        "(new random head) -> 0.9000; untouched model not comparable: its 3 outputs do not cover these images' "
        "labels (7..9)")
    # the head kept: the untouched model's own accuracy
    kept = accuracy_before(small, prepare(small, cfg), data, select_task(data, [0, 1, 2]), [0, 1, 2])
    x, y, _ = select_task(data, [0, 1, 2]).eval_split()
    assert kept["accuracy_before"] == kept["accuracy_before_untouched"] == accuracy(small, x, y)
    assert kept["accuracy_before_new_head"] is None


@pytest.mark.slow
def test_gradual_unfreezing_keeps_masks(run):
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    model, summary = transfer(pruned, data, with_transfer(cfg, train_last=2, unfreeze=1, unfreeze_epochs=1), verbose=0)
    assert summary["unfreeze"]["layers"] == ["conv2", "fc1", "fc2"]
    assert summary["unfreeze"]["cached_features"] and summary["unfreeze"]["cut"] == "pool1"
    assert same(pruned.get_layer("conv1").get_weights(), model.get_layer("conv1").get_weights())
    assert not same(pruned.get_layer("conv2").get_weights(), model.get_layer("conv2").get_weights(), atol=1e-5)
    kernel = model.get_layer("conv2").kernel.numpy()
    assert np.all(kernel[:, :, MASK] == 0.0) and masked_max_abs(model) == 0.0
    assert summary["masked_max_abs"] == 0.0 and summary["pruned_kernels"] == {"conv2": int(MASK.sum())}
    # the head trains as one XLA computation per epoch; conv2 + pool2 cannot (XLA has no
    # deterministic MaxPool gradient), so the unfrozen stage says so and runs in graph mode
    assert summary["head"]["compiled"] == "xla"
    assert summary["unfreeze"]["compiled"].startswith("graph (XLA: ") and "MaxPool" in summary["unfreeze"]["compiled"]


@pytest.mark.slow
def test_interrupted_transfer_resumes_to_the_same_model(run, tmp_path, monkeypatch):
    """Ctrl-C right after a checkpoint, in the head stage and in the unfreeze stage; --resume
    then ends with the weights and history of an unbroken run."""
    cfg, data, _ = run
    pruned, _ = Run(cfg).load("pruned")
    c = with_transfer(cfg, train_last=2, epochs=4, unfreeze=1, unfreeze_epochs=3)
    unbroken, expected = transfer(pruned, data, c, verbose=0)
    real_save = TrainingCheckpoint.save
    for stage, epoch in (("head", 1), ("unfreeze", 0)):

        def save_then_interrupt(self, e, history, finished=False, stage=stage, epoch=epoch):
            real_save(self, e, history, finished)
            if self.folder.name == stage and e == epoch and not finished:
                raise KeyboardInterrupt

        ckpt = tmp_path / stage
        monkeypatch.setattr(TrainingCheckpoint, "save", save_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            transfer(pruned, data, c, verbose=0, checkpoint_dir=ckpt)
        monkeypatch.undo()
        assert json.loads((ckpt / stage / "state.json").read_text())["epoch"] == epoch + 1
        resumed, summary = transfer(pruned, data, c, verbose=0, checkpoint_dir=ckpt, resume=True)
        for a, b in zip(unbroken.get_weights(), resumed.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert summary["head"]["history"] == expected["head"]["history"]
        assert summary["unfreeze"]["history"] == expected["unfreeze"]["history"]
        assert summary["masked_max_abs"] == 0.0


def test_select_task_renumbers_and_limits(small_data):
    task = select_task(small_data, classes=[5, 6], per_class=7)
    assert sorted(np.bincount(task.y_train)) == [7, 7] and set(task.y_val) <= {0, 1}
    keep = np.isin(small_data.y_val, [5, 6])
    np.testing.assert_array_equal(task.y_val, small_data.y_val[keep] - 5)
    with pytest.raises(BadInput, match="lists a class twice"):
        select_task(small_data, classes=[5, 5])


@pytest.mark.slow
def test_cli_transfer_writes_summary(run, capsys):
    cfg, _, config_file = run
    assert main(["transfer", "--config", str(config_file), "--quiet", "--train-last", "1"]) == 0
    summary = json.loads((cfg.run_dir / "transfer" / "summary.json").read_text())
    for key in ("trainable_layers", "cached_features", "accuracy_before", "accuracy_after", "epoch_seconds"):
        assert key in summary
    assert summary["trainable_layers"] == ["fc2"] and summary["cached_features"] is True
    assert summary["start_from"] == "pruned" and len(summary["epoch_seconds"]) == 2
    loaded, _ = Run(cfg).load("transfer")
    assert masked_max_abs(loaded) == 0.0 and all(layer.trainable for layer in loaded.layers)
    out = capsys.readouterr().out
    assert "cached features below 'relu_fc1'" in out, out
    before, after = summary["accuracy_before"], summary["accuracy_after"]
    assert f"validation accuracy {before:.4f} (untouched model) -> {after:.4f}" in out
    assert summary["accuracy_before_untouched"] == summary["accuracy_before"]
    assert summary["optimizer"] == "adam" and summary["learning_rate"] == cfg.train.learning_rate
    assert main(["transfer", "--config", str(config_file), "--quiet"]) == 2  # exists, no --force
    assert not (cfg.run_dir / ".checkpoints").exists()  # removed once the stage is saved
    assert main(["transfer", "--config", str(config_file), "--quiet", "--force", "--resume"]) == 2
    assert "no interrupted run to resume" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    head = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(3, activation="softmax")])
    save_model(head, root / "head.h5")
    rng = np.random.RandomState(0)
    np.savez(
        root / "rgb.npz",
        x_train=rng.rand(20, 32, 32, 3), y_train=rng.randint(0, 10, 20),
        x_test=rng.rand(5, 32, 32, 3), y_test=rng.randint(0, 10, 5),
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--above", "conv9"], "transfer.above: no layer named 'conv9'"),
        (["--above", "softmax"], "nothing would train"),
        (["--set", "transfer.head={files}/head.h5"], "the new head takes inputs of shape (64,)"),
        (["--set", "transfer.dataset=npz:{files}/rgb.npz"], "images are (32, 32, 3), but the model takes (28, 28, 1)"),
        (
            ["--set", "transfer.classes=[5,6]", "--set", "transfer.insert_scale=[fc1]"],
            "'fc1' outputs (None, 16), not an image",
        ),
        (["--set", "transfer.unfreeze=5"], "transfer.unfreeze: 5 layers asked for, only 3 are frozen"),
        (["--set", "transfer.train_inserted_only=true"], "nothing is inserted"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(run, bad_files, capsys, args, fragment):
    cfg, _, config_file = run
    before = sorted(p.relative_to(cfg.run_dir) for p in cfg.run_dir.rglob("*"))
    args = [a.replace("{files}", str(bad_files)) for a in args]
    code = main(["transfer", "--config", str(config_file), "--quiet", "--force", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert sorted(p.relative_to(cfg.run_dir) for p in cfg.run_dir.rglob("*")) == before


@pytest.mark.slow
def test_cli_missing_stage_exits_2_in_a_real_process(tmp_path):
    proc = run_cli("transfer", "--set", f"runs_dir={tmp_path}", "--quiet")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "no saved pruned stage" in line and "--from baseline" in line
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_demo_transfers_digits_0_4_to_5_9(tmp_path, t10k_path):
    proc = run_cli(
        "transfer", "--demo", "--quiet", "--set", f"runs_dir={tmp_path}", "--test-data", f"mnist-t10k:{t10k_path}",
        "--set", "train.epochs=5", "--set", "transfer.epochs=20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "mnist_cnn" / "transfer-demo" / "summary.json").read_text())
    demo = summary["demo"]
    assert demo["training_images"] == 500 and demo["accuracy_split"] == "test" and demo["eval_images"] > 4000
    assert demo["pretrained_accuracy"] > 0.95 and demo["transfer_accuracy"] > 0.85 and demo["scratch_accuracy"] > 0.8
    assert summary["cached_features"] and (tmp_path / "mnist_cnn" / "transfer-demo" / "pretrained.h5").is_file()
    assert "transfer" in proc.stdout and "from scratch" in proc.stdout
    # the pretrained 5-output model cannot be scored on labels 5-9; the new head's start is labelled
    assert summary["accuracy_before_untouched"] is None and summary["accuracy_before_new_head"] is not None
    assert summary["accuracy_before_untouched_note"] == "its 5 outputs do not cover these images' labels (5..9)"
    assert "(new random head)" in proc.stdout and "untouched model not comparable" in proc.stdout


def test_demo_verdict_says_which_way_the_comparison_went():
    from fpgaprune.report.text import demo_line

    summary = {"trainable_layers": ["fc1", "fc2"], "demo": {
        "images_per_class": 100, "eval_images": 4861, "accuracy_split": "test",
        "transfer_accuracy": 0.9528, "scratch_accuracy": 0.9646, "scratch_epochs": 50}}
    below = demo_line(summary)
    assert "transfer is 1.18 points below scratch" in below and "fc1, fc2" in below
    summary["demo"]["transfer_accuracy"] = 0.97
    assert "0.54 points above scratch" in demo_line(summary)
