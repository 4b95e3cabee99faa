"""The report's sections: each builder reads the run's data and returns the blocks it shows.

A builder returns plain blocks (`blocks.py`), never markup; a stage that has not been run gives
a note saying which command makes it. Figures are drawn through `Figures.add`, which turns a
plot that cannot be drawn into a note.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import yaml

from ..analysis.counts import savings_text
from ..config import config_to_dict
from . import plots
from .blocks import details, fmt, heading, note, pre, table
from .data import BASELINE_RANKED, NOT_RUN, OPTIONAL_STAGES, SMALLEST_ROWS, STAGES, RunData
from .text import lut_savings_text, prune_cut


def not_run(what: str, how: str) -> dict:
    return note(f"{what}: {NOT_RUN}", code=how)


def layer_rows(columns: dict[str, dict]) -> list[dict]:
    """Rows {layer, column: value} from per-column {layer: value} dicts; the 'total' row last."""
    names = list(dict.fromkeys(n for values in columns.values() for n in values if n != "total"))
    if any("total" in values for values in columns.values()):
        names.append("total")
    return [{"layer": n, **{c: values.get(n) for c, values in columns.items()}} for n in names]


def config_section(run: RunData, figs) -> list[dict]:
    text = yaml.safe_dump(config_to_dict(run.cfg), sort_keys=False)
    return [details("the full config of this run (click to open)", [pre(text)])]


def stage_accuracy(stage: str, summary: dict) -> tuple[float | None, float | None]:
    """(validation, test) accuracy a stage recorded in its summary's common fields."""
    from ..results import result_of

    result = result_of(stage, summary)
    return (result.val_accuracy, result.test_accuracy) if result is not None else (None, None)


def _status(run: RunData, stage: str) -> str:
    source = run.stale.get(stage)
    return f"done, but older than {source}: re-run it" if source else "done"


RANKED_BY_PRUNE = "ranked inside the prune step"


def stages_section(run: RunData, figs) -> list[dict]:
    rows = []
    for stage, what in STAGES.items():
        s = run.summaries.get(stage)
        if s is None:
            if stage == "analysis" and run.summaries.get("pruned") is not None:
                rows.append({"stage": stage, "status": RANKED_BY_PRUNE,
                             "what": "accuracy with the kernels zeroed not measured (fpgaprune analyze)"})
            elif stage not in OPTIONAL_STAGES:
                rows.append({"stage": stage, "status": NOT_RUN, "what": what})
            continue
        val, test = stage_accuracy(stage, s)
        if stage.startswith("transfer") and s.get("trainable_layers"):
            what += f" (trained {', '.join(s['trainable_layers'])}; {s.get('classes', '?')} classes)"
        if (s.get("demo") or {}).get("scratch_accuracy") is not None:
            what += f"; the same network from scratch: {s['demo']['scratch_accuracy']:.4f}"
        rows.append({"stage": stage, "status": _status(run, stage), "val_accuracy": val, "test_accuracy": test,
                     "what": what})
    what = "fixed-point C simulation of the exported project"
    for backend, csim in run.csims.items():
        split = "val_accuracy" if str((csim or {}).get("split")).startswith("val") else "test_accuracy"
        name = f"C-sim ({backend})"
        status = _status(run, name) if csim else NOT_RUN
        rows.append({"stage": name, "status": status, split: (csim or {}).get("accuracy_csim"), "what": what})
    if not run.csims:
        rows.append({"stage": "C-sim", "status": NOT_RUN, "what": what})
    return [table(rows, ["stage", "status", "val_accuracy", "test_accuracy", "what"])]


