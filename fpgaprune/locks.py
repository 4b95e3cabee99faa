"""One process per run: an exclusive lock on the run (and its HLS projects) while a flow runs.

The lock file holds the holder's PID, so a second process is refused at once with a line that
names it, and the holder knows every temporary it finds under the run is a dead process's
leftover (`sweep_run`, `sweep_projects`).

    with hold(run.root, run.projects_root):
        ...   # nothing else writes these folders now
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from .errors import BadInput
from .run import CHECKPOINTS_DIR as CHECKPOINTS

LOCK_FILE = ".lock"
# Temporaries fpgaprune leaves when killed: atomic files and folders (.NAME.XXXX.tmp), the
# previous version during a replace (.NAME.old), TF checkpoint writes (NAME_temp).
# Per-process scratch folders in the system temp folder: fpgaprune-<what>-<pid>-XXXX.
SCRATCH_PREFIX = "fpgaprune-"


@contextmanager
def _lock(folder: Path):
    """Hold folder/.lock; it is removed on release, so a finished run leaves no trace of it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BadInput(f"{folder} is in use by process {holder}; wait for it to finish") from None
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing releases the lock


@contextmanager
def hold(*folders: Path):
    """Lock every folder (created if missing) for this process, in the order given."""
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(_lock(Path(folder)))
        yield


def _remove(paths) -> list[Path]:
    removed = []
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
        removed.append(path)
    return removed


def sweep_run(root: Path) -> list[Path]:
    """Remove what killed processes left in a run folder (call only while holding its lock)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for pattern in (".*.tmp", ".*.old") for p in root.rglob(pattern)]
    found += list((root / CHECKPOINTS).rglob("*_temp")) if (root / CHECKPOINTS).is_dir() else []
    return _remove(found)


def sweep_projects(root: Path) -> list[Path]:
    """Remove half-written project folders beside the projects (the projects' own files stay)."""
    root = Path(root)
    return _remove([p for pattern in (".*.tmp", ".*.old") for p in root.glob(pattern)]) if root.is_dir() else []


def scratch_dir(what: str, folder: str | None = None) -> tempfile.TemporaryDirectory:
    """A scratch folder (in the system temp folder by default) whose name carries this process's PID."""
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{what}-{os.getpid()}-", dir=folder)


def sweep_dead_scratch(root: str | None = None) -> list[Path]:
    """Remove scratch folders of processes that no longer run."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*-*"):
        parts = path.name[len(SCRATCH_PREFIX):].split("-")
        if len(parts) < 3 or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
