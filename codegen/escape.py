"""The only way text from the input reaches generated source.

Model files and IR text are untrusted: value names, argument/output names, symbolic dimension
names, the model name and string attributes may hold quotes, backslashes, newlines, ``*/``,
``\"\"\"``, ``%`` or ``{}``.  Every emitter (C, the Triton launcher in Python, the AscendC
project's C++/CMake) puts such text into what it generates only through one function of this
module per language, and never into a comment or docstring (a literal is the only place that
has a complete escaping):

* :func:`c_string`: a C/C++ string literal (pure printable ASCII, everything else octal-escaped).
  Safe as a ``"%s"`` argument; never use input text as (part of) a printf-style format string.
* :func:`py_string` / :func:`py_value`: a Python literal (ASCII only, via ``ascii``), never inside
  another literal such as a docstring.
* :func:`cmake_string`: a CMake quoted argument (no variable references, no escapes left open).
* :func:`ident`: an identifier ``[A-Za-z_][A-Za-z0-9_]*`` made from a name (not injective: use it
  only for cosmetic parts such as a project name, never to tell two inputs apart).

Numbers go through ``int()`` / ``float()`` conversions at the emitter (``CEmitCtx.c_int`` etc.), so
a non-number fails loudly instead of being pasted.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np


def _text(s: Any) -> str:
    """A plain ``str`` copy of s (a ``str`` subclass cannot override how it is escaped)."""
    if not isinstance(s, str):
        raise TypeError(f"expected a string, got {type(s).__name__}")
    return str.__str__(s)


def c_string(s: str) -> str:
    """A C/C++ string literal whose bytes are s encoded as UTF-8.

    Only printable ASCII other than ``"``, ``\\`` and ``?`` (trigraphs) is kept; every other byte
    becomes a three-digit octal escape (which cannot absorb a following digit)."""
    out = []
    for ch in _text(s):
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127 and ch != "?":
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogatepass"))
    return '"' + "".join(out) + '"'


def py_string(s: str) -> str:
    """A Python string literal of s (ASCII only: every other character escaped by ``ascii``)."""
    return ascii(_text(s))


def py_value(v: Any) -> str:
    """A Python literal for an attribute value: None, bool, int, float (nan/inf included), str,
    or a tuple/list of those.  Anything else is a TypeError, never pasted."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return repr(None if v is None else bool(v))
    if isinstance(v, (int, np.integer)):
        return repr(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "float('nan')"
        if math.isinf(x):
            return "float('inf')" if x > 0 else "float('-inf')"
        return repr(x)
    if isinstance(v, str):
        return py_string(v)
    if isinstance(v, (tuple, list)):
        body = ", ".join(py_value(x) for x in v)
        if isinstance(v, tuple):
            return "(" + body + ("," if len(v) == 1 else "") + ")"
        return "[" + body + "]"
    raise TypeError(f"no Python literal for a {type(v).__name__}")


_CMAKE_ESC = {"\\": "\\\\", '"': '\\"', "$": "\\$", "@": "\\@", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def cmake_string(s: str) -> str:
    """A CMake quoted argument holding exactly s (no ``${...}`` expansion, no open escapes).

    CMake has no escape for other control characters: they are refused (ValueError)."""
    out = []
    for ch in _text(s):
        if ch in _CMAKE_ESC:
            out.append(_CMAKE_ESC[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            raise ValueError(f"a control character (U+{ord(ch):04X}) cannot be written into a CMake string")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def ident(s: str, default: str = "model") -> str:
    """An identifier made from s: every other character becomes ``_``; a leading digit is prefixed."""
    t = re.sub(r"[^A-Za-z0-9_]", "_", _text(s))[:64]
    if not t:
        return default
    if t[0].isdigit():
        t = "_" + t
    return t
