"""The lines a person reads in a terminal after each step (the report's HTML is `html.py`)."""

from __future__ import annotations

from ..analysis.counts import conv_mults_cut, savings_text
from ..hw.costs import DA
from .table import SEPARATOR, table


def prune_cut(s: dict) -> float | None:
    """The savings figure of a pruned (or analysis) summary: its conv layers are the ones with kernels."""
    conv = [name for name in s.get("kernels_total") or s.get("kernels") or {} if name != "total"]
    return conv_mults_cut(s.get("macs_before") or {}, s.get("macs_after") or {}, conv)


def analysis_lines(result, top: int) -> str:
    """The analyzer's ranked table (smallest first), its proposal and sensitivity."""
    s = result.summary
    lines = [f"smallest {min(top, len(result.table))} of {len(result.table)} kernels by {s['norm']} magnitude:"]
    ranked = [[r["rank"], r["layer"], r["cin"], r["cout"], r["magnitude"], "yes" if r["pruned"] else None]
              for r in result.table[:top]]
    lines.append(table(ranked, ["rank", "layer", "cin", "cout", "magnitude", "pruned"], floatfmt=".4g"))
    lines.append(f"proposal ({s['select']}):")
    before, after = s["macs_before"], s["macs_after"]
    proposal = [[name, row["pruned"], f"{row['kernels']:,} kernels", before[name], after[name]]
                for name, row in s["kernels"].items() if name != "total"]
    proposal += [[name, row["pruned"], f"{row['weights']:,} Dense weights", before[name], after[name]]
                 for name, row in s.get("weights", {}).items() if name != "total"]
    lines.append(table(proposal, ["layer", "pruned", "of", "MACs before", "MACs after"]))
    if "accuracy_zeroed" in s:
        for split in ("val_accuracy", "test_accuracy"):
            before, after = s["accuracy_unpruned"][split], s["accuracy_zeroed"][split]
            if before is not None:
                lines.append(f"  {split.replace('_', ' ')}: {before:.4f} -> {after:.4f} with the kernels zeroed, "
                             "before retraining")
    if s.get("sensitivity_sweep"):
        lines.append("sensitivity (validation accuracy with a layer's smallest kernels zeroed, no retraining):")
        sweep = s["sensitivity_sweep"]
        fractions = [f"{p['fraction']:.0%}" for p in next(iter(sweep.values()))]
        rows = [[name, *(p["val_accuracy"] for p in points)] for name, points in sweep.items()]
        lines.append(table(rows, ["layer", *fractions], floatfmt=".4f"))
    return "\n".join(lines)


def prune_table(s: dict) -> str:
    """The per-layer table `make prune` ends with: kernels, MACs and accuracy before/after."""
    rows = []
    for name, before in s["macs_before"].items():
        if name == "total":
            continue
        total, pruned, label = s["kernels_total"].get(name), s["kernels_pruned"].get(name), name
        if total is None and name in s.get("weights_total", {}):  # a masked Dense layer: weights, not kernels
            total, pruned, label = s["weights_total"][name], s["weights_pruned"][name], f"{name} (w)"
        kept = total - pruned if total is not None else None
        rows.append([label, total, pruned, kept, before, s["macs_after"][name]])
    tk, tp = s["kernels_total"]["total"], s["kernels_pruned"]["total"]
    mb, ma = s["macs_before"]["total"], s["macs_after"]["total"]
    rows += [SEPARATOR, ["total", tk, tp, tk - tp, mb, ma]]
    lines = [table(rows, ["layer", "kernels", "pruned", "kept", "MACs before", "MACs after"]),
             f"{savings_text(prune_cut(s))} (pruned kernels removed)"]
    if s.get("weights_total", {}).get("total"):
        lines.append("(w): a Dense layer, counted in weights (its mask is element-wise); the total counts conv kernels")
    for split in ("test", "val"):
        before, after = s[f"{split}_accuracy_baseline"], s[f"{split}_accuracy_after"]
        if before is not None:
            name = "test accuracy" if split == "test" else "validation accuracy"
            lines.append(f"{name}: {before:.4f} -> {after:.4f} ({100 * (after - before):+.2f} points)")
    lines.append(f"largest |w| over masked weights: {s['masked_max_abs']}")
    return "\n".join(lines)


def quantized_line(summary: dict) -> str:
    which = "test" if summary.get("test_accuracy") is not None else "val"
    before = summary["float"].get(f"{which}_accuracy")
    after = summary.get(f"{which}_accuracy")
    convs = set(summary.get("conv_layers", summary["masked_kernels"]))
    masked = sum(n for name, n in summary["masked_kernels"].items() if name in convs)
    dense = sum(n for name, n in summary["masked_kernels"].items() if name not in convs)
    masked_dense = f" and {dense} masked Dense weights" if dense else ""
    return (
        f"{which} accuracy {before:.4f} (float) -> {after:.4f} (quantized, {summary['finetune_epochs']} "
        f"fine-tune epochs); {masked} masked kernels{masked_dense}, max |quantized masked weight| "
        f"{summary['masked_max_abs_quantized']:g}"
    )


