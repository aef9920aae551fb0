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
