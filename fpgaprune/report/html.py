"""The run report: one self-contained HTML page showing what every stage of a run did.

`write_report(cfg)` reads whatever stages `runs/<name>/` holds (and the HLS projects under
`export.output_dir/<name>/`), draws the plots of `plots.py`, and writes
`runs/<name>/report/index.html` with the PNGs beside it and embedded in it, so the page can be
mailed or opened anywhere. A stage that has not been run shows "not run yet"; a plot that
cannot be drawn says why, and the rest of the page is still written.

    path = write_report(cfg)      # runs/mnist_cnn/report/index.html
"""

from __future__ import annotations

import base64
import html
import json
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..config import Config, config_to_dict
from ..errors import BadInput, FpgapruneError, option, run_step
from ..io import atomic_dir
from . import plots
from .data import (
    NOT_RUN,
    OPTIONAL_STAGES,
    PAGE,
    SECTIONS,
    SMALLEST_ROWS,
    STAGES,
    RunData,
    read_run,
    report_dir,
)

# ---------------------------------------------------------------- HTML pieces


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return f"<code>{_esc(json.dumps(value))[:300]}</code>"
    return _esc(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """An HTML table of dict rows (columns: the union of keys, in first-seen order)."""
    if not rows:
        return _note("(empty)")
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def layer_rows(columns: dict[str, dict]) -> list[dict]:
    """Rows {layer, column: value} from per-column {layer: value} dicts; the 'total' row last."""
    names = list(dict.fromkeys(n for values in columns.values() for n in values if n != "total"))
    if any("total" in values for values in columns.values()):
        names.append("total")
    return [{"layer": n, **{c: values.get(n) for c, values in columns.items()}} for n in names]


def _note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


def _not_run(what: str, how: str) -> str:
    return _note(f"{what}: {NOT_RUN} (<code>{how}</code>).")


class Figures:
    """Draws plots into the report folder; returns each as an embedded <figure>."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, name: str, caption: str, draw: Callable[[Path], object]) -> str:
        path = self.folder / name
        try:
            draw(path)
        except Exception as exc:  # one bad plot must not cost the whole report
            detail = str(exc) if isinstance(exc, FpgapruneError) else traceback.format_exception_only(exc)[-1]
            return _note(f"could not draw {_esc(caption)}: {_esc(' '.join(detail.split()))}")
        data = base64.b64encode(path.read_bytes()).decode()
        return (
            f"<figure><img src='data:image/png;base64,{data}' alt='{_esc(name)}'>"
            f"<figcaption>{_esc(caption)} (<a href='{_esc(name)}'>{_esc(name)}</a>)</figcaption></figure>"
        )


# ---------------------------------------------------------------- sections


def config_section(run: RunData, figs: Figures) -> str:
    return f"<pre>{_esc(yaml.safe_dump(config_to_dict(run.cfg), sort_keys=False))}</pre>"


def stage_accuracy(stage: str, summary: dict) -> tuple[float | None, float | None]:
    """(validation, test) accuracy a stage recorded in its summary's common fields."""
    from ..results import result_of

    result = result_of(stage, summary)
    return (result.val_accuracy, result.test_accuracy) if result is not None else (None, None)


def _status(run: RunData, stage: str) -> str:
    source = run.stale.get(stage)
    return f"done, but older than {source}: re-run it" if source else "done"


def stages_section(run: RunData, figs: Figures) -> str:
    rows = []
    for stage, what in STAGES.items():
        s = run.summaries.get(stage)
        if s is None:
            if stage not in OPTIONAL_STAGES:
                rows.append({"stage": stage, "status": NOT_RUN, "what": what})
            continue
        val, test = stage_accuracy(stage, s)
        if stage.startswith("transfer") and s.get("trainable_layers"):
            what += f" (trained {', '.join(s['trainable_layers'])}; {s.get('classes', '?')} classes)"
        if (s.get("demo") or {}).get("scratch_accuracy") is not None:
            what += f"; the same network from scratch: {s['demo']['scratch_accuracy']:.4f}"
        status = _status(run, stage)
        rows.append({"stage": stage, "status": status, "validation accuracy": val, "test accuracy": test, "what": what})
    what = "fixed-point C simulation of the exported project"
    for backend, csim in run.csims.items():
        split = "validation accuracy" if str((csim or {}).get("split")).startswith("val") else "test accuracy"
        name = f"C-sim ({backend})"
        status = _status(run, name) if csim else NOT_RUN
        rows.append({"stage": name, "status": status, split: (csim or {}).get("accuracy_csim"), "what": what})
    if not run.csims:
        rows.append({"stage": "C-sim", "status": NOT_RUN, "what": what})
    return table(rows, ["stage", "status", "validation accuracy", "test accuracy", "what"])


def analysis_section(run: RunData, figs: Figures) -> str:
    from ..analysis.kernels import ranked_table

    summary, parts = run.summaries["analysis"], []
    if summary is None:
        parts.append(_not_run("analysis", "fpgaprune analyze"))
    else:
        kernels, quantiles = summary.get("kernels", {}), summary.get("magnitude_quantiles", {})
        rows = layer_rows({
            **{key: {k: v.get(key) for k, v in kernels.items()} for key in ("kernels", "pruned", "kept")},
            "MACs before": summary.get("macs_before", {}),
            "MACs after": summary.get("macs_after", {}),
            "median magnitude": {k: v.get("median") for k, v in quantiles.items()},
        })
        keys = ("norm", "normalize", "select", "threshold", "fraction")
        settings = ", ".join(f"{k} {_fmt(summary.get(k))}" for k in keys)
        parts += [_note(f"settings: {settings}"), table(rows)]
        zeroed, unpruned = summary.get("accuracy_zeroed"), summary.get("accuracy_unpruned")
        if zeroed and unpruned:
            parts.append(_note(
                f"validation accuracy {_fmt(unpruned.get('val_accuracy'))} unpruned, "
                f"{_fmt(zeroed.get('val_accuracy'))} with the proposed kernels zeroed (no retraining)."
            ))
        sweep = summary.get("sensitivity_sweep")
        if sweep:
            base = (unpruned or {}).get("val_accuracy")
            parts.append(figs.add("sensitivity.png", "per-layer sensitivity (kernels zeroed, no retraining)",
                                  lambda f: plots.sensitivity_curves(sweep, f, baseline=base)))
    if run.norms:
        ranked = ranked_table(run.norms, run.masks)[:SMALLEST_ROWS]
        parts.append(f"<h3>The {len(ranked)} smallest kernels of the baseline ({_esc(run.cfg.prune.norm)} norm)</h3>")
        parts.append(table(ranked, ["rank", "layer", "cin", "cout", "magnitude", "pruned"]))
    return "".join(parts)


def _grid_choice(run: RunData) -> tuple[str, int]:
    """The kernel grid shows the output channel with the most pruned kernels, unless told."""
    from ..masks import conv_layers

    layer, channel = run.grid_layer, run.grid_channel
    if layer is None:
        counts = {name: int(np.count_nonzero(m)) for name, m in run.masks.items()}
        layer = max(counts, key=counts.get) if counts and max(counts.values()) > 0 else None
    if layer is None:
        convs = conv_layers(run.models["baseline"])
        layer = convs[-1].name if convs else ""
    if channel is None:
        m = run.masks.get(layer)
        channel = int(np.argmax(m.sum(axis=0))) if m is not None and m.any() else 0
    return layer, channel


def kernels_section(run: RunData, figs: Figures) -> str:
    if run.norms is None:
        return _not_run("baseline", "fpgaprune train")
    p = run.cfg.prune
    threshold = p.threshold if p.select == "threshold" else None
    layer, channel = _grid_choice(run)
    return _note(f"magnitudes of the baseline's kernels; pruned kernels ({_esc(run.masks_from)}) marked.") + "".join([
        figs.add("kernel_heatmap.png", f"{p.norm} magnitude of every 2-D kernel (x = pruned)",
                 lambda f: plots.kernel_heatmap(run.norms, f, run.masks)),
        figs.add("magnitude_histograms.png", "magnitude histograms with the pruning cut",
                 lambda f: plots.magnitude_histograms(run.norms, f, run.masks, threshold=threshold)),
        figs.add("kernel_grid.png", f"the baseline's kernels of {layer}, output channel {channel}",
                 lambda f: plots.kernel_grid(run.models["baseline"], layer, channel, f, run.masks)),
    ])


def pruning_section(run: RunData, figs: Figures) -> str:
    s = run.summaries["pruned"]
    if s is None:
        return _not_run("pruning", "fpgaprune prune")
    total, pruned = s.get("kernels_total", {}), s.get("kernels_pruned", {})
    kept = {n: t - pruned.get(n, 0) for n, t in total.items()}
    rows = layer_rows({"kernels": total, "pruned": pruned, "kept": kept,
                       "MACs before": s.get("macs_before", {}), "MACs after": s.get("macs_after", {})})
    out = _note(
        f"mode {_esc(s.get('mode'))}; {_esc(s.get('accuracy_metric', 'accuracy'))} "
        f"{_fmt(s.get('accuracy_baseline'))} before, {_fmt(s.get('accuracy_after'))} after; "
        f"largest |w| over pruned kernels: {_fmt(s.get('masked_max_abs'))} (must be 0.0)."
    ) + table(rows)
    history = s.get("history") or []
    if history:
        rounds = [{**{k: v for k, v in r.items() if k != "kernels_pruned"},
                   "kernels pruned": sum((r.get("kernels_pruned") or {}).values())} for r in history]
        out += "<h3>Rounds</h3>" + table(rounds) + figs.add(
            "accuracy_vs_fraction.png", "accuracy against the fraction pruned",
            lambda f: plots.accuracy_vs_fraction(history, f, floor=s.get("val_accuracy_floor")))
    if s.get("macs_before"):
        out += figs.add("multiplications.png", "multiplications per layer before/after pruning",
                        lambda f: plots.multiplications(s["macs_before"], s["macs_after"], f))
    return out


def quantized_section(run: RunData, figs: Figures) -> str:
    s = run.summaries["quantized"]
    if s is None:
        return _not_run("quantization", "make hls")
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
    out = table(accuracy, ["model", "val_accuracy", "test_accuracy"]) + _note(
        f"largest |w| over masked weights: {_fmt(s.get('masked_max_abs_float'))} float, "
        f"{_fmt(s.get('masked_max_abs_quantized'))} quantized (both must be 0.0)."
    ) + table(rows)
    if run.models["quantized"] is not None:
        out += figs.add("quantized_weights.png", "quantized weight values per layer",
                        lambda f: plots.quantized_weights(run.models["quantized"], f))
    return out


CSIM_COLUMNS = [
    "backend", "split", "images", "argmax_agreement", "argmax_disagreements", "bit_exact",
    "bit_exact_images", "max_diff_lsb", "accuracy_csim", "accuracy_qkeras", "first_differing_layer",
    "compile_seconds", "images_per_second", "error",
]
HARDWARE_COLUMNS = [
    "name", "kind", "weight_bits", "input_bits", "strategy", "reuse_factor", "weights", "nonzero",
    "mults_per_image_unpruned", "mults_per_image", "multipliers_unpruned", "multipliers",
    "dsp_unpruned", "dsp", "lut_unpruned", "lut",
]


def csim_section(run: RunData, figs: Figures) -> str:
    done = [{"backend": b, **s} for b, s in run.csims.items() if s]
    if not done:
        return _not_run("C-simulation", "make hls")
    parts = [table(done, [c for c in CSIM_COLUMNS if any(c in row for row in done)])]
    for row in done:
        if row.get("differing_sources"):
            parts.append(_note(f"{_esc(row['backend'])}: generated sources differ from the export: "
                               f"{_esc(', '.join(row['differing_sources']))}"))
        if row.get("trace"):
            parts.append(f"<h3>{_esc(row['backend'])}: per-layer trace of the worst images</h3>" + table(row["trace"]))
    return "".join(parts)


def hardware_section(run: RunData, figs: Figures) -> str:
    parts = []
    for backend, acc in run.accounts.items():
        if not acc:
            continue
        if "error" in acc:
            parts.append(_note(f"{_esc(backend)}: could not read the exported project: {_esc(acc['error'])}"))
            continue
        rows = acc.get("layers", [])
        total = {"name": "total", **(acc.get("total") or {})}
        parts.append(f"<h3>{_esc(backend)}</h3>" + table([*rows, total], HARDWARE_COLUMNS))
        cut = acc.get("conv_nonzero_mults_cut")
        parts.append(_note(
            (f"conv multiplications per image cut by {100 * cut:.1f}%. " if cut is not None else "")
            + "unpruned &rarr; pruned, read from the exported weight files. " + _esc(acc.get("model", ""))
        ))
        parts.extend(_note(_esc(w)) for w in acc.get("warnings", []))
        before = {r["name"]: r["mults_per_image_unpruned"] for r in rows}
        after = {r["name"]: r["mults_per_image"] for r in rows}
        title = "non-zero multiplications (exported weights)"
        parts.append(figs.add(
            f"multiplications_{backend}.png", f"{backend}: multiplications per layer in the exported weights",
            lambda f, b=before, a=after, t=title: plots.multiplications(b, a, f, title=t),
        ))
    return "".join(parts) or _not_run("hardware accounting", "make hls")


def sweep_section(run: RunData, figs: Figures) -> str:
    """The sweep's Pareto front (fpgaprune.sweep.front.report_data: front.json and its plot)."""
    import shutil

    from ..sweep.front import report_data

    data = report_data(run.cfg.run_dir)
    if data is None:
        return _not_run("design-space sweep", "fpgaprune sweep")
    plot = figs.add("pareto.png", f"accuracy against LUT-equivalents: {data['trials']} trials, the front in red",
                    lambda f: shutil.copyfile(data["plot_path"], f))
    keys = ["trial", "accuracy", "test_accuracy", "lut_equivalents", "dsp", "latency"]
    rows = [{**{k: r.get(k) for k in keys}, "C-sim bit-exact": (r.get("csim") or {}).get("bit_exact"),
             **r["params"]} for r in data["front"]]
    return plot + table(rows)


BUILDERS: dict[str, Callable[[RunData, Figures], str]] = {
    "config": config_section,
    "stages": stages_section,
    "analysis": analysis_section,
    "kernels": kernels_section,
    "pruning": pruning_section,
    "quantized": quantized_section,
    "csim": csim_section,
    "hardware": hardware_section,
    "sweep": sweep_section,
}

# ---------------------------------------------------------------- the page


def write_report(cfg: Config, *, layer: str | None = None, channel: int | None = None, progress: bool = False) -> Path:
    """Write runs/<name>/report/ (index.html + PNGs) for whatever stages the run has; return the page.

    `layer` / `channel` choose the kernel grid (default: the output channel with most pruned kernels).
    """
    from ..masks import conv_kernel, conv_layers

    if not cfg.run_dir.is_dir():
        raise BadInput(f"{cfg.run_dir}: no such run; {run_step('baseline')}")
    run = read_run(cfg)
    run.grid_layer, run.grid_channel = layer, channel
    base = run.models["baseline"]
    if base is not None and (layer is not None or channel is not None):
        outputs = {c.name: int(conv_kernel(c).shape[-1]) for c in conv_layers(base)}
        if layer is not None and layer not in outputs:
            raise BadInput(f"{option('layer')} {layer!r}: not a conv layer of this run's model ({', '.join(outputs)})")
        grid_layer, grid_channel = _grid_choice(run)
        if not 0 <= grid_channel < outputs[grid_layer]:
            last = outputs[grid_layer] - 1
            raise BadInput(f"{option('channel')} {grid_channel}: {grid_layer} has output channels 0..{last}")
    with atomic_dir(report_dir(cfg), force=True) as folder:
        figs = Figures(folder)
        sections = tqdm(SECTIONS, desc="report", disable=not progress, leave=False)
        body = {sid: BUILDERS[sid](run, figs) for sid, _ in sections}
        (folder / PAGE).write_text(render_page(cfg, body))  # atomic_dir gives the umask's modes
    return report_dir(cfg) / PAGE


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.85em; overflow-x: auto; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; } nav a { margin-right: 1em; }
"""


def render_page(cfg: Config, body: dict[str, str]) -> str:
    nav = "".join(f"<a href='#{sid}'>{_esc(title)}</a>" for sid, title in SECTIONS)
    sections = "".join(
        f"<section id='{sid}'><h2>{_esc(title)}</h2>{body.get(sid, _note(NOT_RUN))}</section>"
        for sid, title in SECTIONS
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fpgaprune run {_esc(cfg.name)}</title>"
        f"<style>{STYLE}</style></head><body><h1>fpgaprune run <code>{_esc(cfg.name)}</code></h1>"
        f"<p class='note'>{_esc(cfg.run_dir)}</p><nav>{nav}</nav>{sections}</body></html>\n"
    )
