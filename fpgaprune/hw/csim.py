"""C-simulation: compile an exported project with g++ (hls4ml `compile`) and compare it with
the QKeras model on every test image.

The project is compiled in a temporary copy, from the hls4ml model saved at export, so the
exported folder keeps exactly what export wrote; the generated sources are compared with the
exported ones, so what was simulated is what a person takes to synthesis. The copy is built
faster than hls4ml builds it (`simbuild`: the fixed-point library's registers and -march=native),
with bit-identical outputs. Predictions run in parallel processes (the compiled library keeps
static state, so threads would share it).
With a correct precision configuration the outputs are bit-exact; where they are not, hls4ml's
trace shows the first layer that differs, and the summary says so.

    summary = run_csim(project, qkeras_model, x_test, y_test)
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import BadInput, WorkFailed, option
from ..io import write_json
from ..locks import scratch_dir
from ..masks import strip_masks
from .export import HLS_MODEL, read_manifest, write_project
from .fml import checked_archive
from .quantize import logits_model
from .simbuild import speed_up_build

SUMMARY = "summary.json"
CHUNK = 200  # images per task handed to a worker process
TRACE_IMAGES = 20

_WORKER_MODEL = None  # the compiled hls4ml model, inherited by forked workers


def require_gxx() -> str:
    """The g++ that hls4ml's build_lib.sh calls; BadInput when it is missing."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise BadInput("g++ not found on PATH: C-simulation compiles the HLS project with g++ (install g++)")
    return gxx


def load_hls_model(project: Path, output_dir: Path):
    """The hls4ml model saved in `project`, set to write and compile into `output_dir`.

    hls4ml reads a copy of the archive holding only members checked to stay inside it
    (`fml.checked_archive`): its own extraction would follow `../` entries and links.
    """
    from hls4ml.utils.serialization import deserialize_model

    if not (project / HLS_MODEL).is_file():
        raise BadInput(f"{project}: no {HLS_MODEL}; {option('export_again')}")
    with checked_archive(project / HLS_MODEL, project) as archive, contextlib.redirect_stdout(io.StringIO()):
        hls_model = deserialize_model(archive, output_dir=output_dir)
    hls_model.config.config["OutputDir"] = str(output_dir)
    hls_model.config.config["InputData"] = None
    hls_model.config.config["OutputPredictions"] = None
    return hls_model


@dataclass(frozen=True)
class CompiledCopy:
    """A compiled scratch copy of a project: the hls4ml model to predict with, and how it was built."""

    hls_model: object
    seconds: float  # writing and g++
    differing: list[str]  # generated sources that differ from the exported ones (none expected)
    build: dict = field(default_factory=dict)  # what `simbuild.speed_up_build` changed; {} for hls4ml's build


def compile_copy(project: Path, workdir: Path, fast: bool = True) -> CompiledCopy:
    """Copy the project into `workdir` and compile it there; `fast=False`: exactly hls4ml's build."""
    gxx = require_gxx()
    shutil.copytree(project, workdir, dirs_exist_ok=True)
    hls_model = load_hls_model(project, workdir)
    start = time.perf_counter()
    log = io.StringIO()
    build = {}
    try:
        with contextlib.redirect_stdout(log):
            write_project(hls_model)  # = hls4ml's compile(): write, then build with g++
            if fast:
                build = speed_up_build(workdir, gxx)
            hls_model._compile()
    except Exception as exc:
        tail = " ".join(log.getvalue().split()[-40:])
        raise WorkFailed(f"compiling {project} with g++ failed ({exc}): {tail}") from None
    seconds = time.perf_counter() - start
    return CompiledCopy(hls_model, seconds, differing_sources(project, workdir), build)


