"""The run report: one self-contained HTML page showing what every stage of a run did.

`write_report(cfg)` reads whatever stages `runs/<name>/` holds (and the HLS projects under
`export.output_dir/<name>/`), builds each section's blocks (`sections.py`), draws the plots of
`plots.py`, and renders `templates/report.html.j2` into `runs/<name>/report/index.html`, with
the PNGs beside it and embedded in it, so the page can be mailed or opened anywhere. A stage
that has not been run shows "not run yet"; a plot that cannot be drawn says why, and the rest
of the page is still written.

    path = write_report(cfg)      # runs/mnist_cnn/report/index.html
"""

from __future__ import annotations

import base64
import traceback
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..config import Config
from ..errors import BadInput, FpgapruneError, option, run_step
from ..io import atomic_dir
from .blocks import figure, note
from .data import NOT_RUN, PAGE, SECTIONS, read_run, report_dir
from .sections import BUILDERS, grid_choice

TEMPLATE = "report.html.j2"
__all__ = ["NOT_RUN", "SECTIONS", "Figures", "render_page", "write_report"]


class Figures:
    """Draws plots into the report folder; returns each as an embedded figure block."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, name: str, caption: str, draw: Callable[[Path], object]) -> dict:
        path = self.folder / name
        try:
            draw(path)
        except Exception as exc:  # one bad plot must not cost the whole report
            detail = str(exc) if isinstance(exc, FpgapruneError) else traceback.format_exception_only(exc)[-1]
            return note(f"could not draw {caption}: {' '.join(detail.split())}")
        return figure(name, caption, base64.b64encode(path.read_bytes()).decode())


def write_report(cfg: Config, *, layer: str | None = None, channel: int | None = None, progress: bool = False) -> Path:
    """Write runs/<name>/report/ (index.html + PNGs) for whatever stages the run has; return the page.

    `layer` / `channel` choose the kernel grid (default: the channel with pruned and kept kernels mixed most evenly).
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
        grid_layer, grid_channel = grid_choice(run)
        if not 0 <= grid_channel < outputs[grid_layer]:
            last = outputs[grid_layer] - 1
            raise BadInput(f"{option('channel')} {grid_channel}: {grid_layer} has output channels 0..{last}")
    with atomic_dir(report_dir(cfg), force=True) as folder:
        figs = Figures(folder)
        sections = tqdm(SECTIONS, desc="report", disable=None if progress else True, leave=False)
        body = {sid: BUILDERS[sid](run, figs) for sid, _ in sections}
        (folder / PAGE).write_text(render_page(cfg, body))  # atomic_dir gives the umask's modes
    return report_dir(cfg) / PAGE


def render_page(cfg: Config, body: dict[str, list[dict]]) -> str:
    """The page from each section's blocks; every value is escaped by the template."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("fpgaprune.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    sections = [{"id": sid, "title": title, "blocks": body.get(sid) or [note(NOT_RUN)]} for sid, title in SECTIONS]
    return env.get_template(TEMPLATE).render(name=cfg.name, run_dir=str(cfg.run_dir), sections=sections) + "\n"
