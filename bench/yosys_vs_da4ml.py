"""da4ml estimate vs Yosys LUTs for a few small constant products (6-bit weights, ap_fixed<8,4> inputs).

    PYTHONPATH=. python bench/yosys_vs_da4ml.py
"""

from __future__ import annotations

import numpy as np

from fpgaprune.hw import yosys as ys


def kernel(shape, zero_fraction, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-31, 32, size=shape) / 32.0
    w[rng.random(shape) < zero_fraction] = 0
    return w


def main() -> None:
    tool = ys.find_yosys()
    print("| fan_in x fan_out | zeros | non-zero | da4ml LUT | Yosys LUT | CARRY4 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for shape, zf in (((16, 8), 0.75), ((16, 32), 0.75), ((16, 8), 0.25)):
        w = kernel(shape, zf)
        r = ys.check_kernel(w, (True, 3, 4), tool, timeout_s=300)
        print(f"| {shape[0]}x{shape[1]} | {zf:.0%} | {np.count_nonzero(w)} | {r['da4ml_lut']:.0f} | {r['lut']} | "
              f"{r['carry']} | {r['lut'] / r['da4ml_lut']:.2f} |")


if __name__ == "__main__":
    main()
