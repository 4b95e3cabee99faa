"""Property tests: any valid mask spec round-trips through YAML and masks; invalid ones are
rejected with the message that names their problem."""

import numpy as np
import pytest
import tensorflow as tf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpgaprune.errors import BadInput
from fpgaprune.spec import Keep, format_mask_spec, masks_to_spec, parse_mask_spec, shorter_spec, spec_to_masks

SHAPES = {"conv_a": (3, 5), "conv_b": (5, 4)}


@pytest.fixture(scope="module")
def two_conv_model():
    i = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(5, 3, name="conv_a")(i)
    x = tf.keras.layers.Conv2D(4, 3, name="conv_b")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    return tf.keras.Model(i, tf.keras.layers.Dense(2, name="head")(x))


def _pairs(shape):
    cins, couts = shape
    return st.lists(
        st.tuples(st.integers(0, cins - 1), st.integers(0, couts - 1)), unique=True, max_size=cins * couts
    )


valid_specs = st.fixed_dictionaries({}, optional={name: _pairs(shape) for name, shape in SHAPES.items()})
relaxed = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@relaxed
@given(spec=valid_specs)
def test_valid_specs_round_trip(two_conv_model, spec):
    text = format_mask_spec({k: sorted(v) for k, v in spec.items()})
    parsed = parse_mask_spec(yaml.safe_load(text) or {})
    masks = spec_to_masks(parsed, two_conv_model)
    for name, pairs in spec.items():
        assert masks[name].shape == SHAPES[name]
        assert int(masks[name].sum()) == len(pairs)
        assert all(masks[name][a, b] for a, b in pairs)
    assert masks_to_spec(masks) == {k: sorted(v) for k, v in spec.items()}


@relaxed
@given(spec=valid_specs)
def test_keep_form_round_trips_and_names_the_complement(two_conv_model, spec):
    """{keep: pairs} prunes every other kernel; written back, the shorter form gives the same masks."""
    raw = {k: {"keep": [list(p) for p in v]} for k, v in spec.items()}
    masks = spec_to_masks(parse_mask_spec(yaml.safe_load(yaml.safe_dump(raw)) or {}), two_conv_model)
    for name, pairs in spec.items():
        assert int((~masks[name]).sum()) == len(pairs) and not any(masks[name][a, b] for a, b in pairs)
    short = shorter_spec(masks)
    again = spec_to_masks(parse_mask_spec(yaml.safe_load(format_mask_spec(short)) or {}), two_conv_model)
    assert all(np.array_equal(again[k], masks[k]) for k in masks)
    for name, entry in short.items():  # whichever form lists fewer pairs
        listed = len(entry.pairs) if isinstance(entry, Keep) else len(entry)
        assert listed == min(int(masks[name].sum()), int((~masks[name]).sum()))


def test_a_98_percent_pruned_layer_is_written_as_its_kept_kernels():
    m = np.ones((32, 32), bool)
    m[np.arange(20), np.arange(20)] = False
    text = format_mask_spec(shorter_spec({"conv2": m}))
    assert "conv2: {keep: [[0, 0], [1, 1]," in text and text.count("[") < 50
    with pytest.raises(BadInput, match=r"conv2: expected \{keep"):
        parse_mask_spec({"conv2": {"kep": [[0, 0]]}})
    with pytest.raises(BadInput, match=r"conv2.keep\[0\]: expected a pair"):
        parse_mask_spec({"conv2": {"keep": [[0]]}})


@relaxed
@given(spec=valid_specs.filter(bool), data=st.data())
def test_out_of_range_index_is_rejected(two_conv_model, spec, data):
    name = data.draw(st.sampled_from(sorted(spec)))
    cins, couts = SHAPES[name]
    bad = data.draw(st.sampled_from([[cins, 0], [0, couts], [cins + 7, couts + 7]]))
    raw = {k: [list(p) for p in v] for k, v in spec.items()}
    raw[name] = [p for p in raw[name] if p != bad] + [bad]
    with pytest.raises(BadInput, match=rf"{name}: \[{bad[0]}, {bad[1]}\] is out of range"):
        spec_to_masks(parse_mask_spec(raw), two_conv_model)


@relaxed
@given(spec=valid_specs.filter(lambda s: any(s.values())), data=st.data())
def test_duplicate_entries_are_rejected(spec, data):
    name = data.draw(st.sampled_from(sorted(k for k, v in spec.items() if v)))
    raw = {k: [list(p) for p in v] for k, v in spec.items()}
    raw[name].append(list(raw[name][0]))
    with pytest.raises(BadInput, match="duplicate entry"):
        parse_mask_spec(raw)


@relaxed
@given(entry=st.one_of(
    st.integers(), st.text(max_size=3), st.lists(st.integers(0, 3), min_size=3, max_size=4),
    st.lists(st.integers(0, 3), max_size=1), st.tuples(st.floats(), st.floats()).map(list),
    st.just([True, 1]),
))
def test_wrong_nesting_is_rejected(entry):
    with pytest.raises(BadInput, match=r"conv_a\[0\]: expected a pair \[cin, cout\] of integers"):
        parse_mask_spec({"conv_a": [entry]})


@relaxed
@given(name=st.text(min_size=1, max_size=8).filter(lambda n: n not in SHAPES and n != "flat" and n != "head"))
def test_unknown_layer_is_rejected(two_conv_model, name):
    with pytest.raises(BadInput, match="no layer named"):
        spec_to_masks(parse_mask_spec({name: [[0, 0]]}), two_conv_model)


def test_non_conv_layer_and_structure_errors(two_conv_model):
    with pytest.raises(BadInput, match="'flat' is a Flatten, not a Conv2D or Dense layer"):
        spec_to_masks(parse_mask_spec({"flat": [[0, 0]]}), two_conv_model)
    with pytest.raises(BadInput, match="empty"):
        parse_mask_spec(None)
    with pytest.raises(BadInput, match="expected a mapping"):
        parse_mask_spec([["conv_a", 1]])
    with pytest.raises(BadInput, match="expected a list of"):
        parse_mask_spec({"conv_a": "29,13"})
    with pytest.raises(BadInput, match="negative index"):
        parse_mask_spec({"conv_a": [[-1, 0]]})
    assert np.count_nonzero(spec_to_masks(parse_mask_spec({"conv_a": None}), two_conv_model)["conv_a"]) == 0


def test_spec_file_errors(tmp_path):
    from fpgaprune.spec import read_mask_spec, write_mask_spec

    with pytest.raises(BadInput, match="no such file"):
        read_mask_spec(tmp_path / "none.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(BadInput, match="empty"):
        read_mask_spec(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("conv2: [[29, 13]\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        read_mask_spec(broken)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(BadInput, match="not a text file|not valid YAML"):
        read_mask_spec(binary)
    good = tmp_path / "good.yaml"
    write_mask_spec({"conv2": [(29, 13), (4, 7)]}, good)
    assert read_mask_spec(good) == {"conv2": [(4, 7), (29, 13)]}
    assert "W[:, :, cin, cout]" in good.read_text()


def test_duplicate_layer_in_a_spec_file_is_refused(tmp_path):
    """Listing a layer twice would keep only the second list: refused, naming both lines."""
    from fpgaprune.spec import read_mask_spec

    path = tmp_path / "spec.yaml"
    path.write_text("conv_a: [[0, 1]]\nconv_b: [[1, 1]]\nconv_a: [[2, 3]]\n")
    with pytest.raises(BadInput, match="spec.yaml: duplicate key 'conv_a' on lines 1 and 3"):
        read_mask_spec(path)
