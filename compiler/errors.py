"""User-facing errors.  The CLI turns them into one clear message and an exit code."""
from __future__ import annotations


class MoecError(Exception):
    """Base of errors meant for the user (no traceback unless --debug)."""

    exit_code = 2


class UserInputError(MoecError):
    """Bad input or usage: a bad model file, an unsupported op, a wrong input shape."""

    exit_code = 2


class UnsupportedError(UserInputError):
    """An op, attribute value or dtype moec does not handle."""


class VerificationError(MoecError):
    """The compiled code disagrees with the oracle."""

    exit_code = 1


class BuildError(MoecError):
    """The generated code failed to build (a moec bug: please report)."""

    exit_code = 3


class RuntimeFailure(MoecError):
    """The compiled code rejected its inputs or failed at run time."""

    exit_code = 2


# -- showing input text in messages ------------------------------------------------------------
# Names come from the model (node, value, input/output, symbol names, paths): a newline or a
# terminal escape in one must not forge a line ("VERIFIED") or recolour the terminal.

def _escape_char(c: str) -> str:
    return c if c.isprintable() else repr(c)[1:-1]  # \n, \t, \x1b, \u2028, \U000e0001 ...


def show_name(s, limit: int = 200) -> str:
    """A name from the input, safe inside a one-line message: every non-printable character
    (control characters, escape sequences, newlines, line/paragraph separators, format
    characters) is written as its Python escape, and a name longer than ``limit`` is cut
    (its length is said).  Quote it yourself: ``f"input '{show_name(n)}'"``."""
    s = str(s)
    cut = len(s) > limit
    out = "".join(_escape_char(c) for c in (s[:limit] if cut else s))
    return out + (f"... ({len(s)} characters)" if cut else "")


def one_line(msg, limit: int = 20000) -> str:
    """A whole message as one line of printable text (what the CLI prints for an error): the same
    escaping as :func:`show_name`, so no message can span lines or carry terminal escapes,
    whichever names it quotes."""
    return show_name(msg, limit)
