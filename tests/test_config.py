"""Config validation: typed objects, key paths in errors, suggestions for typos."""

import pytest
import yaml

from fpgaprune.config import Config, load_config, parse_config
from fpgaprune.errors import BadInput

from .conftest import ROOT


def test_reference_config_loads():
    cfg = load_config(ROOT / "configs" / "mnist_cnn.yaml")
    assert cfg.name == "mnist_cnn"
    assert cfg.model.conv_filters == [32, 32]
    assert cfg.model.kernel_size == 3
    assert cfg.data.dataset == "mnist-5k"
    assert cfg.train.optimizer in ("sgd", "adam", "rmsprop")


def test_defaults_when_sections_missing():
    cfg = parse_config({"name": "x"})
    assert cfg == Config(name="x")


def test_ints_accepted_for_floats():
    cfg = parse_config({"train": {"learning_rate": 1}})
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown key (did you mean 'epochs'?)"),
        ({"train": {"epochs": -1}}, "train.epochs: -1 is below the minimum 1"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer"),
        ({"train": {"optimizer": "adamw"}}, "train.optimizer: 'adamw' is not one of"),
        ({"train": {"optimizer": "adm"}}, "did you mean 'adam'?"),
        ({"train": {"learning_rate": ".nan"}}, "train.learning_rate: expected a number"),
        ({"train": {"nesterov": True, "optimizer": "adam"}}, "train.nesterov: only applies to optimizer 'sgd'"),
        ({"train": {"nesterov": "yes"}}, "train.nesterov: expected true or false"),
        ({"prune": {"fraction": 1.5}}, "prune.fraction: 1.5 is above the maximum 1.0"),
        ({"prune": {"select": "threshold"}}, "prune.threshold: select is 'threshold' but no threshold"),
        ({"prune": {"budget_splits": ["test"]}}, "prune.budget_splits[0]: 'test' is not one of"),
        ({"prune": {"budget_splits": []}}, "prune.budget_splits: expected validation, training or both"),
        ({"prune": {"budget_splits": ["training", "training"]}}, "each once, got ['training', 'training']"),
        ({"data": {"validation_fraction": 0}}, "data.validation_fraction: 0.0 is below the minimum 0.01"),
        ({"model": {"conv_filters": [32, -1]}}, "model.conv_filters: -1 is below the minimum 1"),
        ({"model": {"conv_filters": 32}}, "model.conv_filters: expected a list"),
        ({"model": {"source": "s3://x"}}, "model.source: 's3://x' is not 'reference'"),
        ({"name": "../evil"}, "name: '../evil' must use only"),
        ({"quantize": {"weight_bits": 1}}, "quantize.weight_bits: 1 is below the minimum 2"),
        ({"export": {"io_type": "io_serial"}}, "export.io_type: 'io_serial' is not one of"),
        (["not", "a", "mapping"], "config: expected a mapping"),
        ({"train": 5}, "train: expected a mapping"),
    ],
)
def test_bad_config_names_the_key(data, fragment):
    with pytest.raises(BadInput) as info:
        parse_config(data)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_load_config_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(BadInput, match="no such file"):
        load_config(missing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(BadInput, match="the file is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: 3\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_config(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"train": {"batchsize": 3}}))
    with pytest.raises(BadInput, match=r"typo.yaml: train.batchsize: unknown key \(did you mean 'batch_size'\?\)"):
        load_config(typo)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train: {epochs: 3}\nprune: {fraction: 0.5}\ntrain: {batch_size: 8}\n",
         "duplicate key 'train' on lines 1 and 3"),
        ("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 4\n", "duplicate key 'epochs' on lines 2 and 4"),
        ("train: {epochs: 3, epochs: 4}\n", "duplicate key 'epochs' twice on line 1"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, fragment):
    """PyYAML would keep the last value without a word."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        load_config(path)
    assert f"dup.yaml: {fragment} (YAML would keep only the last; remove one)" in str(info.value)


def test_yaml_merge_keys_still_override(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("train:\n  epochs: 2\nquantize:\n  <<: {epochs: 5}\n  epochs: 1\n")
    assert load_config(path).quantize.epochs == 1


def test_exponents_without_a_dot_are_numbers_in_files_and_overrides(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-4 as a string; a config file and --set read it as 0.0001."""
    from fpgaprune_cli import build_parser
    from fpgaprune_cli.commands.common import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("prune:\n  group_lasso: 1e-4\n  l1: 5E-6\n  learning_rate: 3.0e-4\n")
    cfg = load_config(path)
    assert (cfg.prune.group_lasso, cfg.prune.l1, cfg.prune.learning_rate) == (1e-4, 5e-6, 3e-4)
    args = build_parser().parse_args(["prune", "--config", str(path), "--set", "prune.l1=2e-5",
                                      "--set", "name=1e3run"])
    cfg = config_from_args(args)
    assert cfg.prune.l1 == 2e-5 and cfg.name == "1e3run"  # a name is not a number