def differing_sources(project: Path, copy: Path) -> list[str]:
    """Generated sources (firmware/, test bench) that differ from the exported ones.

    ap_types/ (the vendor's fixed-point library, which `simbuild` changes in the copy) is not
    the design and is skipped. So is the `//Numpy array shape` comment of a weight header:
    hls4ml writes it before a Resource-strategy transpose at export, after it when reloaded;
    the values are the same.
    """
    differ = []
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if not path.is_file() or path.suffix not in (".h", ".cpp", ".txt", ".dat") or "ap_types" in rel.parts:
            continue
        if _source_lines(path) != _source_lines(copy / rel):
            differ.append(str(rel))
    return differ


def _source_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if not line.startswith("//Numpy array shape")]


def _predict_chunk(x: np.ndarray) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        return np.asarray(_WORKER_MODEL.predict(np.ascontiguousarray(x))).reshape(len(x), -1)


def predict(hls_model, x: np.ndarray, workers: int = 1, progress: bool = False) -> np.ndarray:
    """C-simulate every image of `x`, in `workers` forked processes.

    A worker that dies (a forked process can crash in the compiled model when the parent held
    TensorFlow's threads) makes the pool report it instead of waiting forever; the images are
    then simulated in this process, so the answer is the same, only slower.
    """
    global _WORKER_MODEL
    _WORKER_MODEL = hls_model
    x = np.ascontiguousarray(x, dtype=np.float32)
    chunks = [x[i : i + CHUNK] for i in range(0, len(x), CHUNK)]
    bar = _progress(len(x), progress)
    parts: list[np.ndarray] = []
    try:
        if workers > 1 and len(chunks) > 1:
            try:
                context = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, mp_context=context) as pool:
                    for part in pool.map(_predict_chunk, chunks):
                        parts.append(part)
                        bar.update(len(part))
            except BrokenProcessPool:
                print("csim: a worker process died; simulating the remaining images in one process")
        for chunk in chunks[len(parts) :]:
            parts.append(_predict_chunk(chunk))
            bar.update(len(chunk))
    finally:
        bar.close()
        _WORKER_MODEL = None
    return np.concatenate(parts)


def processes(images: int, workers: int) -> int:
    """How many processes `predict` simulates `images` in: one unless there are chunks to share."""
    chunks = -(-images // CHUNK)
    return min(workers, chunks) if workers > 1 and chunks > 1 else 1


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="C-simulation", disable=None if enabled else True, leave=False)


def lsb_of(precision) -> float:
    """The weight of the least significant bit of an hls4ml fixed/integer precision."""
    width = int(getattr(precision, "width", 0))
    integer = int(getattr(precision, "integer", width))
    return 2.0 ** -(width - integer)


def compare(y_hls: np.ndarray, y_ref: np.ndarray, lsb: float, labels: np.ndarray | None = None) -> dict:
    """Argmax agreement, bit-exactness and the largest difference in LSBs of the output type."""
    diff = np.abs(y_hls.astype(np.float64) - y_ref.astype(np.float64)).reshape(len(y_hls), -1)
    per_image = diff.max(axis=1)
    argmax_hls, argmax_ref = y_hls.argmax(axis=1), y_ref.argmax(axis=1)
    out = {
        "images": int(len(y_hls)),
        "argmax_agreement": float(np.mean(argmax_hls == argmax_ref)),
        "argmax_disagreements": int(np.sum(argmax_hls != argmax_ref)),
        "bit_exact_images": int(np.sum(per_image == 0)),
        "bit_exact": bool(np.all(per_image == 0)),
        "max_abs_diff": float(per_image.max()) if len(per_image) else 0.0,
        "max_diff_lsb": float(per_image.max() / lsb) if len(per_image) else 0.0,
        "output_lsb": lsb,
    }
    if labels is not None:
        out["accuracy_csim"] = float(np.mean(argmax_hls == labels))
        out["accuracy_qkeras"] = float(np.mean(argmax_ref == labels))
    return out


