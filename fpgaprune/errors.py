"""The two ways a command can fail, mapped to the documented exit codes.

Exit 0: success. Exit 1 (`WorkFailed`): something broke during the work itself.
Exit 2 (`BadInput`): a config, mask spec, model file or data set is wrong; the message says
which and how to fix it, and nothing has been written.
"""


class FpgapruneError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 1


class BadInput(FpgapruneError):
    """The user's input is wrong (config, mask spec, model file, data). Exit code 2."""

    exit_code = 2


class WorkFailed(FpgapruneError):
    """A stage failed while working on valid input (e.g. a compiler error). Exit code 1."""

    exit_code = 1


def one_line(message: str) -> str:
    """Collapse a message to one line, so every error reads as a single line in a terminal."""
    return " ".join(str(message).split())
