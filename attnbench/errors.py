"""Exceptions that carry meaning for the harness.

`UserError` is bad input (suite file, CLI option, shape): the CLI prints its one-line
message and exits 2. `Unsupported` is raised by a kernel for a combination it cannot run:
the case is recorded with status `unsupported` and the reason, never attempted.
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
