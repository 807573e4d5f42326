"""Exceptions that carry meaning for the harness.

`UserError` is bad input (suite file, CLI option, shape): the CLI prints its one-line
message and exits 2. `Unsupported` is raised by a kernel for a combination it cannot run:
the case is recorded with status `unsupported` and the reason, never attempted.

`first_line` and `is_out_of_memory` turn any exception into a record's reason and status;
the runner and the CP ranks share them.
"""


class UserError(Exception):
    """Bad input; rendered as one line and exit code 2."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Unsupported(Exception):
    """A kernel or method cannot run this combination; `str(exc)` is the reason."""


class MaskTooLarge(UserError):
    """A mask, or a dense rendering of one, was asked for at a size that would not fit."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
