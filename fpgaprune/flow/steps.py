"""The table of named steps, in pipeline order: what `run_flow` can run, start from or stop at.

A literal table, FINN-builder style: a step is found by its name here, and `make prune`,
`make hls`, every CLI command, the benchmarks and the notebooks run these same steps.
"""

from __future__ import annotations

from . import graph_steps as graph
from . import hw_steps as hw
from . import training_steps as tr
from .options import Step

STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("baseline", tr.baseline, "train the model the config describes", produces="baseline",
             check=tr.check_baseline, trains=True),
        Step("analyze", tr.analyze, "rank kernels by magnitude, propose masks, measure their cost",
             produces="analysis", needs=("baseline",), check=tr.check_selection),
        Step("prune", tr.prune, "zero the chosen kernels, retrain with them locked at 0.0", produces="pruned",
             needs=("baseline",), check=tr.check_prune, trains=True),
        Step("reduce", graph.reduce, "remove the channels and units the masks made dead (outputs unchanged)",
             produces="reduced", check=graph.check_reduce, source=lambda cfg: "pruned"),
        Step("transfer", tr.transfer, "retrain only the top layers on new data (optional)", produces="transfer",
             check=tr.check_transfer, trains=True, in_chain=False),
        Step("transfer-demo", tr.transfer_demo, "digits 0-4 -> 5-9 against training from scratch",
             produces="transfer-demo", in_chain=False),
        Step("quantize", hw.quantize, "QKeras fixed point, fine-tuned with the masks kept", produces="quantized",
             check=hw.check_quantize, trains=True, source=lambda cfg: cfg.quantize.start_from),
        Step("export", hw.export, "hls4ml project per backend, with test-bench data", check=hw.check_export),
        Step("csim", hw.csim, "g++ C-simulation against the QKeras model", check=hw.check_csim),
        Step("accounting", hw.accounting, "multipliers, DSPs and LUTs of the exported design",
             check=hw.check_accounting),
        Step("synth", hw.synth, "vendor HLS synthesis (Vivado / Vitis, where installed)", check=hw.check_synth,
             in_chain=False),
        Step("report", hw.report, "one HTML page with every plot and table of the run", check=hw.check_report),
    )
}
