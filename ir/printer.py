"""Print a module as MLIR text (generic op form, builtin types, dense_resource weights).

The output parses with MLIR's own parser (unregistered dialects allowed) and
with :mod:`moec.ir.parser`; ``print(parse(print(m))) == print(m)``.
"""
from __future__ import annotations

import math
import re
import struct
from typing import Dict, List

import ml_dtypes
import numpy as np

from moec.ir.core import Function, Module, Operation, ResourceRef, Value
from moec.ir.types import DType, TensorType, format_type

_ID_RE = re.compile(r"[A-Za-z_$.\-][A-Za-z0-9_$.\-]*|[0-9]+")
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")


def quote(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def _hex_bits(x: float, dt: DType) -> str:
    if dt == DType.F64:
        (b,) = struct.unpack("<Q", struct.pack("<d", x))
        return f"0x{b:016X}"
    if dt == DType.F32:
        (b,) = struct.unpack("<I", struct.pack("<f", x))
        return f"0x{b:08X}"
    if dt == DType.F16:
        return f"0x{int(np.array(x, np.float16).view(np.uint16)):04X}"
    if dt == DType.BF16:
        return f"0x{int(np.array(x, ml_dtypes.bfloat16).view(np.uint16)):04X}"
    raise ValueError(dt)


def format_float(x, dt: DType = DType.F64) -> str:
    """Shortest text that parses back to exactly the same value of type ``dt``."""
    xf = float(x)
    if math.isnan(xf) or math.isinf(xf):
        return _hex_bits(xf, dt)
    s = str(np.asarray(x, dt.np)[()]) if dt != DType.F64 else repr(xf)
    if s in ("inf", "-inf", "nan"):
        return _hex_bits(xf, dt)
    if "e" in s or "E" in s:
        mant, exp = s.lower().split("e")
        if "." not in mant:
            mant += ".0"
        s = f"{mant}e{exp}"
    elif "." not in s:
        s += ".0"
    return s


def _dense_elems(a: np.ndarray, dt: DType) -> str:
    if dt == DType.BOOL:
        fmt = lambda v: "true" if v else "false"  # noqa: E731
    elif dt.is_float:
        fmt = lambda v: format_float(v, dt)  # noqa: E731
    else:
        fmt = lambda v: str(int(v))  # noqa: E731

    def rec(x):
        if x.ndim == 0:
            return fmt(x[()])
        return "[" + ", ".join(rec(x[i]) for i in range(x.shape[0])) + "]"

    flat = a.reshape(-1)
    if a.size > 1 and np.all(flat == flat[0]) and not (dt.is_float and np.isnan(flat[0])):
        # splat; bit-identical check so that -0.0 and 0.0 are not merged
        if dt.is_float and np.all(flat.view(np.uint8).reshape(a.size, -1) == flat[:1].view(np.uint8)):
            return fmt(flat[0])
        if not dt.is_float:
            return fmt(flat[0])
    return rec(a)


def format_dense(a: np.ndarray) -> str:
    dt = DType.from_np(a.dtype)
    t = TensorType(dt, a.shape)
    if a.size == 0:  # MLIR's spelling of an empty elements literal
        return f"dense<> : {format_type(t)}"
    return f"dense<{_dense_elems(a, dt)}> : {format_type(t)}"


class Printer:
    def __init__(self, module: Module):
        self.m = module

    def attr(self, key: str, v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return f"{int(v)} : i64"
        if isinstance(v, (float, np.floating)):
            return f"{format_float(v)} : f64"
        if isinstance(v, str):
            return quote(v)
        if isinstance(v, DType):
            return v.mlir
        if isinstance(v, ResourceRef):
            a = self.m.weights[v.key]
            t = TensorType(DType.from_np(a.dtype), a.shape)
            return f"dense_resource<{v.key}> : {format_type(t)}"
        if isinstance(v, np.ndarray):
            return format_dense(v)
        if isinstance(v, (tuple, list)):
            if len(v) and all(isinstance(x, str) for x in v):
                return "[" + ", ".join(quote(x) for x in v) + "]"
            if len(v) and any(isinstance(x, (float, np.floating)) for x in v):
                return "array<f64: " + ", ".join(format_float(x) for x in v) + ">"
            if not v:
                return "array<i64>"
            return "array<i64: " + ", ".join(str(int(x)) for x in v) + ">"
        raise TypeError(f"cannot print attribute {key}={v!r}")

    def attr_dict(self, attrs: Dict) -> str:
        if not attrs:
            return ""
        items = []
        for k in sorted(attrs):
            kk = k if _BARE_KEY.fullmatch(k) else quote(k)
            items.append(f"{kk} = {self.attr(k, attrs[k])}")
        return "{" + ", ".join(items) + "}"

    # -- functions -------------------------------------------------------------
    def function(self, f: Function) -> List[str]:
        names: Dict[int, str] = {}
        used = set()

        def pick(hint, fallback):
            base = hint if hint and _ID_RE.fullmatch(hint) else None
            if hint and base is None:
                base = re.sub(r"[^A-Za-z0-9_$.\-]", "_", hint)
                if not _ID_RE.fullmatch(base):
                    base = "v" + base
            if base is None or base in used:
                if base is not None:
                    stem = base if not base.isdigit() else f"v{base}"  # "0_1" is not an MLIR value id
                    n = 1
                    while f"{stem}_{n}" in used:
                        n += 1
                    base = f"{stem}_{n}"
                else:
                    base = fallback()
            used.add(base)
            return base

        # reserve every hint first so that numbered fallbacks never collide
        hinted = [a.name for a in f.args] + [o.results[0].name for o in f.ops if o.results]
        reserved = {h for h in hinted if h and _ID_RE.fullmatch(h)}
        counter = [0]

        def number():
            while str(counter[0]) in used or str(counter[0]) in reserved:
                counter[0] += 1
            s = str(counter[0])
            counter[0] += 1
            return s

        def ref(v: Value) -> str:
            try:
                return names[id(v)]
            except KeyError:
                raise ValueError(f"value {v} is used before it is defined in function @{f.name}") from None

        lines = []
        args = []
        for i, a in enumerate(f.args):
            n = pick(a.name, lambda: f"arg{i}" if f"arg{i}" not in used else number())
            names[id(a)] = "%" + n
            args.append(f"%{n}: {format_type(a.type)}")
        outs = ", ".join(format_type(v.type) for v in f.outputs)
        fattrs = {"moec.inputs": list(f.arg_names), "moec.outputs": list(f.output_names)}
        if not f.arg_names:
            fattrs.pop("moec.inputs")
        if not f.output_names:
            fattrs.pop("moec.outputs")
        fa = (" attributes " + self.attr_dict(fattrs)) if fattrs else ""
        lines.append(f"  func.func @{f.name}({', '.join(args)}) -> ({outs}){fa} {{")
        for o in f.ops:
            lines.append("    " + self.op(o, pick, number, names, ref))
        rets = ", ".join(ref(v) for v in f.outputs)
        rtypes = ", ".join(format_type(v.type) for v in f.outputs)
        lines.append(f"    func.return {rets} : {rtypes}" if f.outputs else "    func.return")
        lines.append("  }")
        return lines

    def op(self, o: Operation, pick, number, names, ref) -> str:
        head = ""
        if o.results:
            n = pick(o.results[0].name, number)
            if len(o.results) == 1:
                names[id(o.results[0])] = "%" + n
                head = f"%{n} = "
            else:
                for i, r in enumerate(o.results):
                    names[id(r)] = f"%{n}#{i}"
                head = f"%{n}:{len(o.results)} = "
        operands = ", ".join(ref(v) for v in o.operands)
        ad = self.attr_dict(o.attrs)
        ins = ", ".join(format_type(v.type) for v in o.operands)
        if len(o.results) == 1:
            outs = format_type(o.results[0].type)
        else:
            outs = "(" + ", ".join(format_type(r.type) for r in o.results) + ")"
        loc = f" loc({quote(o.loc)})" if o.loc else ""
        return f'{head}"{o.name}"({operands}){" " + ad if ad else ""} : ({ins}) -> {outs}{loc}'

    def module(self) -> str:
        ma = self.attr_dict(self.m.attrs)
        lines = ["module" + (f" attributes {ma}" if ma else "") + " {"]
        for f in self.m.functions:
            lines.extend(self.function(f))
        lines.append("}")
        return "\n".join(lines) + "\n"


def print_module(m: Module) -> str:
    return Printer(m).module()
