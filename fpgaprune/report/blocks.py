"""The pieces a report section is made of, as plain data the page template renders.

A section builder returns a list of blocks (a table, a note, a heading, a figure, preformatted
text, a collapsed group); `templates/report.html.j2` turns each into HTML and escapes every value,
so no builder writes markup.

    [heading("Rounds"), table(history), note("mode gradual", code="fpgaprune prune")]
"""

from __future__ import annotations

import json

# Column headers in words for the keys the stages write; any other key is spelled out by `words`.
HEADERS = {
    "name": "layer", "kind": "type", "val_accuracy": "validation accuracy", "test_accuracy": "test accuracy",
    "argmax_agreement": "argmax agreement", "argmax_disagreements": "argmax disagreements",
    "bit_exact": "bit-exact", "bit_exact_images": "bit-exact images", "max_diff_lsb": "max diff (LSB)",
    "max_abs_diff": "max |diff|", "accuracy_csim": "C-sim accuracy", "accuracy_qkeras": "QKeras accuracy",
    "first_differing_layer": "first differing layer", "compile_seconds": "compile (s)",
    "images_per_second": "images per second", "weight_bits": "weight bits", "input_bits": "input bits",
    "reuse_factor": "reuse factor", "nonzero": "non-zero", "mults_per_image": "mults per image",
    "masked_weights": "masked weights", "zeros_in_file_header": "zeros (file header)",
    "zeros_save_multipliers": "zeros save multipliers", "dsp": "DSP", "lut": "LUT",
    "lut_equivalents": "LUT-equivalents", "within_budget": "within budget", "fraction": "fraction pruned",
    "seconds": "seconds", "cin": "input channel", "cout": "output channel",
}
UNPRUNED = "_unpruned"  # `x_unpruned` and `x` make one column x whose cells read "unpruned → pruned"


def words(key: str) -> str:
    """A column header in words: the known name, else the key with its underscores as spaces."""
    return HEADERS.get(key, key.replace("_", " "))


def fmt(value) -> str:
    """One cell's text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:300]
    return str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> dict:
    """A table of dict rows (columns: the union of keys, first seen first).

    A pair `x_unpruned`, `x` becomes one column `x` of "unpruned → pruned" cells, so a wide
    accounting fits the page.
    """
    if not rows:
        return note("(empty)")
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    pairs = {c for c in columns if c.endswith(UNPRUNED) and c[: -len(UNPRUNED)] in columns}
    shown = [c for c in columns if c + UNPRUNED not in pairs]
    head, cells = [], []
    for c in shown:
        if c in pairs:
            base = c[: -len(UNPRUNED)]
            head.append(words(base))
            cells.append(lambda row, u=c, p=base: _pair(row.get(u), row.get(p)))
        else:
            head.append(words(c))
            cells.append(lambda row, c=c: fmt(row.get(c)))
    return {"kind": "table", "head": head, "rows": [[cell(row) for cell in cells] for row in rows]}


def _pair(before, after) -> str:
    if before is None and after is None:
        return fmt(None)
    return fmt(before) if before == after else f"{fmt(before)} → {fmt(after)}"


def note(text: str, code: str | None = None) -> dict:
    """A line of explanation; `code` (a command) is shown after it in code type."""
    return {"kind": "note", "text": text, "code": code}


def heading(text: str) -> dict:
    return {"kind": "heading", "text": text}


def pre(text: str) -> dict:
    return {"kind": "pre", "text": text}


def details(summary: str, blocks: list[dict]) -> dict:
    """Blocks folded away until the reader opens them."""
    return {"kind": "details", "summary": summary, "blocks": blocks}


def figure(name: str, caption: str, data: str) -> dict:
    """An embedded PNG (base64 `data`), linked to its file beside the page."""
    return {"kind": "figure", "name": name, "caption": caption, "data": data}
