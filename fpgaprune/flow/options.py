"""How a flow runs: the options every step reads, and the record of one step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import render


def say_plain(line: str) -> None:
    """Print a step's line in the library's words (the CLI passes its own printer)."""
    print(render(line, cli=False))


@dataclass(frozen=True)
class Options:
    """Per-invocation choices that are not part of the experiment (the config is)."""

    # Replace existing outputs (and start interrupted training over).
    force: bool = False
    # Continue interrupted training from its last epoch checkpoint.
    resume: bool = False
    # Keep existing outputs made from the same inputs instead of refusing (what `make hls` does).
    reuse: bool = False
    # A dataset whose test split gives the accuracy figures (e.g. mnist-t10k:PATH).
    test_data: str | None = None
    # Keras verbosity: 0 silent, 1 progress bars, 2 one line per epoch.
    verbose: int = 2
    # tqdm bars (gradual rounds, sensitivity, C-simulation), shown only where stderr is a terminal.
    progress: bool = False
    # C-simulate only the first N images (default: export.csim_images).
    csim_images: int | None = None
    # Rows of the analyzer's ranked table to print.
    table_rows: int = 15
    # The report's kernel grid (default: the most informative channel).
    report_layer: str | None = None
    report_channel: int | None = None
    # Vendor synthesis also runs C/RTL co-simulation.
    synth_cosim: bool = False
    # Where steps write the lines a person reads (the CLI prints them).
    say: Callable[[str], None] = field(default=say_plain, compare=False)


@dataclass(frozen=True)
class Step:
    """One named step of the flow: `run(run, cfg, options) -> StageResult`."""

    name: str
    run: Callable
    doc: str
    # The stage folder it saves (runs/<name>/<stage>/), if any.
    produces: str | None = None
    # Stages it reads; a missing baseline is trained first, any other missing input is an error.
    needs: tuple[str, ...] = ()
    # Checks every input before anything in the flow runs or is written.
    check: Callable | None = None
    # A training step with per-epoch checkpoints (honours resume / force).
    trains: bool = False
    # Part of start..stop ranges (optional steps run only when named).
    in_chain: bool = True
    # The stage its output is made from (cfg -> stage name): when that stage is made again, or
    # is newer, this output is stale and is made again rather than reused or refused.
    source: Callable | None = None