def transfer_line(folder, summary: dict) -> str:
    head = summary["head"]
    how = (
        f"cached features below {head['cut']!r}"
        if summary["cached_features"]
        else f"uncached ({head['uncached_reason']})"
    )
    seconds = sorted(summary["epoch_seconds"])[len(summary["epoch_seconds"]) // 2]
    return (
        f"transfer saved to {folder}: trained {', '.join(summary['trainable_layers'])} from {how}, "
        f"{seconds:.3f} s per epoch; {summary['accuracy_split']} accuracy {accuracy_before_text(summary)}"
    )


def accuracy_before_text(summary: dict) -> str:
    """'before -> after', saying which model 'before' is: the untouched one, or the new random head."""
    after = f"{summary['accuracy_after']:.4f}"
    if summary.get("accuracy_before_new_head") is None:  # the head was kept (or an older summary)
        return f"{summary['accuracy_before']:.4f} (untouched model) -> {after}"
    untouched = summary.get("accuracy_before_untouched")
    other = (f"{untouched:.4f} on the same images" if untouched is not None
             else f"not comparable: {summary.get('accuracy_before_untouched_note')}")
    return f"{summary['accuracy_before_new_head']:.4f} (new random head) -> {after}; untouched model {other}"


def demo_line(summary: dict) -> str:
    d = summary["demo"]
    line = (
        f"digits 0-4 -> 5-9 from {d['images_per_class']} images per class ({d['eval_images']} "
        f"{d['accuracy_split']} images): transfer {d['transfer_accuracy']:.4f}, same network from "
        f"scratch {d['scratch_accuracy']:.4f} ({d['scratch_epochs']} epochs)"
    )
    return line + "\n" + demo_verdict(summary)


def demo_verdict(summary: dict) -> str:
    """What the comparison says, in either direction: a worse transfer is reported, not hidden."""
    d = summary["demo"]
    gap = 100 * (d["transfer_accuracy"] - d["scratch_accuracy"])
    trained = ", ".join(summary.get("trainable_layers", [])) or "the top layers"
    if gap >= 0:
        return (f"transfer is {gap:.2f} points above scratch, training only {trained} on features "
                "learned from digits 0-4")
    return (
        f"transfer is {-gap:.2f} points below scratch: with {d['images_per_class']} images per class the "
        f"scratch network can fit every layer to digits 5-9, while the transfer trains only {trained} "
        "on frozen features learned for digits 0-4; fewer images per class "
        "(transfer.per_class) favour transfer, transfer.unfreeze lets the conv layers adapt"
    )


def lut_savings_text(accounting: dict, arrow: str) -> str:
    """The LUT-equivalents before and after, naming the cost models where the two sides differ.

    The unpruned side is always priced by the multiplier rule (da4ml on an unpruned fc1 takes
    minutes and ~13 GB); a distributed-arithmetic layer is priced by da4ml, which prices an
    unpruned layer several times below the rule too, so the ratio is then not like for like.
    """
    total = accounting["total"]
    text = (f"LUT-equivalents: {total['lut_equivalents_unpruned']:,} unpruned {arrow} {total['lut_equivalents']:,} "
            f"exported ({accounting['lut_equivalents_ratio']:.1f}x fewer)")
    if any(row.get("cost_model") == DA for row in accounting.get("layers", [])):
        text += ("; unpruned by the multiplier rule, distributed-arithmetic layers by da4ml, which prices "
                 "unpruned layers lower as well, so the same-model ratio is smaller")
    return text


def accounting_lines(manifest: dict, rows, accounting: dict, csim: dict | None) -> list[str]:
    """`make hls`'s closing block for one project: the table, warnings, savings, C-sim agreement."""
    from ..hw.accounting import format_table

    lines = [f"\n{manifest['backend']} ({manifest['part']}, {manifest['clock_period']} ns, {manifest['io_type']}):",
             format_table(rows), *accounting["warnings"]]
    for row in rows:
        if row.masked_weights:
            lines.append(
                f"{row.name}: {row.masked_weights / row.weights:.1%} of the weights pruned (masked kernels are 0 "
                f"in the exported weights); non-zero multiplications cut by {1 - row.nonzero / row.weights:.1%}"
            )
    if accounting["conv_nonzero_mults_cut"] is not None:
        lines.append(f"{savings_text(accounting['conv_nonzero_mults_cut'])} (read from the exported weights)")
    if accounting.get("lut_equivalents_ratio"):
        lines.append(lut_savings_text(accounting, "->"))
    fit = accounting.get("device_fit")
    if fit:
        lines.append(f"{fit['device']}: ~{fit['lut']['share']:.0%} of its {fit['lut']['capacity']:,} LUTs, "
                     f"{fit['dsp']['share']:.0%} of its {fit['dsp']['capacity']:,} DSPs (FF and BRAM not estimated)")
    if csim is not None:
        exact = "bit-exact" if csim["bit_exact"] else f"max diff {csim['max_diff_lsb']:g} LSB"
        lines.append(f"C-sim agreement: {csim['argmax_agreement']:.2%} argmax, {exact} "
                     f"on {csim['images']} {csim['split']} images")
    return lines
