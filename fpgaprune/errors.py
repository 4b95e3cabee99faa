"""The two ways a command can fail, mapped to the documented exit codes.

Exit 0: success. Exit 1 (`WorkFailed`): something broke during the work itself.
Exit 2 (`BadInput`): a config, mask spec, model file or data set is wrong; the message says
which and how to fix it, and nothing has been written.

Library messages say how to fix a problem in the library's own words ("set force=True"); the
CLI shows the same message with its flags ("pass --force"). A message names a fix with
`option("force")` or `run_step("prune")`, and `for_cli` renders it for a terminal:

    raise BadInput(f"{folder} already exists; {option('force')} to replace it")
"""

from __future__ import annotations

import errno
import re

# Options a message can point to: (library wording, CLI wording).
OPTIONS = {
    "force": ("set force=True", "pass --force"),
    "resume": ("set resume=True", "pass --resume"),
    "no_resume": ("leave resume off", "run without --resume"),
    "allow_custom_code": ("set model.allow_custom_code: true", "pass --allow-custom-code"),
    "layer": ("report layer", "--layer"),
    "channel": ("report channel", "--channel"),
    "images": ("csim images", "--images"),
    "from_baseline": ("transfer.start_from: baseline", "--from baseline"),
    "export_again": ("export it again with force=True", "export it again with `fpgaprune export --force`"),
}
# Steps a message can send the user to: the CLI names the command or make target.
STEP_COMMANDS = {
    "baseline": "fpgaprune train --config ...",
    "analyze": "fpgaprune analyze --config ...",
    "prune": "make prune",
    "reduce": "fpgaprune reduce --config ...",
    "transfer": "make transfer",
    "quantize": "fpgaprune quantize --config ...",
    "export": "fpgaprune export",
    "accounting": "make hls",
}
_MARK = re.compile(r"\x00(option|step):(\w+)\x00")


def option(name: str) -> str:
    """A placeholder for how to set option `name`; rendered by `BadInput.__str__` / `for_cli`."""
    if name not in OPTIONS:
        raise KeyError(name)
    return f"\x00option:{name}\x00"


def run_step(step: str) -> str:
    """A placeholder for "run the `step` step first"."""
    if step not in STEP_COMMANDS:
        raise KeyError(step)
    return f"\x00step:{step}\x00"


def render(message: str, cli: bool) -> str:
    def word(m: re.Match) -> str:
        kind, name = m.groups()
        if kind == "option":
            return OPTIONS[name][1 if cli else 0]
        return f"run `{STEP_COMMANDS[name]}` first" if cli else f"run the {name!r} step first"

    return _MARK.sub(word, message)


class FpgapruneError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 1

    def __str__(self) -> str:
        return render(super().__str__(), cli=False)

    @property
    def raw(self) -> str:
        """The message with its fix placeholders, for wrapping in a longer message."""
        return str(self.args[0]) if self.args else ""

    def for_cli(self) -> str:
        """The message with the CLI's flag and command names, on one line."""
        return one_line(render(super().__str__(), cli=True))


class BadInput(FpgapruneError):
    """The user's input is wrong (config, mask spec, model file, data). Exit code 2."""

    exit_code = 2


class WorkFailed(FpgapruneError):
    """A stage failed while working on valid input (e.g. a compiler error). Exit code 1."""

    exit_code = 1


def one_line(message: object) -> str:
    """Collapse a message to one line, so every error reads as a single line in a terminal."""
    return " ".join(str(message).split())


# What the OS (or TF / h5py, which wrap it in their own errors) says, -> (kind, advice).
_STORAGE_FAULTS = (
    ((errno.ENOSPC, errno.EDQUOT), "No space left on device", "no space left on the device; free some and run again"),
    ((errno.EROFS,), "Read-only file system", "read-only file system; choose a writable runs_dir / export.output_dir"),
    ((errno.EACCES, errno.EPERM), "Permission denied", "permission denied; choose a folder you can write"),
    ((errno.ENAMETOOLONG,), "File name too long", "file name too long; choose a shorter run name"),
)


def storage_fault(exc: BaseException) -> FpgapruneError | None:
    """One-line error for a full disk, read-only or forbidden folder, or too long a name; else None.

    A full disk is a failure during the work (exit 1); a folder that cannot be written or a name
    too long for the file system is the user's input (exit 2).
    """
    text = str(exc)
    code = getattr(exc, "errno", None)
    for codes, words, advice in _STORAGE_FAULTS:
        if code in codes or words in text:
            where = getattr(exc, "filename", None)
            where = f"{where}: " if where else ""
            kind = WorkFailed if codes[0] == errno.ENOSPC else BadInput
            return kind(f"{where}{advice}")
    return None
