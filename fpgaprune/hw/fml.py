"""The hls4ml model archive of an exported project (model.fml, a tar.gz), read safely.

hls4ml 1.3's `deserialize_model` extracts the archive with `tarfile.extractall` and no filter,
so a `../../x` entry, an absolute path or a link in a foreign project's archive writes outside
the folder it is meant for. Here the archive is checked member by member and extracted with
Python's "data" filter, the weight arrays the architecture refers to are checked to be plain
files of the archive, and hls4ml is handed a fresh archive of the checked files only.

    with checked_archive(project / "model.fml", project) as fml:
        hls_model = deserialize_model(fml, output_dir=workdir)
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import zlib
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadInput, option
from ..locks import scratch_dir

MAX_BYTES = 4 * 2**30  # far above any CNN's weights; stops a decompression bomb


@contextmanager
def checked_archive(archive: Path, project: Path):
    """Yield the path of a copy of `archive` holding only its checked plain files."""
    with scratch_dir("fml") as tmp:
        content, clean = Path(tmp) / "content", Path(tmp) / archive.name
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                members = checked_members(tar, archive, project)
                content.mkdir()
                tar.extractall(content, members=members, **_data_filter())
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise BadInput(
                f"{project}: {archive.name} is not a readable hls4ml model archive "
                f"({type(exc).__name__}); {option('export_again')}"
            ) from None
        files = sorted(p for p in content.rglob("*") if p.is_file())
        _check_array_references(content, archive, project)
        with tarfile.open(clean, mode="w:gz") as tar:
            for path in files:
                tar.add(path, arcname=path.relative_to(content).as_posix(), recursive=False)
        yield clean


def _data_filter() -> dict:
    """Python's own "data" extraction filter, where this Python has it (3.11.4 and later)."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def checked_members(tar: tarfile.TarFile, archive: Path, project: Path) -> list[tarfile.TarInfo]:
    """Every member, if all are plain files or folders inside the archive; else a BadInput."""
    members, total = [], 0
    for member in tar.getmembers():
        problem = member_problem(member)
        if problem:
            raise BadInput(
                f"{project}: {archive.name} holds the entry {member.name!r} ({problem}); a foreign "
                "HLS project is code: export it again yourself or C-simulate only projects you trust"
            )
        total += member.size
        if total > MAX_BYTES:
            raise BadInput(
                f"{project}: {archive.name} unpacks to more than {MAX_BYTES // 2**30} GiB; not an fpgaprune export"
            )
        members.append(member)
    return members


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why extracting `member` could write outside the target folder, or None."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in posixpath.normpath(name.replace("\\", "/")).split("/"):
        return "a path outside the archive folder"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device or other special file"
    return None


def _check_array_references(content: Path, archive: Path, project: Path) -> None:
    """The weight arrays model_arch.json names must be files of the archive (hls4ml opens
    `<folder>/<name>`, so a name with a path in it would read a file from elsewhere)."""
    arch = content / "model_arch.json"
    try:
        refs = [v for v in _strings(json.loads(arch.read_text())) if v.startswith("@ndarray:")]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput(f"{project}: {archive.name} has no readable model_arch.json; export the project again") from None
    for ref in refs:
        name = ref.removeprefix("@ndarray:")
        if "/" in name or "\\" in name or not (content / name).is_file():
            raise BadInput(
                f"{project}: {archive.name}: model_arch.json refers to {name!r}, not an array in the archive"
            )


def _strings(node):
    """Every string value in a parsed JSON document."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            yield node
