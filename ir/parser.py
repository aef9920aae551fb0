"""Parse moec's MLIR text form (what :mod:`moec.ir.printer` writes) back into a Module.

The grammar (lark, LALR) covers the subset of MLIR syntax the printer uses:
a builtin module of ``func.func`` functions whose bodies are generic-form ops
with builtin tensor types, attribute dictionaries, and ``loc("...")``.
Weights named by ``dense_resource<key>`` are looked up in the WeightStore
passed in (normally loaded from the files beside the text).
"""
from __future__ import annotations

import re
import struct
from typing import Dict, List, Optional

import ml_dtypes
import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedInput

from .core import Function, IRError, Module, ResourceRef, Value
from .opdef import build, lookup
from .types import DType, TensorType
from .weights import WeightStore

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
        _parser = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True)
    return _parser


def unquote(s: str) -> str:
    body = s[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nx = body[i + 1]
            if nx in '"\\':
                out += nx.encode()
                i += 2
            elif nx == "n":
                out += b"\n"
                i += 2
            elif nx == "t":
                out += b"\t"
                i += 2
            else:
                out.append(int(body[i + 1:i + 3], 16))
                i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    return out.decode("utf-8")


def parse_type(s: str) -> TensorType:
    m = re.fullmatch(r"tensor<(.*?)(?:,\s*(\"[^\"]*\"))?>", s.strip())
    if not m:
        raise IRError(f"bad tensor type '{s}'")
    parts = m.group(1).split("x")
    elem = DType.parse(parts[-1].strip())
    dims: List = []
    syms = unquote(m.group(2)).split(",") if m.group(2) else None
    k = 0
    for p in parts[:-1]:
        p = p.strip()
        if p == "?":
            name = None
            if syms is not None:
                if k >= len(syms):
                    raise IRError(f"tensor type '{s}': fewer symbol names than '?' dimensions")
                name = None if syms[k] == "?" else syms[k]
            k += 1
            dims.append(name)
        else:
            dims.append(int(p))
    return TensorType(elem, tuple(dims))


def _parse_hex_float(h: str, dt: DType) -> float:
    bits = int(h, 16)
    if dt == DType.F64:
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    if dt == DType.F32:
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if dt == DType.F16:
        return float(np.array(bits, np.uint16).view(np.float16))
    return float(np.array(bits, np.uint16).view(ml_dtypes.bfloat16))


_ELEM_RE = re.compile(r"\[|\]|,|true|false|0x[0-9A-Fa-f]+|-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")


def parse_dense(body: str, t: TensorType) -> np.ndarray:
    """Parse the inside of ``dense<...>`` into an array of type ``t``."""
    dt = t.dtype
    if not t.is_static:
        raise IRError(f"dense constant with non-static type {t}")
    body = body.strip()
    if not body:
        if int(np.prod(t.shape, dtype=np.int64)) != 0:
            raise IRError(f"empty dense literal for non-empty type {t}")
        return np.zeros(t.shape, dtype=dt.np)
    if body.startswith('"0x'):  # raw hex data
        raw = bytes.fromhex(body[3:-1])
        return np.frombuffer(raw, dtype=dt.np).reshape(t.shape).copy()
    toks = [m.group(0) for m in _ELEM_RE.finditer(body)]

    def scalar(tok):
        if tok in ("true", "false"):
            return tok == "true"
        if tok.startswith("0x"):
            return _parse_hex_float(tok, dt) if dt.is_float else int(tok, 16)
        return float(tok) if dt.is_float else int(tok)

    pos = [0]

    def rec():
        tok = toks[pos[0]]
        if tok == "[":
            pos[0] += 1
            items = []
            while toks[pos[0]] != "]":
                if toks[pos[0]] == ",":
                    pos[0] += 1
                    continue
                items.append(rec())
            pos[0] += 1
            return items
        pos[0] += 1
        return scalar(tok)

    v = rec()
    if not isinstance(v, list):
        return np.full(t.shape, v, dtype=dt.np)
    arr = np.array(v, dtype=dt.np) if dt.is_float or dt == DType.BOOL else np.array(v, dtype=np.int64).astype(dt.np)
    if arr.size == 0:
        arr = arr.reshape(t.shape)
    if arr.shape != tuple(t.shape):
        raise IRError(f"dense constant has shape {arr.shape}, its type says {t}")
    return arr


class _Build(Transformer):
    """Turns the parse tree into plain Python structures; ops are built afterwards."""

    def __init__(self):
        super().__init__()

    def a_int(self, c):
        return int(c[0])

    def a_float(self, c):
        return float(c[0])

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
            raise IRError(f"unsupported array attribute {c[0]}")
        items = [x.strip() for x in (m.group(2) or "").split(",") if x.strip()]
        if m.group(1) == "i64":
            return tuple(int(x) for x in items)
        return tuple(_parse_hex_float(x, DType.F64) if x.startswith("0x") else float(x) for x in items)

    def a_dense(self, c):
        return parse_dense(str(c[0])[6:-1], parse_type(str(c[1])))

    def a_resource(self, c):
        key = str(c[0])[len("dense_resource<"):-1].strip()
        return ("__resource__", key, parse_type(str(c[1])))

    def a_type(self, c):
        return DType.parse(str(c[0]))

    def entry(self, c):
        k = str(c[0])
        if k.startswith('"'):
            k = unquote(k)
        return (k, c[1])

    def attr_dict(self, c):
        return dict(x for x in c if x is not None)

    def mattrs(self, c):
        return c[0]

    def loc(self, c):
        return unquote(str(c[0]))

    def use(self, c):
        return (str(c[0])[1:], int(c[1]) if len(c) > 1 and c[1] is not None else None)

    def result_def(self, c):
        return (str(c[0])[1:], int(c[1]) if len(c) > 1 and c[1] is not None else 1)

    def one_result(self, c):
        return [parse_type(str(c[0]))]

    def many_results(self, c):
        return [parse_type(str(x)) for x in c if x is not None]

    def op(self, c):
        res, name, *rest = c
        uses = [x for x in rest if isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], Token)]
        # rest: uses..., attr_dict|None, in types..., results list, loc|None
        attrs = next((x for x in rest if isinstance(x, dict)), {})
        results = next(x for x in rest if isinstance(x, list))
        loc = rest[-1] if isinstance(rest[-1], str) else None
        return ("op", res, unquote(str(name)), uses, attrs, results, loc)

    def arg(self, c):
        return (str(c[0])[1:], parse_type(str(c[1])))

    def ret(self, c):
        return ("ret", [x for x in c if isinstance(x, tuple)])

    def func(self, c):
        return ("func", c)

    def start(self, c):
        return c