def analysis_section(run: RunData, figs) -> list[dict]:
    from ..analysis.kernels import ranked_table

    summary, parts = run.summaries["analysis"], []
    if summary is None and run.summaries.get("pruned") is not None:
        parts.append(note(f"the prune step ranked the kernels by {run.cfg.prune.norm} magnitude itself; the "
                          "accuracy with them zeroed and no retraining was not measured", code="fpgaprune analyze"))
    elif summary is None:
        parts.append(not_run("analysis", "fpgaprune analyze"))
    else:
        parts += _analysis_summary(summary, figs)
    if run.norms:
        ranked = ranked_table(run.norms, run.masks)[:SMALLEST_ROWS]
        parts.append(heading(f"The {len(ranked)} smallest kernels as ranked ({run.cfg.prune.norm} norm of "
                             f"{run.norms_from})"))
        parts.append(table(ranked, ["rank", "layer", "cin", "cout", "magnitude", "pruned"]))
    return parts


def _analysis_summary(summary: dict, figs) -> list[dict]:
    kernels, quantiles = summary.get("kernels", {}), summary.get("magnitude_quantiles", {})
    rows = layer_rows({
        **{key: {k: v.get(key) for k, v in kernels.items()} for key in ("kernels", "pruned", "kept")},
        "MACs before": summary.get("macs_before", {}),
        "MACs after": summary.get("macs_after", {}),
        "median magnitude": {k: v.get("median") for k, v in quantiles.items()},
    })
    keys = ("norm", "normalize", "select", "threshold", "fraction")
    parts = [note("settings: " + ", ".join(f"{k} {fmt(summary.get(k))}" for k in keys)), table(rows)]
    zeroed, unpruned = summary.get("accuracy_zeroed"), summary.get("accuracy_unpruned")
    if zeroed and unpruned:
        parts.append(note(f"validation accuracy {fmt(unpruned.get('val_accuracy'))} unpruned, "
                          f"{fmt(zeroed.get('val_accuracy'))} with the proposed kernels zeroed (no retraining)."))
    sweep = summary.get("sensitivity_sweep")
    if sweep:
        base = (unpruned or {}).get("val_accuracy")
        parts.append(figs.add("sensitivity.png", "per-layer sensitivity (kernels zeroed, no retraining)",
                              lambda f: plots.sensitivity_curves(sweep, f, baseline=base)))
    return parts


def grid_choice(run: RunData) -> tuple[str, int]:
    """The kernel grid's layer and output channel, unless told: the most informative view.

    The layer with the most pruned kernels that still keeps some, and its output channel whose
    pruned fraction is nearest one half (the first such): a channel all pruned or all kept says little.
    """
    from ..masks import conv_layers

    layer, channel = run.grid_layer, run.grid_channel
    if layer is None:
        counts = {name: int(np.count_nonzero(m)) for name, m in run.masks.items() if np.count_nonzero(m)}
        mixed = {name: n for name, n in counts.items() if not run.masks[name].all()}
        pick = mixed or counts
        layer = max(pick, key=pick.get) if pick else None
    if layer is None:
        convs = conv_layers(run.models["baseline"])
        layer = convs[-1].name if convs else ""
    if channel is None:
        m = run.masks.get(layer)
        channel = int(np.argmin(np.abs(m.mean(axis=0) - 0.5))) if m is not None and m.any() else 0
    return layer, channel


def kernels_section(run: RunData, figs) -> list[dict]:
    if run.norms is None:
        return [not_run("baseline", "fpgaprune train")]
    p = run.cfg.prune
    threshold = p.threshold if p.select == "threshold" and run.norms_from == BASELINE_RANKED else None
    layer, channel = grid_choice(run)
    norms, marks = run.norms, run.masks
    parts = [
        note(f"{p.norm} magnitudes of {run.norms_from}, the values that chose the masks; "
             f"the final pruned kernels ({run.masks_from}) are marked."),
        figs.add("kernel_heatmap.png", f"{p.norm} magnitude of every 2-D kernel as ranked (x = pruned)",
                 lambda f: plots.kernel_heatmap(norms, f, marks)),
        figs.add("magnitude_histograms.png", "ranked magnitudes with the pruning cut",
                 lambda f: plots.magnitude_histograms(norms, f, marks, threshold=threshold)),
    ]
    ranked_baseline = run.norms_from == BASELINE_RANKED
    grid_model = run.models["baseline"] if ranked_baseline else run.models["pruned"]
    whose = "the baseline's" if ranked_baseline else "the pruned model's"
    parts.append(figs.add("kernel_grid.png", f"{whose} kernels of {layer}, output channel {channel} "
                          "(tile titles: the ranked magnitude)",
                          lambda f: plots.kernel_grid(grid_model, layer, channel, f, marks, norms=norms.get(layer))))
    if not ranked_baseline and run.baseline_norms is not None:
        base = run.baseline_norms
        parts += [
            heading("The baseline beside them (not what the last round ranked)"),
            figs.add("baseline_magnitude_histograms.png", "the baseline's magnitudes with the same final marks",
                     lambda f: plots.magnitude_histograms(base, f, marks)),
            figs.add("baseline_kernel_grid.png", f"the baseline's kernels of {layer}, output channel {channel}",
                     lambda f: plots.kernel_grid(run.models["baseline"], layer, channel, f, marks,
                                                 norms=base.get(layer))),
        ]
    return parts


