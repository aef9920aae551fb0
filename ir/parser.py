"""Parse moec's MLIR text form (what :mod:`moec.ir.printer` writes) back into a Module.

The grammar (lark, LALR) covers the subset of MLIR syntax the printer uses:
a builtin module of ``func.func`` functions whose bodies are generic-form ops
with builtin tensor types, attribute dictionaries, and ``loc("...")``.
Weights named by ``dense_resource<key>`` are looked up in the WeightStore
passed in (normally loaded from the files beside the text).

IR text is untrusted input (a ``model.mlir``, a cache entry, a string given to
the API).  Every way it can be wrong -- bad bytes, syntax, types, literals,
undefined or redefined values, attributes an op does not take, an ill-formed
op, a missing weight -- is reported as one :class:`IRParseError` (an
:class:`IRError` and a :class:`moec.errors.UserInputError`: exit 2 in the
CLI) with a one-line message that gives ``source:line:col`` where it is known.
Sizes are bounded before anything is allocated: tensor ranks (``MAX_RANK``),
dimensions and their products (they fit int64 in bytes), inline ``dense``
literals (``MAX_DENSE_ELEMENTS``), literal nesting and integer ranges.
"""
from __future__ import annotations

import re
import struct
from typing import Dict, List, Optional, Tuple, Union

import ml_dtypes
import numpy as np
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from moec.errors import UserInputError, show_name
from moec.ir.core import Function, IRError, Module, ResourceRef, Value
from moec.ir.opdef import build, lookup
from moec.ir.types import DType, TensorType
from moec.ir.weights import WeightStore

MAX_RANK = 32                 # tensor types of higher rank are refused
MAX_DENSE_ELEMENTS = 1 << 24  # larger constants belong in the weight store (dense_resource)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_MSG = 400                # characters of a quoted fragment in a message


class IRParseError(IRError, UserInputError):
    """IR text that moec cannot accept.  The message is one line: ``source:line:col: what``."""


GRAMMAR = r"""
start: "module" mattrs? "{" func* "}"
mattrs: "attributes" attr_dict

func: "func.func" SYMBOL "(" [arg ("," arg)*] ")" "->" "(" [TENSOR ("," TENSOR)*] ")" mattrs? "{" op* ret "}"
arg: VALUE_ID ":" TENSOR

op: [result_def "="] STRING "(" [use ("," use)*] ")" attr_dict? ":" "(" [TENSOR ("," TENSOR)*] ")" "->" results loc?
result_def: VALUE_ID (":" INT)?
results: TENSOR                                  -> one_result
       | "(" [TENSOR ("," TENSOR)*] ")"          -> many_results
use: VALUE_ID ("#" INT)?
ret: "func.return" [use ("," use)* ":" TENSOR ("," TENSOR)*]
loc: "loc" "(" STRING ")"

attr_dict: "{" [entry ("," entry)*] "}"
entry: (BARE_KEY | STRING) "=" attr
?attr: INT ":" "i64"             -> a_int
     | SIGNED_FLOAT ":" "f64"    -> a_float
     | HEX ":" "f64"             -> a_hexfloat
     | STRING                    -> a_str
     | "true"                    -> a_true
     | "false"                   -> a_false
     | ARRAY                     -> a_array
     | "[" [STRING ("," STRING)*] "]" -> a_strs
     | DENSE ":" TENSOR          -> a_dense
     | RESOURCE ":" TENSOR       -> a_resource
     | ELEMTYPE                  -> a_type

ELEMTYPE.2: /(f64|f32|f16|bf16|i64|i32|i16|i8|ui8|i1|i4|ui4)(?![A-Za-z0-9_])/
TENSOR: /tensor<[^>]*>/
ARRAY: /array<[^>]*>/
DENSE: /dense<[^>]*>/
RESOURCE: /dense_resource<[^>]*>/
HEX: /0x[0-9A-Fa-f]+/
INT.2: /-?[0-9]+(?![0-9.eExX])/
SIGNED_FLOAT: /-?[0-9]+\.[0-9]*([eE][-+]?[0-9]+)?/
VALUE_ID: /%[A-Za-z0-9_$.\-]+/
SYMBOL: /@[A-Za-z_][A-Za-z0-9_$.]*/
BARE_KEY: /[A-Za-z_][A-Za-z0-9_$.]*/
STRING: /"(\\.|[^"\\])*"/
COMMENT: /\/\/[^\n]*/

%import common.WS
%ignore WS
%ignore COMMENT
"""