def trace_differences(hls_model, keras_model: tf.keras.Model, x: np.ndarray) -> list[dict]:
    """Per layer, the largest C-sim vs QKeras difference on `x`, in hls4ml's layer order.

    Both sides come from hls4ml: `ModelGraph.trace` and profiling's `get_ymodel_keras`, which
    names a fused activation's output `<layer>_<activation>` as the trace does; a layer is
    compared where both name it with outputs of the same shape. The trace writes and compiles
    the copy again with hls4ml's own build: slower, the same values.
    """
    from hls4ml.model.profiling import get_ymodel_keras  # imports seaborn and pyplot: only when needed

    for layer in hls_model.get_layers():
        layer.set_attr("trace", True)
    x = np.ascontiguousarray(x, dtype=np.float32)
    with contextlib.redirect_stdout(io.StringIO()):
        _, hls_trace = hls_model.trace(x)
        keras_trace = get_ymodel_keras(keras_model, x)
    rows = []
    for layer in hls_model.get_layers():
        if layer.name not in hls_trace or layer.name not in keras_trace:
            continue
        precision = layer.get_output_variable().type.precision
        a = np.asarray(hls_trace[layer.name], np.float64).reshape(len(x), -1)
        b = np.asarray(keras_trace[layer.name], np.float64).reshape(len(x), -1)
        if a.shape != b.shape:
            continue
        worst = float(np.abs(a - b).max())
        rows.append({"layer": layer.name, "precision": str(precision), "max_abs_diff": worst,
                     "max_diff_lsb": worst / lsb_of(precision), "differs": worst > 0})
    return rows


def run_csim(
    project: Path,
    qmodel: tf.keras.Model,
    x: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    split: str = "test",
    fast: bool = True,
) -> dict:
    """Compile and C-simulate `project` on `x`; compare with `qmodel`; write summary.json there.

    `fast`: the faster build of `compile_copy` (same outputs); False: exactly hls4ml's build.
    """
    manifest = read_manifest(project)
    workers = workers or os.cpu_count() or 1
    reference = logits_model(strip_masks(qmodel))
    y_ref = reference.predict(x, batch_size=512, verbose=0).reshape(len(x), -1)
    with scratch_dir("csim") as tmp:
        compiled = compile_copy(project, Path(tmp) / "project", fast=fast)
        hls_model = compiled.hls_model
        start = time.perf_counter()
        y_hls = predict(hls_model, x, workers, progress)
        predict_seconds = time.perf_counter() - start
        rate = len(x) / predict_seconds if predict_seconds > 0 else None
        used = processes(len(x), workers)
        precision = hls_model.get_output_variables()[0].type.precision
        result = compare(y_hls, y_ref, lsb_of(precision), labels)
        trace = []
        if not result["bit_exact"]:
            worst = np.argsort(-np.abs(y_hls - y_ref).max(axis=1))[:TRACE_IMAGES]
            trace = trace_differences(hls_model, reference, x[worst])
    summary = {
        "backend": manifest["backend"],
        "split": split,
        **result,
        "output_precision": str(precision),
        "compile_seconds": compiled.seconds,
        "predict_seconds": predict_seconds,
        "images_per_second": rate,
        "workers": workers,
        "processes": used,
        "images_per_second_per_process": rate / used if rate else None,
        "simulation_build": compiled.build,
        "sources_identical_to_export": not compiled.differing,
        "differing_sources": compiled.differing,
        "first_differing_layer": next((r["layer"] for r in trace if r["differs"]), None),
        "trace": trace,
    }
    write_json(project / SUMMARY, summary)
    return summary


def describe(summary: dict) -> str:
    """One line a person reads: agreement and bit-exactness."""
    exact = "bit-exact" if summary["bit_exact"] else (
        f"NOT bit-exact: max diff {summary['max_diff_lsb']:g} LSB, first differing layer "
        f"{summary['first_differing_layer']}"
    )
    return (
        f"C-sim vs QKeras on {summary['images']} {summary['split']} images: argmax agreement "
        f"{summary['argmax_agreement']:.2%}, {exact} ({summary['images_per_second']:.0f} images/s in "
        f"{summary.get('processes', summary['workers'])} processes, compile {summary['compile_seconds']:.1f} s)"
    )
