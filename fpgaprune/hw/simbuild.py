"""A faster g++ build of a scratch copy of an HLS project, for C-simulation only.

hls4ml's build (`build_lib.sh`, `-O3 -fPIC`) spends most of the C-simulation on the
arbitrary-precision types, not on the design: every ap_int / ap_fixed operation ends in
`ap_private::clearUnusedBits()`, which is declared `volatile`, so g++ stores and reloads every
intermediate value through memory. Two changes to how the scratch copy is built, none to the
design (firmware/*.cpp, *.h, weights and test bench stay as exported):

- `firmware/ap_types/etc/ap_private.h`: a non-volatile overload of `clearUnusedBits()` with the
  same body, so values stay in registers; volatile objects still call the volatile one.
  About 5x on the reference design (bench/csim_speed.py, bench/RESULTS.md).
- `build_lib.sh`: `-march=native` (the fixed-point loops vectorize; about 2x more once the values
  are in registers) and `-ffp-contract=off`, so float code (activation tables, input
  conversion) rounds as without `-march`: no fused multiply-adds.

The outputs are bit-identical to hls4ml's own build (tests/test_simbuild.py checks it); the library
runs only on the machine that built it, which is where the simulation runs.

    build = speed_up_build(output_dir)   # after hls4ml's write, before its compile
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

AP_PRIVATE = Path("firmware/ap_types/etc/ap_private.h")
PLAIN_SIGNATURE = "INLINE void clearUnusedBits(void)"
VOLATILE_SIGNATURE = PLAIN_SIGNATURE + " volatile"
BUILD_SCRIPT = "build_lib.sh"
HLS4ML_CFLAGS = 'CFLAGS="-O3 -fPIC"'
FAST_FLAGS = ("-march=native", "-ffp-contract=off")


def speed_up_build(project: Path, gxx: str = "g++") -> dict:
    """Apply both changes to the written project in `project`; return what was applied.

    A change whose anchor is missing (another hls4ml version) is skipped, not forced: the
    build is then hls4ml's own for that part, and the returned dict says so.
    """
    overloads = add_nonvolatile_overloads(project / AP_PRIVATE)
    flags = [flag for flag in FAST_FLAGS if compiler_accepts(gxx, flag)]
    flags_applied = add_build_flags(project / BUILD_SCRIPT, flags)
    return {"ap_private_overloads": overloads, "extra_cflags": flags if flags_applied else []}


def add_nonvolatile_overloads(header: Path) -> int:
    """Put a non-volatile copy before each volatile `clearUnusedBits()`; return how many.

    Adds none when the header already has a non-volatile one (a second copy would not
    compile) or a body's braces do not close.
    """
    if not header.is_file():
        return 0
    text = header.read_text()
    if re.search(re.escape(PLAIN_SIGNATURE) + "(?! volatile)", text):
        return 0
    starts = [match.start() for match in re.finditer(re.escape(VOLATILE_SIGNATURE), text)]
    if not starts:
        return 0
    pieces, pos = [], 0
    for start in starts:
        end = _function_end(text, start)
        if end is None:
            return 0
        function = text[start:end]
        pieces += [text[pos:start], function.replace(" volatile", "", 1), "\n\n  ", function]
        pos = end
    header.write_text("".join([*pieces, text[pos:]]))
    return len(starts)


def _function_end(text: str, start: int) -> int | None:
    """The index just past the closing brace of the function whose signature starts at `start`."""
    depth, brace = 0, text.find("{", start)
    if brace == -1:
        return None
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return None


def compiler_accepts(gxx: str, flag: str) -> bool:
    """Whether `gxx` compiles an empty C++ file with `flag` (build_lib.sh probes -std the same way)."""
    try:
        proc = subprocess.run([gxx, "-Werror", flag, "-fsyntax-only", "-xc++", "-"], input="",
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def add_build_flags(script: Path, flags: list[str]) -> bool:
    """Append `flags` to hls4ml's CFLAGS line of `build_lib.sh`; False when it has no such line."""
    if not flags or not script.is_file():
        return False
    text = script.read_text()
    if HLS4ML_CFLAGS not in text:
        return False
    script.write_text(text.replace(HLS4ML_CFLAGS, f'{HLS4ML_CFLAGS[:-1]} {" ".join(flags)}"', 1))
    return True