def pruning_section(run: RunData, figs) -> list[dict]:
    s = run.summaries["pruned"]
    if s is None:
        return [not_run("pruning", "fpgaprune prune")]
    total, pruned = s.get("kernels_total", {}), s.get("kernels_pruned", {})
    kept = {n: t - pruned.get(n, 0) for n, t in total.items()}
    columns = {"kernels": total, "pruned": pruned, "kept": kept}
    if len(s.get("weights_total", {})) > 1:  # masked Dense layers: counted in weights, apart from conv kernels
        columns.update({"Dense weights": s["weights_total"], "weights pruned": s["weights_pruned"]})
    rows = layer_rows({**columns, "MACs before": s.get("macs_before", {}), "MACs after": s.get("macs_after", {})})
    cut = prune_cut(s)
    parts = [note(
        f"mode {s.get('mode')}; {s.get('accuracy_metric', 'accuracy')} {fmt(s.get('accuracy_baseline'))} before, "
        f"{fmt(s.get('accuracy_after'))} after; {savings_text(cut)} (pruned kernels removed); "
        f"largest |w| over pruned kernels: {fmt(s.get('masked_max_abs'))} (must be 0.0)."
    ), table(rows)]
    history = s.get("history") or []
    if history:
        rounds = [{**{k: v for k, v in r.items() if k not in ("kernels_pruned", "weights_pruned")},
                   "kernels pruned": sum((r.get("kernels_pruned") or {}).values()),
                   **({"dense weights pruned": sum(r["weights_pruned"].values())} if "weights_pruned" in r else {})}
                  for r in history]
        parts += [heading("Rounds"), table(rounds), figs.add(
            "accuracy_vs_fraction.png", "accuracy against the fraction pruned",
            lambda f: plots.accuracy_vs_fraction(history, f, floor=s.get("val_accuracy_floor"),
                                                  train_floor=s.get("train_accuracy_floor")))]
    if s.get("macs_before"):
        parts.append(figs.add("multiplications.png", "multiplications per layer before/after pruning",
                              lambda f: plots.multiplications(s["macs_before"], s["macs_after"], f, cut=cut)))
    return parts


def quantized_section(run: RunData, figs) -> list[dict]:
    s = run.summaries["quantized"]
    if s is None:
        return [not_run("quantization", "make hls")]
    accuracy = [
        {"model": "float (before quantization)", **(s.get("float") or {})},
        {"model": "quantized, before fine-tuning", **(s.get("quantized_before_finetune") or {})},
        {"model": f"quantized, after {s.get('finetune_epochs', '?')} fine-tuning epochs",
         "val_accuracy": s.get("val_accuracy"), "test_accuracy": s.get("test_accuracy")},
    ]
    bits = s.get("bits") or {}
    rows = layer_rows({
        "kind": {k: v.get("kind") for k, v in bits.items()},
        "quantizer": {k: v.get("quantizer") for k, v in bits.items()},
        "masked kernels": s.get("masked_kernels") or {},
        "zero quantized weights": s.get("zero_quantized_weights") or {},
    })
    parts = [table(accuracy, ["model", "val_accuracy", "test_accuracy"]), note(
        f"largest |w| over masked weights: {fmt(s.get('masked_max_abs_float'))} float, "
        f"{fmt(s.get('masked_max_abs_quantized'))} quantized (both must be 0.0)."
    ), table(rows)]
    if run.models["quantized"] is not None:
        parts.append(figs.add("quantized_weights.png", "quantized weight values per layer",
                              lambda f: plots.quantized_weights(run.models["quantized"], f)))
    return parts


