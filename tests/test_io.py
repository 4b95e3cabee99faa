"""Atomic outputs: renamed into place whole, with the modes the umask gives (not mkstemp's 0600)."""

import os
import stat

import pytest

from fpgaprune.io import atomic_dir, atomic_path, write_json


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_follow_the_umask(tmp_path, umask):
    """Colleagues on a shared server read a run the way they read any file its owner wrote."""
    write_json(tmp_path / "summary.json", {"a": 1})
    assert mode(tmp_path / "summary.json") == 0o666 & ~umask  # 0644 under umask 022
    with atomic_path(tmp_path / "model.h5") as tmp:
        with open(tmp, "w") as f:  # a writer that truncates the temporary file keeps its mode
            f.write("weights")
    assert mode(tmp_path / "model.h5") == 0o666 & ~umask
    with atomic_dir(tmp_path / "baseline") as tmp:
        (tmp / "config.yaml").write_text("name: x\n")
    assert mode(tmp_path / "baseline") == 0o777 & ~umask  # 0755 under umask 022
    assert mode(tmp_path / "baseline" / "config.yaml") == 0o666 & ~umask
    assert os.umask(umask) == umask  # reading the umask left it as it was
