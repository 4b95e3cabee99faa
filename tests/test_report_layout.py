"""The report of a one-shot `make prune` run: plots draw the ranked magnitudes, tables fit the page.

One tiny run (baseline and one-shot prune through the flow, as `make prune` makes it) with a C-sim
summary and a hardware accounting written beside it, so every wide table is on the page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fpgaprune.report import plots
from fpgaprune.run import ACCOUNTING_FILE, CSIM_SUMMARY, RANKED_NORMS_FILE, Run
from tests.conftest import tiny_config

CHROMIUM = shutil.which("chromium") or (Path("/usr/bin/chromium") if Path("/usr/bin/chromium").is_file() else None)
PAGE_WIDTH = 1200
MEASURE = """<script>
const tables = [...document.querySelectorAll('table')];
document.body.dataset.tables = JSON.stringify(tables.map(t => ({
  right: t.getBoundingClientRect().right, width: t.scrollWidth, box: t.parentElement.clientWidth})));
document.body.dataset.page = document.documentElement.scrollWidth;
</script>"""


def _wide_accounting() -> dict:
    """An accounting of reference-CNN size: the widest numbers the hardware table shows."""
    def row(name, kind, n, nz, pixels):
        return {"name": name, "kind": kind, "weight_bits": 8, "input_bits": 6, "strategy": "latency",
                "reuse_factor": 1, "weights": n, "nonzero": nz, "masked_weights": n - nz,
                "zeros_in_file_header": n - nz, "mults_per_image_unpruned": n * pixels,
                "mults_per_image": nz * pixels, "multipliers_unpruned": n, "multipliers": nz, "dsp_unpruned": 0,
                "dsp": 0, "lut_unpruned": 24 * n, "lut": 24 * nz, "zeros_save_multipliers": True}
    rows = [row("conv1", "Conv2D", 288, 288, 676), row("conv2", "Conv2D", 9216, 180, 121),
            row("fc1", "Dense", 25600, 25600, 1), row("fc2", "Dense", 320, 320, 1)]
    keys = ("weights", "nonzero", "masked_weights", "mults_per_image_unpruned", "mults_per_image",
            "multipliers_unpruned", "multipliers", "dsp_unpruned", "dsp", "lut_unpruned", "lut")
    total = {k: sum(r[k] for r in rows) for k in keys}
    total.update(lut_equivalents_unpruned=total["lut_unpruned"], lut_equivalents=total["lut"])
    return {"model": "LUT ~ b_w*b_a/2 per LUT-mapped multiplier", "layers": rows, "total": total,
            "conv_nonzero_mults_cut": 0.8347, "warnings": []}


def _csim_summary() -> dict:
    trace = [{"layer": n, "precision": "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", "max_abs_diff": 0.0, "max_diff_lsb": 0.0,
              "differs": False} for n in ("conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2")]
    return {"backend": "Vivado", "split": "validation", "images": 10000, "argmax_agreement": 1.0,
            "argmax_disagreements": 0, "bit_exact": True, "bit_exact_images": 10000, "max_diff_lsb": 0.0,
            "accuracy_csim": 0.9716, "accuracy_qkeras": 0.9716, "first_differing_layer": None,
            "compile_seconds": 123.4, "images_per_second": 1234.5, "trace": trace}


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory):
    """`make prune` in one shot on the tiny CNN (no analyze step), then the report, with HLS results beside."""
    from fpgaprune import Options, run_flow
    from fpgaprune.io import write_json

    tmp = tmp_path_factory.mktemp("layout")
    cfg = tiny_config(tmp, train={"epochs": 1},
                      prune={"mode": "oneshot", "select": "fraction", "fraction": 0.5, "epochs": 1})
    run_flow(cfg, steps=["prune"], options=Options(verbose=0))
    project = Run(cfg).project_dir("Vivado")
    project.mkdir(parents=True)
    write_json(project / CSIM_SUMMARY, _csim_summary())
    write_json(project / ACCOUNTING_FILE, _wide_accounting())
    return cfg


def test_oneshot_plots_draw_the_ranked_magnitudes(oneshot_run, monkeypatch):
    """Every pruned kernel the plots draw is at or below every kept one in the ranked layer."""
    from fpgaprune.analysis.kernels import kernel_norms
    from fpgaprune.report.html import write_report

    drawn = {}
    for name in ("kernel_heatmap", "magnitude_histograms"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda norms, path, masks=None, _r=real, _n=name, **kw:
                            drawn.setdefault(_n, (norms, masks)) and _r(norms, path, masks, **kw))
    page = write_report(oneshot_run).read_text()
    norms, masks = drawn["magnitude_histograms"]
    assert drawn["kernel_heatmap"][0] is norms
    pruned, kept = norms["conv2"][masks["conv2"]], norms["conv2"][~masks["conv2"]]
    assert pruned.size == 16 and kept.size == 16
    assert pruned.max() <= kept.min()
    run = Run(oneshot_run)
    with np.load(run.stage_dir("pruned") / RANKED_NORMS_FILE) as saved:
        np.testing.assert_array_equal(saved["conv2"], norms["conv2"])
    baseline, _ = run.load("baseline")
    np.testing.assert_array_equal(kernel_norms(baseline)["conv2"], norms["conv2"])  # one shot ranks the baseline
    # The grid's default channel mixes kept and pruned kernels; the page says prune ranked the kernels.
    channel = int(re.search(r"kernels of conv2, output channel (\d+)", page).group(1))
    assert 0 < masks["conv2"][:, channel].sum() < masks["conv2"].shape[0]
    assert "analysis: not run yet" not in page and "ranked inside the prune step" in page
    # Results first, the full config last and folded away.
    assert page.index("id='stages'") < page.index("id='hardware'") < page.index("id='config'")
    assert re.search(r"<section id='config'><h2>Config</h2><details><summary>", page)
    assert "<th>mults per image</th>" in page and "<td>1,115,136 → 21,780</td>" in page
    assert "mults_per_image" not in page
    assert "non-zero conv multiplications per image cut by 83.5%" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_report_tables_fit_a_1200px_page(oneshot_run, tmp_path):
    """Headless Chromium at 1,200 px: no table is wider than its box or the page; a screenshot is taken."""
    from fpgaprune.report.html import write_report

    page = write_report(oneshot_run)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    flags = [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", f"--window-size={PAGE_WIDTH},900",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=90, check=True)
    assert shot.stat().st_size > 10_000
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90,
                         check=True).stdout
    import html
    import json

    tables = json.loads(html.unescape(re.search(r'data-tables="([^"]*)"', dom).group(1)))
    assert len(tables) >= 7  # stages, ranked kernels, pruning, rounds, C-sim, its trace, hardware
    assert int(re.search(r'data-page="(\d+)"', dom).group(1)) <= PAGE_WIDTH
    for t in tables:
        assert t["right"] <= PAGE_WIDTH and t["width"] <= t["box"], t


def test_default_grid_channel_mixes_kept_and_pruned():
    """The layer with the most pruned kernels that keeps some; its channel nearest half pruned, first on ties."""
    from types import SimpleNamespace

    from fpgaprune.report.sections import grid_choice

    conv2 = np.zeros((4, 3), bool)
    conv2[:, 0] = True  # all pruned: says nothing
    conv2[:1, 1] = True  # 1 of 4
    conv2[:2, 2] = True  # 2 of 4: the one
    masks = {"conv1": np.ones((1, 4), bool), "conv2": conv2}  # conv1 all pruned, so conv2 is shown
    run = SimpleNamespace(grid_layer=None, grid_channel=None, masks=masks, models={})
    assert grid_choice(run) == ("conv2", 2)
    assert grid_choice(SimpleNamespace(**{**vars(run), "grid_channel": 0})) == ("conv2", 0)