def _strip_nones(c):
    return [x for x in c if x is not None]


def parse_module(text: str, weights: Optional[WeightStore] = None, source: str = "<text>") -> Module:
    """Parse module text.  ``weights`` must hold every ``dense_resource`` key used."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        ctx = e.get_context(text, 60).rstrip()
        raise IRError(f"{source}:{e.line}:{e.column}: syntax error in moec IR\n{ctx}") from None
    except LarkError as e:
        raise IRError(f"{source}: cannot parse moec IR: {e}") from None
    items = _Build().transform(tree)
    ws = weights if weights is not None else WeightStore()
    m = Module(ws)
    if items and isinstance(items[0], dict):
        m.attrs = items[0]
        items = items[1:]
    for item in items:
        if item is None:
            continue
        m.functions.append(_build_func(item[1], ws, source))
    return m


def _build_func(c, ws: WeightStore, source: str) -> Function:
    sym = str(c[0])[1:]
    rest = c[1:]
    args = [x for x in rest if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], TensorType)]
    fattrs = next((x for x in rest if isinstance(x, dict)), {})
    body = [x for x in rest if isinstance(x, tuple) and x and x[0] in ("op", "ret")]
    env: Dict[str, Value] = {}
    fargs = []
    for n, t in args:
        v = Value(t, n)
        env[n] = v
        fargs.append(v)
    f = Function(sym, fargs, fattrs.get("moec.inputs", [a[0] for a in args]))
    f.output_names = list(fattrs.get("moec.outputs", []))

    def lookup_use(u, where):
        name, idx = u
        key = name if idx is None else f"{name}#{idx}"
        if key not in env:
            raise IRError(f"{source}: in @{sym}, {where} uses undefined value %{key}")
        return env[key]

    for item in body:
        if item[0] == "ret":
            f.outputs = [lookup_use(u, "func.return") for u in item[1]]
            continue
        _, res, name, uses, attrs, rtypes, loc = item
        cls = lookup(name)
        operands = [lookup_use(u, f"'{name}'") for u in uses]
        for k, v in list(attrs.items()):
            if isinstance(v, tuple) and len(v) == 3 and v[0] == "__resource__":
                if v[1] not in ws:
                    raise IRError(f"{source}: op '{name}' references weight '{v[1]}' that is not in the weight store")
                attrs[k] = ResourceRef(v[1])
        o = build(cls, operands, attrs, loc, result_types=rtypes)
        if res is not None:
            rname, count = res
            if count != len(o.results):
                raise IRError(f"{source}: '{name}' defines {count} results but its type lists {len(o.results)}")
            if count == 1:
                env[rname] = o.results[0]
            else:
                for i, r in enumerate(o.results):
                    env[f"{rname}#{i}"] = r
            o.results[0].name = rname
        f.ops.append(o)
    return f
