"""The faster C-simulation build: the same outputs as hls4ml's own build, bit for bit."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from fpgaprune.config import parse_config
from fpgaprune.hw.csim import compile_copy, load_hls_model, predict
from fpgaprune.hw.export import export_project, write_project
from fpgaprune.hw.simbuild import FAST_FLAGS, add_build_flags, add_nonvolatile_overloads

from .conftest import conv_tanh_dense

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")

HEADER = """struct ap_private {
  INLINE void clearUnusedBits(void) volatile
#if defined(__clang__)
      __attribute__((no_sanitize("undefined")))
#endif
  {
    VAL = (ValType)(_AP_S ? ((int64_t)VAL << 3) >> 3 : VAL);
  }
  INLINE void set() { VAL = ~0ULL; clearUnusedBits(); }
};
"""


def test_overload_is_added_once_and_keeps_the_volatile_one(tmp_path):
    header = tmp_path / "ap_private.h"
    header.write_text(HEADER)
    assert add_nonvolatile_overloads(header) == 1
    text = header.read_text()
    assert text.count("INLINE void clearUnusedBits(void) volatile") == 1
    assert text.count("INLINE void clearUnusedBits(void)\n") == 1
    assert text.count("VAL = (ValType)(_AP_S ? ((int64_t)VAL << 3) >> 3 : VAL);") == 2
    assert text.index("clearUnusedBits(void)\n") < text.index("clearUnusedBits(void) volatile")
    assert add_nonvolatile_overloads(header) == 0 and header.read_text() == text  # a second copy would not compile
    assert add_nonvolatile_overloads(tmp_path / "missing.h") == 0
    header.write_text(HEADER.split("  INLINE void set()")[0].replace("  }\n", ""))  # a body that never closes
    assert add_nonvolatile_overloads(header) == 0 and "clearUnusedBits(void)\n" not in header.read_text()


def test_flags_go_on_hls4mls_cflags_line_only(tmp_path):
    script = tmp_path / "build_lib.sh"
    script.write_text('CC=g++\nCFLAGS="-O3 -fPIC"\nCFLAGS+=" -std=c++11"\n')
    assert add_build_flags(script, ["-march=native"])
    assert script.read_text() == 'CC=g++\nCFLAGS="-O3 -fPIC -march=native"\nCFLAGS+=" -std=c++11"\n'
    script.write_text('CFLAGS="-O2"\n')  # not hls4ml's line: left alone
    assert not add_build_flags(script, ["-march=native"]) and script.read_text() == 'CFLAGS="-O2"\n'


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["io_stream", "io_parallel"])
def test_fast_build_predicts_exactly_what_hls4ml_predicts(tmp_path, io_type):
    """A conv, a tanh (a float-built lookup table) and a dense head: every output identical."""
    qmodel = conv_tanh_dense(4, 5, seed=2)
    cfg = parse_config({"name": "fb", "export": {"output_dir": str(tmp_path / "hls"), "io_type": io_type}})
    images = np.random.RandomState(0).rand(300, 8, 8, 1).astype(np.float32)
    folder = export_project(qmodel, cfg, "Vivado", images[:2])

    own = load_hls_model(folder, tmp_path / "own")
    with contextlib.redirect_stdout(io.StringIO()):
        write_project(own)
        own._compile()  # hls4ml's own build, untouched
        expected = np.asarray(own.predict(images)).reshape(len(images), -1)
    assert len(np.unique(expected)) > 100  # outputs that can differ, not a constant
    fast = compile_copy(folder, tmp_path / "fast")

    assert fast.build["ap_private_overloads"] == 2
    assert "-ffp-contract=off" in fast.build["extra_cflags"] and set(fast.build["extra_cflags"]) <= set(FAST_FLAGS)
    assert fast.differing == []
    np.testing.assert_array_equal(predict(fast.hls_model, images, workers=2), expected)
    if io_type == "io_stream":  # export.csim_build: hls4ml compiles the copy as hls4ml does, untouched
        plain = compile_copy(folder, tmp_path / "plain", fast=False)
        assert plain.build == {} and plain.differing == []
        np.testing.assert_array_equal(predict(plain.hls_model, images), expected)