CSIM_COLUMNS = [
    "backend", "split", "images", "argmax_agreement", "argmax_disagreements", "bit_exact",
    "bit_exact_images", "max_diff_lsb", "accuracy_csim", "accuracy_qkeras", "first_differing_layer",
    "compile_seconds", "images_per_second", "error",
]


def csim_section(run: RunData, figs) -> list[dict]:
    done = [{"backend": b, **s} for b, s in run.csims.items() if s]
    if not done:
        return [not_run("C-simulation", "make hls")]
    parts = [table(done, [c for c in CSIM_COLUMNS if any(c in row for row in done)])]
    for row in done:
        if row.get("differing_sources"):
            parts.append(note(f"{row['backend']}: generated sources differ from the export: "
                              f"{', '.join(row['differing_sources'])}"))
        if row.get("trace"):
            parts += [heading(f"{row['backend']}: per-layer trace of the worst images"), table(row["trace"])]
    return parts


def hardware_section(run: RunData, figs) -> list[dict]:
    """Every column the accounting rows have (new ones appear by themselves), headers in words."""
    parts = []
    for backend, acc in run.accounts.items():
        if not acc:
            continue
        if "error" in acc:
            parts.append(note(f"{backend}: could not read the exported project: {acc['error']}"))
            continue
        rows = acc.get("layers", [])
        total = {"name": "total", **(acc.get("total") or {})}
        cut = acc.get("conv_nonzero_mults_cut")
        parts += [heading(backend), note("a → b: unpruned → pruned, read from the exported weight files."),
                  table([*rows, total]), note(f"{savings_text(cut)}. {acc.get('model', '')}")]
        if acc.get("lut_equivalents_ratio"):
            parts.append(note(lut_savings_text(acc, "→") + "."))
        parts.extend(note(w) for w in acc.get("warnings", []))
        before = {r["name"]: r["mults_per_image_unpruned"] for r in rows}
        after = {r["name"]: r["mults_per_image"] for r in rows}
        parts.append(figs.add(
            f"multiplications_{backend}.png", f"{backend}: multiplications per layer in the exported weights",
            lambda f, b=before, a=after, c=cut: plots.multiplications(
                b, a, f, title="non-zero multiplications (exported weights)", cut=c),
        ))
    return parts or [not_run("hardware accounting", "make hls")]


def sweep_section(run: RunData, figs) -> list[dict]:
    """The sweep's Pareto front (fpgaprune.sweep.front.report_data: front.json and its plot)."""
    import shutil

    from ..sweep.front import report_data

    data = report_data(run.cfg.run_dir)
    if data is None:
        return [not_run("design-space sweep", "fpgaprune sweep")]
    plot = figs.add("pareto.png", f"accuracy against LUT-equivalents: {data['trials']} trials, the front in red",
                    lambda f: shutil.copyfile(data["plot_path"], f))
    keys = ["trial", "accuracy", "test_accuracy", "lut_equivalents", "dsp", "latency"]
    rows = [{**{k: r.get(k) for k in keys}, "C-sim bit-exact": (r.get("csim") or {}).get("bit_exact"),
             **r["params"]} for r in data["front"]]
    return [plot, table(rows)]


BUILDERS: dict[str, Callable[[RunData, object], list[dict]]] = {
    "stages": stages_section,
    "analysis": analysis_section,
    "kernels": kernels_section,
    "pruning": pruning_section,
    "quantized": quantized_section,
    "csim": csim_section,
    "hardware": hardware_section,
    "sweep": sweep_section,
    "config": config_section,
}