_parser = None


def _lark():
    global _parser
    if _parser is None:
        _parser = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True, propagate_positions=True)
    return _parser


# -- messages ---------------------------------------------------------------------------------------

def printable(s: str, limit: int = _MAX_MSG) -> str:
    """``s`` with control, format and other unprintable characters escaped, cut to ``limit``
    (moec.errors.show_name: the one way input text enters a message)."""
    return show_name(s, limit)


def _where(source: str, line=None, col=None) -> str:
    if line is None or line < 1:
        return source
    return f"{source}:{line}:{col}" if col else f"{source}:{line}"


def _fail(msg: str) -> IRParseError:
    return IRParseError(printable(msg, 4 * _MAX_MSG))


# -- scalars and strings ----------------------------------------------------------------------------

def unquote(s: str) -> str:
    """The value of a quoted string literal as the printer writes it (``\\"``, ``\\\\``, ``\\n``, ``\\t``,
    ``\\XX`` bytes of UTF-8)."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise IRError(f"bad string literal {printable(s, 60)}")
    body = s[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nx = body[i + 1:i + 2]
            if nx in ('"', "\\"):
                out += nx.encode()
                i += 2
            elif nx == "n":
                out += b"\n"
                i += 2
            elif nx == "t":
                out += b"\t"
                i += 2
            else:
                hx = body[i + 1:i + 3]
                if not re.fullmatch(r"[0-9A-Fa-f]{2}", hx):
                    raise IRError(f"bad escape '\\{printable(hx, 8)}' in string literal {printable(s, 60)}")
                out.append(int(hx, 16))
                i += 3
        else:
            try:
                out += ch.encode("utf-8")
            except UnicodeEncodeError:
                raise IRError(f"string literal {printable(s, 60)} holds a lone surrogate") from None
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise IRError(f"string literal {printable(s, 60)} is not valid UTF-8 once unescaped") from None


def _int64(tok: str, what: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", tok):
        raise IRError(f"{what}: expected an integer, got '{printable(tok, 60)}'")
    if len(tok) > 21:
        raise IRError(f"{what}: integer {printable(tok, 30)} does not fit in 64 bits")
    v = int(tok)
    if not INT64_MIN <= v <= INT64_MAX:
        raise IRError(f"{what}: integer {v} does not fit in 64 bits")
    return v


def _float(tok: str, what: str) -> float:
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", tok):
        raise IRError(f"{what}: expected a float, got '{printable(tok, 60)}'")
    return float(tok)


def _parse_hex_float(h: str, dt: DType) -> float:
    if not re.fullmatch(r"0x[0-9A-Fa-f]+", h):
        raise IRError(f"bad hexadecimal float '{printable(h, 60)}'")
    bits = int(h, 16) if len(h) <= 2 + 16 else 1 << 64
    if dt not in (DType.F64, DType.F32, DType.F16, DType.BF16):
        raise IRError(f"hexadecimal float literal for non-float type {dt.mlir}")
    if bits >= 1 << dt.bits:
        raise IRError(f"hexadecimal float {printable(h, 40)} has more than {dt.bits} bits for {dt.mlir}")
    if dt == DType.F64:
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    if dt == DType.F32:
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if dt == DType.F16:
        return float(np.array(bits, np.uint16).view(np.float16))
    return float(np.array(bits, np.uint16).view(ml_dtypes.bfloat16))


# -- types ------------------------------------------------------------------------------------------

_TYPE_RE = re.compile(r'tensor<([^",<>]*?)(?:,\s*("(?:\\.|[^"\\])*"))?\s*>', re.S)


def parse_type(s: str) -> TensorType:
    """A tensor type as the printer writes it, e.g. ``tensor<?x64xf32, "T">``.

    Bounds: rank <= MAX_RANK, every dimension and the product of the static ones (times the element
    size) fit int64, one symbol name per ``?`` dimension."""
    if not isinstance(s, str):
        raise IRParseError(f"a tensor type must be a string, got {type(s).__name__}")
    m = _TYPE_RE.fullmatch(s.strip())
    if not m:
        raise IRParseError(f"bad tensor type '{printable(s, 80)}'")
    parts = m.group(1).split("x")
    if len(parts) - 1 > MAX_RANK:
        raise IRParseError(f"tensor type '{printable(s, 80)}' has rank {len(parts) - 1}, more than {MAX_RANK}")
    try:
        elem = DType.parse(parts[-1].strip())
    except ValueError:
        raise IRParseError(f"tensor type '{printable(s, 80)}': unknown element type "
                           f"'{printable(parts[-1].strip(), 40)}'") from None
    syms = None
    if m.group(2):
        try:
            syms = unquote(m.group(2)).split(",")
        except IRError as e:
            raise IRParseError(f"tensor type '{printable(s, 80)}': {e}") from None
    dims: List = []
    k = 0
    size = elem.itemsize
    for p in parts[:-1]:
        p = p.strip()
        if p == "?":
            name = None
            if syms is not None:
                if k >= len(syms):
                    raise IRParseError(f"tensor type '{printable(s, 80)}': fewer symbol names than '?' dimensions")
                if syms[k] == "":
                    raise IRParseError(f"tensor type '{printable(s, 80)}': empty symbol name")
                name = None if syms[k] == "?" else syms[k]
            k += 1
            dims.append(name)
        elif re.fullmatch(r"[0-9]+", p):
            if len(p) > 19 or int(p) > INT64_MAX:
                raise IRParseError(f"tensor type '{printable(s, 80)}': dimension {printable(p, 30)} does not fit int64")
            d = int(p)
            size *= max(d, 1)
            if size > INT64_MAX:
                raise IRParseError(f"tensor type '{printable(s, 80)}': the dimensions' product overflows int64")
            dims.append(d)
        else:
            raise IRParseError(f"tensor type '{printable(s, 80)}': bad dimension '{printable(p, 30)}'")
    if syms is not None and k != len(syms):
        raise IRParseError(f"tensor type '{printable(s, 80)}': {len(syms)} symbol names for {k} '?' dimensions")
    return TensorType(elem, tuple(dims))


# -- dense literals ---------------------------------------------------------------------------------

_ELEM_TOK = re.compile(r"\s*(\[|\]|,|true|false|0x[0-9A-Fa-f]+|-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


def _int_range(dt: DType) -> Tuple[int, int]:
    if dt == DType.BOOL:
        return 0, 1
    info = ml_dtypes.iinfo(dt.np) if dt in (DType.I4, DType.U4) else np.iinfo(dt.np)
    return int(info.min), int(info.max)


def _scalar(tok: str, dt: DType):
    if dt == DType.BOOL:
        if tok in ("true", "false"):
            return tok == "true"
        if tok in ("0", "1"):
            return tok == "1"
        raise IRError(f"'{printable(tok, 40)}' is not an i1 value (true, false)")
    if tok in ("true", "false"):
        raise IRError(f"'{tok}' is not a {dt.mlir} value")
    if dt.is_float:
        return _parse_hex_float(tok, dt) if tok.startswith("0x") else _float(tok, "dense literal")
    if tok.startswith("0x"):
        v = int(tok, 16) if len(tok) <= 18 else 1 << 64
    else:
        if not re.fullmatch(r"-?[0-9]+", tok):
            raise IRError(f"'{printable(tok, 40)}' is not a {dt.mlir} value")
        v = int(tok) if len(tok) <= 21 else 1 << 64
    lo, hi = _int_range(dt)
    if not lo <= v <= hi:
        raise IRError(f"value {printable(tok, 40)} is out of range for {dt.mlir}")
    return v


def parse_dense(body: str, t: TensorType) -> np.ndarray:
    """Parse the inside of ``dense<...>`` into an array of type ``t`` (checked against ``t`` exactly)."""
    dt = t.dtype
    if not t.is_static:
        raise IRError(f"dense constant with non-static type {t}")
    n = 1
    for d in t.shape:
        n *= d
    body = body.strip()
    if not body:
        if n != 0:
            raise IRError(f"empty dense literal for non-empty type {t}")
        return np.zeros(t.shape, dtype=dt.np)
    if body.startswith('"'):  # raw hex data
        m = re.fullmatch(r'"0x((?:[0-9A-Fa-f]{2})*)"', body)
        if not m:
            raise IRError(f"bad hex data in dense literal of type {t}")
        raw = bytes.fromhex(m.group(1))
        if len(raw) != n * dt.np.itemsize:
            raise IRError(f"dense hex literal has {len(raw)} bytes, type {t} needs {n * dt.np.itemsize}")
        if dt == DType.BOOL:
            return (np.frombuffer(raw, np.uint8) != 0).reshape(t.shape)
        if dt in (DType.I4, DType.U4):
            b = np.frombuffer(raw, np.int8 if dt == DType.I4 else np.uint8)
            lo, hi = _int_range(dt)
            if b.size and (b.min() < lo or b.max() > hi):
                raise IRError(f"dense hex literal holds values out of range for {dt.mlir}")
            return b.astype(dt.np).reshape(t.shape)
        return np.frombuffer(raw, dtype=dt.np).reshape(t.shape).copy()
    # tokenise strictly: anything but numbers, true/false, brackets and commas is an error
    toks: List[str] = []
    pos = 0
    while pos < len(body):
        m = _ELEM_TOK.match(body, pos)
        if not m:
            raise IRError(f"bad element '{printable(body[pos:pos + 20].strip(), 20)}' in dense literal of type {t}")
        toks.append(m.group(1))
        pos = m.end()
    if len(toks) == 1 and toks[0] not in "[],":  # splat
        if n > MAX_DENSE_ELEMENTS:
            raise IRError(f"dense literal of type {t} has {n} elements, more than {MAX_DENSE_ELEMENTS}; "
                          "store it as a weight (dense_resource)")
        with np.errstate(over="ignore"):
            return np.full(t.shape, _scalar(toks[0], dt), dtype=dt.np)
    if t.rank == 0 or toks[0] != "[":
        raise IRError(f"dense literal does not match type {t}")
    # nested lists, checked against the shape as they close (iterative: no recursion on input depth)
    flat = []
    counts: List[int] = []  # items so far in each open list
    expect_item = True
    for i, tok in enumerate(toks):
        if tok == "[":
            if not expect_item or len(counts) >= t.rank:
                raise IRError(f"dense literal nests deeper than type {t} (rank {t.rank})")
            counts.append(0)
            expect_item = True
        elif tok == "]":
            if not counts:
                raise IRError(f"unbalanced ']' in dense literal of type {t}")
            if expect_item and counts[-1] > 0:
                raise IRError(f"dense literal of type {t}: ',' before ']'")
            c = counts.pop()
            if c != t.shape[len(counts)]:
                raise IRError(f"dense literal of type {t}: a list at depth {len(counts)} has {c} elements, "
                              f"the type says {t.shape[len(counts)]}")
            if counts:
                counts[-1] += 1
            elif i != len(toks) - 1:
                raise IRError(f"dense literal of type {t}: text after the closing ']'")
            expect_item = False
        elif tok == ",":
            if expect_item or not counts:
                raise IRError(f"dense literal of type {t}: misplaced ','")
            expect_item = True
        else:
            if not expect_item or len(counts) != t.rank:
                raise IRError(f"dense literal does not match type {t}")
            flat.append(_scalar(tok, dt))
            counts[-1] += 1
            expect_item = False
    if counts:
        raise IRError(f"unbalanced '[' in dense literal of type {t}")
    if len(flat) != n:  # pragma: no cover - guaranteed by the per-list counts
        raise IRError(f"dense literal has {len(flat)} elements, type {t} has {n}")
    with np.errstate(over="ignore"):
        if dt.is_float or dt == DType.BOOL:
            arr = np.array(flat, dtype=dt.np)
        else:
            arr = np.array(flat, dtype=np.int64 if dt != DType.U8 else np.uint8).astype(dt.np)
    return arr.reshape(t.shape)


# -- the parse tree ---------------------------------------------------------------------------------

def _pos(meta) -> Tuple[Optional[int], Optional[int]]:
    return (getattr(meta, "line", None), getattr(meta, "column", None)) if meta is not None else (None, None)


class _Build(Transformer):
    """Turns the parse tree into plain Python structures; ops are built afterwards."""

    def a_int(self, c):
        return _int64(str(c[0]), "integer attribute")

    def a_float(self, c):
        return _float(str(c[0]), "float attribute")

    def a_hexfloat(self, c):
        return _parse_hex_float(str(c[0]), DType.F64)

    def a_str(self, c):
        return unquote(str(c[0]))

    def a_true(self, c):
        return True

    def a_false(self, c):
        return False

    def a_strs(self, c):
        return [unquote(str(x)) for x in c if x is not None]

    def a_array(self, c):
        m = re.fullmatch(r"array<\s*(i64|f64)\s*(?::(.*))?>", str(c[0]), re.S)
        if not m:
            raise IRError(f"unsupported array attribute '{printable(str(c[0]), 60)}'")
        items = [x.strip() for x in (m.group(2) or "").split(",")]
        if items == [""]:
            items = []
        if m.group(1) == "i64":
            return tuple(_int64(x, "array<i64> element") for x in items)
        return tuple(_parse_hex_float(x, DType.F64) if x.startswith("0x") else _float(x, "array<f64> element")
                     for x in items)

    def a_dense(self, c):
        return parse_dense(str(c[0])[6:-1], parse_type(str(c[1])))

    def a_resource(self, c):
        key = str(c[0])[len("dense_resource<"):-1].strip()
        if not key:
            raise IRError("dense_resource<> names no weight")
        return ("__resource__", key, parse_type(str(c[1])))

    def a_type(self, c):
        return DType.parse(str(c[0]))

    def entry(self, c):
        k = str(c[0])
        if k.startswith('"'):
            k = unquote(k)
        return (k, c[1])

    def attr_dict(self, c):
        out = {}
        for k, v in (x for x in c if x is not None):
            if k in out:
                raise IRError(f"attribute '{printable(k, 60)}' given twice")
            out[k] = v
        return out

    def mattrs(self, c):
        return c[0]

    def loc(self, c):
        return unquote(str(c[0]))

    def use(self, c):
        idx = c[1] if len(c) > 1 else None
        return ("use", str(c[0])[1:], None if idx is None else _int64(str(idx), "result index"))

    def result_def(self, c):
        n = c[1] if len(c) > 1 else None
        return (str(c[0])[1:], 1 if n is None else _int64(str(n), "result count"))

    def one_result(self, c):
        return [parse_type(str(c[0]))]

    def many_results(self, c):
        return [parse_type(str(x)) for x in c if x is not None]

    @v_args(meta=True)
    def op(self, meta, c):
        res, name, *rest = c
        uses = [x for x in rest if isinstance(x, tuple) and x and x[0] == "use"]
        attrs = next((x for x in rest if isinstance(x, dict)), {})
        in_types = [parse_type(str(x)) for x in rest if isinstance(x, Token) and x.type == "TENSOR"]
        results = next(x for x in rest if isinstance(x, list))
        loc = rest[-1] if isinstance(rest[-1], str) and not isinstance(rest[-1], Token) else None
        return ("op", _pos(meta), res, unquote(str(name)), uses, attrs, in_types, results, loc)

    @v_args(meta=True)
    def arg(self, meta, c):
        return ("arg", _pos(meta), str(c[0])[1:], parse_type(str(c[1])))

    @v_args(meta=True)
    def ret(self, meta, c):
        return ("ret", _pos(meta), [x for x in c if isinstance(x, tuple)],
                [parse_type(str(x)) for x in c if isinstance(x, Token) and x.type == "TENSOR"])

    @v_args(meta=True)
    def func(self, meta, c):
        return ("func", _pos(meta), c)

    def start(self, c):
        return c


# -- building the module ----------------------------------------------------------------------------

def _decode(text: Union[str, bytes, bytearray], source: str) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            line = bytes(text[:e.start]).count(b"\n") + 1
            col = e.start - (bytes(text[:e.start]).rfind(b"\n") + 1) + 1
            raise _fail(f"{_where(source, line, col)}: IR text is not valid UTF-8 (byte 0x{text[e.start]:02x})") from None
    if not isinstance(text, str):
        raise _fail(f"{source}: IR text must be str or bytes, got {type(text).__name__}")
    return text


def _syntax_error(e: UnexpectedInput, text: str, source: str) -> IRParseError:
    line, col = getattr(e, "line", None), getattr(e, "column", None)
    if isinstance(e, UnexpectedEOF) or line is None or line < 1:
        return _fail(f"{_where(source, text.count(chr(10)) + 1)}: syntax error in moec IR: unexpected end of text")
    if isinstance(e, UnexpectedCharacters):
        what = f"character {printable(repr(text[e.pos_in_stream]) if e.pos_in_stream < len(text) else 'EOF')}"
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        what = "end of text" if tok.type == "$END" else f"'{printable(str(tok), 40)}'"
        exp = sorted(e.expected or ())
        if exp:
            what += f" (expected {', '.join(exp[:6])}{', ...' if len(exp) > 6 else ''})"
    else:
        what = "input"
    return _fail(f"{_where(source, line, col)}: syntax error in moec IR: unexpected {what}")


def parse_module(text: Union[str, bytes], weights: Optional[WeightStore] = None, source: str = "<text>",
                 verify: bool = True) -> Module:
    """Parse module text (``str``, or UTF-8 ``bytes``).  ``weights`` must hold every ``dense_resource`` key used.

    Any problem, including (with ``verify``, the default) an op or module that does not verify, raises
    :class:`IRParseError` with one line ``source:line:col: what`` -- never another exception."""
    source = printable(str(source), 200)
    try:
        text = _decode(text, source)
        try:
            tree = _lark().parse(text)
        except UnexpectedInput as e:
            raise _syntax_error(e, text, source) from None
        try:
            items = _Build().transform(tree)
        except VisitError as e:
            line, col = None, None
            obj = e.obj
            if isinstance(obj, Tree):
                line, col = _pos(obj.meta) if not obj.meta.empty else (None, None)
            elif isinstance(obj, Token):
                line, col = obj.line, obj.column
            orig = e.orig_exc
            why = str(orig) if isinstance(orig, IRError) else f"{type(orig).__name__}: {orig}"
            raise _fail(f"{_where(source, line, col)}: {why}") from None
        ws = weights if weights is not None else WeightStore()
        m = Module(ws)
        if items and isinstance(items[0], dict):
            m.attrs = items[0]
            items = items[1:]
        names = set()
        for item in items:
            if item is None:
                continue
            f = _build_func(item, ws, source)
            if f.name in names:
                raise _fail(f"{_where(source, *item[1])}: function @{f.name} defined twice")
            names.add(f.name)
            m.functions.append(f)
        if verify:
            from moec.ir.verifier import verify_module
            try:
                verify_module(m)
            except IRError as e:
                raise _fail(f"{source}: {e}") from None
        return m
    except IRParseError:
        raise
    except IRError as e:
        raise _fail(f"{source}: {e}") from None
    except RecursionError:
        raise _fail(f"{source}: IR text nested too deeply") from None
    except MemoryError:
        raise _fail(f"{source}: IR text too large to hold in memory") from None
    except Exception as e:  # a case not foreseen above: still an error in the text, never a traceback
        raise _fail(f"{source}: cannot parse moec IR: {type(e).__name__}: {e}") from None


def _str_list(v, what: str) -> List[str]:
    if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
        raise IRError(f"{what} must be a list of strings")
    return list(v)


def _build_func(item, ws: WeightStore, source: str) -> Function:
    _, fpos, c = item
    sym = str(c[0])[1:]
    rest = c[1:]
    here = _where(source, *fpos)
    args = [x for x in rest if isinstance(x, tuple) and x and x[0] == "arg"]
    rtypes = [parse_type(str(x)) for x in rest if isinstance(x, Token) and x.type == "TENSOR"]
    fattrs = next((x for x in rest if isinstance(x, dict)), {})
    body = [x for x in rest if isinstance(x, tuple) and x and x[0] in ("op", "ret")]
    env: Dict[str, Value] = {}
    fargs = []
    for _, apos, n, t in args:
        if n in env:
            raise _fail(f"{_where(source, *apos)}: in @{sym}, argument %{n} defined twice")
        v = Value(t, n)
        env[n] = v
        fargs.append(v)
    try:
        in_names = _str_list(fattrs.get("moec.inputs", [a[2] for a in args]), "moec.inputs")
        out_names = _str_list(fattrs.get("moec.outputs", []), "moec.outputs")
    except IRError as e:
        raise _fail(f"{here}: in @{sym}: {e}") from None
    if len(in_names) != len(fargs):
        raise _fail(f"{here}: @{sym} has {len(fargs)} arguments but {len(in_names)} names in moec.inputs")
    f = Function(sym, fargs, in_names)
    f.arg_names = in_names
    f.output_names = out_names

    def lookup_use(u, where, pos):
        _, name, idx = u
        key = name if idx is None else f"{name}#{idx}"
        if key not in env:
            raise _fail(f"{_where(source, *pos)}: in @{sym}, {where} uses undefined value %{key}")
        return env[key]

    for item in body:
        if item[0] == "ret":
            _, pos, uses, types = item
            f.outputs = [lookup_use(u, "func.return", pos) for u in uses]
            if len(types) != len(uses) or len(rtypes) != len(uses):
                raise _fail(f"{_where(source, *pos)}: in @{sym}, func.return gives {len(uses)} values, "
                            f"{len(types)} types, and the signature {len(rtypes)} result types")
            for i, (v, t, rt) in enumerate(zip(f.outputs, types, rtypes)):
                if not (v.type == t == rt):
                    raise _fail(f"{_where(source, *pos)}: in @{sym}, result #{i} is {v.type}, "
                                f"listed as {t}, declared {rt}")
            continue
        _, pos, res, name, uses, attrs, in_types, rtypes_op, loc = item
        at = _where(source, *pos)
        try:
            cls = lookup(name)
            operands = [lookup_use(u, f"'{name}'", pos) for u in uses]
            if len(in_types) != len(operands):
                raise IRError(f"'{name}' has {len(operands)} operands but lists {len(in_types)} operand types")
            for i, (v, t) in enumerate(zip(operands, in_types)):
                if v.type != t:
                    raise IRError(f"'{name}' operand #{i} is {v.type} but is listed as {t}")
            for k, v in list(attrs.items()):
                if isinstance(v, tuple) and len(v) == 3 and v[0] == "__resource__":
                    if v[1] not in ws:
                        raise IRError(f"op '{name}' references weight '{v[1]}' that is not in the weight store")
                    attrs[k] = ResourceRef(v[1])
            o = build(cls, operands, attrs, loc, result_types=rtypes_op)
            if res is not None:
                rname, count = res
                if count < 1 or count != len(o.results):
                    raise IRError(f"'{name}' defines {count} results but its type lists {len(o.results)}")
                keys = [rname] if count == 1 else [f"{rname}#{i}" for i in range(count)]
                if any(k in env for k in keys):
                    raise IRError(f"'{name}' redefines %{rname}")
                for k, r in zip(keys, o.results):
                    env[k] = r
                o.results[0].name = rname
            elif o.results:
                raise IRError(f"'{name}' has {len(o.results)} results but names none")
            try:
                o.verify()
            except IRError:
                raise
            except Exception as e:  # an op's verifier tripped over a malformed operand or attribute
                raise IRError(f"op {o.describe()}: {type(e).__name__}: {e}") from None
        except IRParseError:
            raise
        except IRError as e:
            raise _fail(f"{at}: in @{sym}: {e}") from None
        f.ops.append(o)
    return f
