"""What a target part holds (LUT, FF, DSP, BRAM), so an estimate can be checked against it.

The capacities are the vendors' data-sheet figures (AMD DS891 Zynq UltraScale+, DS190 Zynq-7000,
DS962 Alveo, DS923 Virtex UltraScale+, DS180 7 series) for the parts hls4ml's boards use and a
few common others; BRAM is in 36 Kb blocks. A part is matched by its device name, the part
number up to the package (xczu9eg-ffvb1156-2-e -> xczu9eg).

    fit_warnings({"lut": 74_800, "dsp": 0}, "xc7z020clg400-1")
    # ['warning: the design needs ~74,800 LUTs; xc7z020 has 53,200 (141%)']
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    lut: int
    ff: int
    dsp: int
    bram: int


CAPACITIES: dict[str, Capacity] = {
    "xc7z010": Capacity(17_600, 35_200, 80, 60),
    "xc7z020": Capacity(53_200, 106_400, 220, 140),  # PYNQ-Z2, ZedBoard
    "xc7z045": Capacity(218_600, 437_200, 900, 545),  # ZC706
    "xc7a35t": Capacity(20_800, 41_600, 90, 50),
    "xc7a100t": Capacity(63_400, 126_800, 240, 135),
    "xczu3eg": Capacity(70_560, 141_120, 360, 216),  # Ultra96
    "xczu7ev": Capacity(230_400, 460_800, 1_728, 312),  # ZCU104 / ZCU106
    "xczu9eg": Capacity(274_080, 548_160, 2_520, 912),  # ZCU102
    "xcku115": Capacity(663_360, 1_326_720, 5_520, 2_160),
    "xcvu9p": Capacity(1_182_240, 2_364_480, 6_840, 2_160),
    "xcvu13p": Capacity(1_728_000, 3_456_000, 12_288, 2_688),
    "xcu50": Capacity(872_000, 1_743_000, 5_952, 1_344),
    "xcu200": Capacity(1_182_000, 2_364_000, 6_840, 2_160),
    "xcu250": Capacity(1_728_000, 3_456_000, 12_288, 2_688),
    "xcu280": Capacity(1_304_000, 2_607_000, 9_024, 2_016),
}

_DEVICE = re.compile(r"^(xc(?:7[zak]\d{3}t?|zu\d+[a-z]{2}|ku\d+p?|vu\d+p|u\d+))", re.IGNORECASE)


def device_of(part: str) -> str | None:
    """The device a part number names (None when the pattern does not match)."""
    m = _DEVICE.match(part.lower())
    return m.group(1) if m else None


def capacity(part: str) -> Capacity | None:
    device = device_of(part)
    return CAPACITIES.get(device) if device else None


def fit_warnings(needs: dict[str, int], part: str) -> list[str]:
    """One line per estimated resource (lut, dsp) the part does not have enough of."""
    cap = capacity(part)
    if cap is None:
        return []
    words = {"lut": "LUTs", "dsp": "DSPs", "ff": "flip-flops", "bram": "BRAM blocks"}
    out = []
    for key, need in needs.items():
        have = getattr(cap, key)
        if need > have:
            out.append(f"warning: the design needs ~{need:,} {words[key]}; {device_of(part)} has {have:,} "
                       f"({need / have:.0%}); pick a larger part, prune more, or raise reuse factors")
    return out


def fit_summary(needs: dict[str, int], part: str) -> dict | None:
    """Per resource: estimated need, the part's capacity and the share (None for an unknown part)."""
    cap = capacity(part)
    if cap is None:
        return None
    out = {"device": device_of(part)}
    for key in ("lut", "ff", "dsp", "bram"):
        have = getattr(cap, key)
        need = needs.get(key)
        out[key] = {"capacity": have, "estimate": need, "share": None if need is None else need / have}
    return out
