"""The lines a person reads in a terminal after each step (the report's HTML is `html.py`)."""

from __future__ import annotations

from ..analysis.counts import conv_mults_cut, savings_text


def prune_cut(s: dict) -> float | None:
    """The savings figure of a pruned (or analysis) summary: its conv layers are the ones with kernels."""
    conv = [name for name in s.get("kernels_total") or s.get("kernels") or {} if name != "total"]
    return conv_mults_cut(s.get("macs_before") or {}, s.get("macs_after") or {}, conv)


def analysis_lines(result, top: int) -> str:
    """The analyzer's ranked table (smallest first), its proposal and sensitivity."""
    s = result.summary
    lines = [f"smallest {min(top, len(result.table))} of {len(result.table)} kernels by {s['norm']} magnitude:"]
    lines.append(f"{'rank':>6}  {'layer':<10} {'cin':>4} {'cout':>4}  {'magnitude':>10}  pruned")
    for row in result.table[:top]:
        lines.append(
            f"{row['rank']:>6}  {row['layer']:<10} {row['cin']:>4} {row['cout']:>4}  "
            f"{row['magnitude']:>10.4g}  {'yes' if row['pruned'] else ''}"
        )
    lines.append(f"proposal ({s['select']}):")
    for name, row in s["kernels"].items():
        if name != "total":
            lines.append(
                f"  {name:<10} {row['pruned']:>5} of {row['kernels']:>5} kernels pruned; "
                f"MACs {s['macs_before'][name]:,} -> {s['macs_after'][name]:,}"
            )
    if "accuracy_zeroed" in s:
        for split in ("val_accuracy", "test_accuracy"):
            before, after = s["accuracy_unpruned"][split], s["accuracy_zeroed"][split]
            if before is not None:
                lines.append(f"  {split.replace('_', ' ')}: {before:.4f} -> {after:.4f} with the kernels zeroed, "
                             "before retraining")
    if s.get("sensitivity_sweep"):
        lines.append("sensitivity (validation accuracy with a layer's smallest kernels zeroed, no retraining):")
        for name, points in s["sensitivity_sweep"].items():
            lines.append(f"  {name:<10} " + ", ".join(f"{p['fraction']:.0%}: {p['val_accuracy']:.4f}" for p in points))
    return "\n".join(lines)


def prune_table(s: dict) -> str:
    """The per-layer table `make prune` ends with: kernels, MACs and accuracy before/after."""
    head = f"{'layer':<10} {'kernels':>8} {'pruned':>7} {'kept':>6} {'MACs before':>12} {'MACs after':>12}"
    lines = [head, "-" * len(head)]
    for name, before in s["macs_before"].items():
        if name == "total":
            continue
        total = s["kernels_total"].get(name)
        pruned = s["kernels_pruned"].get(name)
        k = (f"{total:>8} {pruned:>7} {total - pruned:>6}") if total is not None else f"{'-':>8} {'-':>7} {'-':>6}"
        lines.append(f"{name:<10} {k} {before:>12,} {s['macs_after'][name]:>12,}")
    tk, tp = s["kernels_total"]["total"], s["kernels_pruned"]["total"]
    mb, ma = s["macs_before"]["total"], s["macs_after"]["total"]
    lines.append("-" * len(head))
    lines.append(f"{'total':<10} {tk:>8} {tp:>7} {tk - tp:>6} {mb:>12,} {ma:>12,}")
    lines.append(f"{savings_text(prune_cut(s))} (pruned kernels removed)")
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
    masked = sum(summary["masked_kernels"].values())
    return (
        f"{which} accuracy {before:.4f} (float) -> {after:.4f} (quantized, {summary['finetune_epochs']} "
        f"fine-tune epochs); {masked} masked kernels, max |quantized masked weight| "
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
    return (
        f"digits 0-4 -> 5-9 from {d['images_per_class']} images per class ({d['eval_images']} "
        f"{d['accuracy_split']} images): transfer {d['transfer_accuracy']:.4f}, same network from "
        f"scratch {d['scratch_accuracy']:.4f} ({d['scratch_epochs']} epochs)"
    )


def accounting_lines(manifest: dict, rows, accounting: dict, csim: dict | None) -> list[str]:
    """`make hls`'s closing block for one project: the table, warnings, savings, C-sim agreement."""
    from ..hw.accounting import format_table, warnings

    lines = [f"\n{manifest['backend']} ({manifest['part']}, {manifest['clock_period']} ns, {manifest['io_type']}):",
             format_table(rows), *warnings(rows)]
    for row in rows:
        if row.masked_weights:
            lines.append(
                f"{row.name}: {row.masked_weights / row.weights:.1%} of the weights pruned (masked kernels are 0 "
                f"in the exported weights); non-zero multiplications cut by {1 - row.nonzero / row.weights:.1%}"
            )
    if accounting["conv_nonzero_mults_cut"] is not None:
        lines.append(f"{savings_text(accounting['conv_nonzero_mults_cut'])} (read from the exported weights)")
    if csim is not None:
        exact = "bit-exact" if csim["bit_exact"] else f"max diff {csim['max_diff_lsb']:g} LSB"
        lines.append(f"C-sim agreement: {csim['argmax_agreement']:.2%} argmax, {exact} "
                     f"on {csim['images']} {csim['split']} images")
    return lines
