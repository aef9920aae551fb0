"""The Ascend launch plan: what the host does to run a model on the NPU, written down once per input shapes.

A plan is a flat list of steps over numbered device buffers:

  bind   name k axis      the run-time scalar $name is the k-th input's size along ``axis`` (a symbolic plan:
                           one plan for every value of a model's symbolic dims, see ``symbolic_key``)
  input  k -> b            the k-th model input, bound to buffer b (shape and type fixed by the plan's key)
  seti   b i expr          the int32 element b[i] set to an expression (group offsets of a symbolic token count)
  const  b <- blob[off:]   a weight, a transposed constant, a tiling-time value: bytes in the blob
                           (the compiled folder's launch/consts.bin, each constant once for all its plans);
                           a trailing ``weights`` names the artifact's model.weights.bin instead (the folder
                           above ascend/): a constant stored there as it is is not stored twice
  alloc  b dtype n fill    a device buffer of n elements (n may be a run-time expression), filled with
                           zero / NaN / an integer pattern before use (workspaces start as NaN so that a kernel
                           that leaves part of its output unwritten is caught)
  launch kernel bd args tiling [when]
                           one kernel launch: blockDim and the tiling struct's integer fields are expressions
                           over run-time scalars; ``when``: skipped when the expression is 0
  sym    name read b i     a run-time scalar read back from a device buffer (an int32 element), e.g. the
                           routed row count offsets[E]; ``nonempty b E``: the experts that received rows
  cast   src dst n         a host-side type conversion of n elements (ids i64 <-> the kernels' i32)
  check  b ids lo hi n msg an error (msg) when the int32 b[0] is not 0 (a kernel's status word); '{}' in msg is
                           the first of ids' n elements outside [lo, hi) (the index a gather refused)
  free   b                 b is not used after this step (its device memory is released)
  host   op ins outs       a host-fallback op (the op's numpy semantics): only the Python artifact runs it;
                           the C++ host program refuses a plan that has one and names it
  output k b n shape       the k-th model output: buffer b's first n elements, viewed with that shape

Expressions are ints, run-time scalars (``$name``) and + - * // min max of them (``Sym``).  The same text
(``dump``/``load``) is read by the Python artifact and by the C++ host program (host/moec_run.cpp): one
format, two executors, and a test that they agree.

``Recorder`` builds a plan: the op orchestration code (targets/ascend_backend.py, vector_ops.py) calls
``new``/``launch``/``read`` on it instead of touching arrays, so the same code plans at compile time (no tensor
data) and, through ``device_op``, runs at once on numpy arrays (unit tests of one launch helper).  A host op whose
result shape depends on tensor data cannot be planned ahead (``NeedsData``): ``LiveRecorder`` runs each step
as it is recorded, so such calls are planned while they run.
"""
from __future__ import annotations

import functools
import struct
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

FORMAT = "moec-ascend-launch-plan 1"

# element types a plan names (numpy dtype <-> the token in the text)
_DT_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "int64": "i64",
             "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "uint16": "u16", "uint32": "u32",
             "uint64": "u64", "bool": "b1"}


def dt_name(dt) -> str:
    dt = np.dtype(dt)
    if dt.name not in _DT_NAMES:
        raise PlanError(f"no launch-plan element type for {dt}")
    return _DT_NAMES[dt.name]


def np_dtype(name: str) -> np.dtype:
    if name == "bf16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    inv = {v: k for k, v in _DT_NAMES.items()}
    return np.dtype(inv[name])


class PlanError(Exception):
    """The orchestration asked for something a plan cannot express (a data-dependent Python decision)."""


# -- run-time integers ------------------------------------------------------------------------------------
Expr = Union[int, tuple]
_OPS = ("+", "-", "*", "//", "min", "max")


def _mk(op: str, a, b):
    a, b = _e(a), _e(b)
    if isinstance(a, int) and isinstance(b, int):
        return {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0, "min": min(a, b),
                "max": max(a, b)}[op]
    if op == "*" and (a == 0 or b == 0):
        return 0
    if op in ("+", "-") and b == 0:
        return Sym(a)
    if op == "*" and b == 1:
        return Sym(a)
    if op == "*" and a == 1 or op == "+" and a == 0:
        return Sym(b)
    return Sym((op, a, b))


def _e(x) -> Expr:
    if isinstance(x, Sym):
        return x.e
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, bool):
        return int(x)
    raise PlanError(f"not an integer expression: {type(x).__name__}")


class Sym:
    """An integer known only when the plan runs (e.g. the routed row count): arithmetic builds an expression;
    anything that needs its value in Python (a comparison, int()) is a PlanError."""
    __slots__ = ("e",)

    def __init__(self, e):
        self.e = e

    def __add__(self, o): return _mk("+", self, o)
    def __radd__(self, o): return _mk("+", o, self)
    def __sub__(self, o): return _mk("-", self, o)
    def __rsub__(self, o): return _mk("-", o, self)
    def __mul__(self, o): return _mk("*", self, o)
    def __rmul__(self, o): return _mk("*", o, self)
    def __floordiv__(self, o): return _mk("//", self, o)
    def __rfloordiv__(self, o): return _mk("//", o, self)
    def __neg__(self): return _mk("-", 0, self)

    def __eq__(self, o):  # the same expression (a Sym is never known to equal an int)
        return isinstance(o, Sym) and o.e == self.e

    def __ne__(self, o):
        return not self.__eq__(o)

    def __hash__(self):
        return hash(("Sym", self.e))

    def _no(self, *_):
        raise PlanError("a value known only at run time was used in a compile-time decision")
    __int__ = __index__ = __bool__ = __lt__ = __le__ = __gt__ = __ge__ = __float__ = _no

    def __repr__(self):
        return f"Sym({_fmt_expr(self.e)})"


def smin(a, b):
    return _mk("min", a, b)


def smax(a, b):
    return _mk("max", a, b)


def sprod(dims) -> Union[int, Sym]:
    out = 1
    for d in dims:
        out = _mk("*", out, d)
    return out


def evaluate(e: Expr, env: Dict[str, int]) -> int:
    if isinstance(e, int):
        return e
    if e[0] == "$":
        return env[e[1]]
    a, b = evaluate(e[1], env), evaluate(e[2], env)
    return _mk(e[0], a, b)


def _fmt_expr(e: Expr) -> str:
    if isinstance(e, int):
        return str(e)
    if e[0] == "$":
        return "$" + e[1]
    return f"{e[0]} {_fmt_expr(e[1])} {_fmt_expr(e[2])}"


def _parse_expr(toks: List[str], i: int):
    t = toks[i]
    if t in _OPS:
        a, i = _parse_expr(toks, i + 1)
        b, i = _parse_expr(toks, i)
        return (t, a, b), i
    if t.startswith("$"):
        return ("$", t[1:]), i + 1
    return int(t), i + 1


# -- symbolic plans: one plan for a range of values of a model's symbolic dims ---------------------------------
def symbolic_key(dims_per_input: Sequence[Sequence], dtypes: Sequence, ranges: Dict[str, tuple]) -> str:
    """The index key of a symbolic plan: as plan_key, with each symbolic dim written {name=lo..hi} (hi empty:
    unbounded), e.g. ``f32:{d0=17..256}x64``; ``match_key`` reads it (host/moec_run.cpp likewise)."""
    def dim(d):
        if isinstance(d, Sym):
            lo, hi = ranges[d.e[1]]
            return "{" + f"{d.e[1]}={lo}..{'' if hi is None else hi}" + "}"
        return str(int(d))
    return ",".join(f"{dt_name(dt)}:{'x'.join(dim(d) for d in dims)}" for dims, dt in zip(dims_per_input, dtypes))


def match_key(pattern: str, key: str) -> Optional[Dict[str, int]]:
    """The symbols' values when concrete ``key`` (plan_key) is one of the shapes symbolic ``pattern`` covers,
    else None."""
    pi, ki = pattern.split(","), key.split(",")
    if len(pi) != len(ki):
        return None
    env: Dict[str, int] = {}
    for p, k in zip(pi, ki):
        pt, _, pd = p.partition(":")
        kt, _, kd = k.partition(":")
        pds, kds = (pd.split("x") if pd else []), (kd.split("x") if kd else [])
        if pt != kt or len(pds) != len(kds):
            return None
        for a, b in zip(pds, kds):
            v = int(b)
            if a.startswith("{"):
                name, _, rng = a[1:-1].partition("=")
                lo, _, hi = rng.partition("..")
                if v < int(lo) or (hi and v > int(hi)) or env.setdefault(name, v) != v:
                    return None
            elif int(a) != v:
                return None
    return env


def output_types(text: str, input_shapes: Sequence[Sequence[int]]) -> List[tuple]:
    """(element type name, shape) of each output of a plan (its text) run on inputs of these shapes, read off its
    bind, buffer and output steps without running it: what a caller allocates the outputs with (moec_run_device).
    PlanError when an output's shape depends on a value the plan reads back while it runs."""
    env: Dict[str, int] = {}
    types: Dict[str, str] = {}
    outs = []
    for line in text.splitlines():
        t = line.split()
        if not t:
            continue
        if t[0] == "bind":
            env[t[1]] = int(input_shapes[int(t[2])][int(t[3])])
        elif t[0] == "input":
            types[t[2]] = t[3]
        elif t[0] in ("alloc", "const"):
            types[t[1]] = t[2]
        elif t[0] == "output":
            _, i = _parse_expr(t, 3)
            try:
                dims = [evaluate(e, env) for e in _parse_dims(t[i + 1:], int(t[i]))]
            except KeyError:
                raise PlanError(f"output {t[1]}'s shape depends on a value read back at run time") from None
            outs.append((types[t[2]], tuple(dims)))
    return outs


# -- buffers ----------------------------------------------------------------------------------------------
class Buf:
    """A device buffer (or a contiguous view of one's first elements) in a plan being recorded."""
    __slots__ = ("id", "shape", "dtype")

    def __init__(self, bid: int, shape, dtype):
        self.id, self.shape, self.dtype = bid, tuple(shape), np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self):
        return sprod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def reshape(self, *shape) -> "Buf":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if any(isinstance(d, int) and d == -1 for d in shape):
            known = sprod([d for d in shape if not (isinstance(d, int) and d == -1)])
            if isinstance(known, Sym) or isinstance(self.size, Sym):
                raise PlanError("reshape(-1) of a buffer whose size is known only at run time")
            shape = tuple(self.size // max(known, 1) if isinstance(d, int) and d == -1 else d for d in shape)
        return Buf(self.id, shape, self.dtype)

    def __getitem__(self, k):  # only a prefix of the rows: buf[:n]
        if isinstance(k, slice) and k.start in (None, 0) and k.step in (None, 1) and self.ndim >= 1:
            return Buf(self.id, (k.stop,) + self.shape[1:], self.dtype)
        raise PlanError("only a prefix view buf[:n] of a device buffer can be planned")

    def __repr__(self):
        return f"Buf(b{self.id}, {self.shape}, {dt_name(self.dtype)})"


def shape_of(x) -> tuple:
    return tuple(x.shape) if isinstance(x, Buf) else np.shape(x)


def _exact_widening(a: np.dtype, b: np.dtype) -> bool:
    """Every value of type a is exactly a value of type b (so b -> a gives the a-values back)."""
    if a.kind in "iu" and b.kind == "i":
        return b.itemsize > a.itemsize or (a.kind == "i" and b.itemsize == a.itemsize)
    return a.kind == "f" and b.kind == "f" and b.itemsize > a.itemsize or \
        (a.name == "bfloat16" and b.name in ("float32", "float64"))


class Recorder:
    """Records a launch plan.  ``desc``/``cores``/``aic``: the target (what the orchestration code sizes from)."""

    def __init__(self, desc, cores: int, aic: int):
        self.desc, self.cores, self.aic = desc, cores, aic
        self.steps: List[tuple] = []
        self.nbuf = 0
        self.consts: Dict[int, tuple] = {}   # id(array) -> (array, Buf): one buffer per constant array
        self.const_data: Dict[int, np.ndarray] = {}   # buffer id -> data
        self.nsym = 0
        self.gate: Expr = 1
        self.op = ""
        self.widened: Dict[int, Buf] = {}   # buffer id -> the buffer it is an exact widening of (i32 -> i64)
        self.bound: set = set()   # the symbols bound from input shapes (bind steps)

    def _bid(self) -> int:
        self.nbuf += 1
        return self.nbuf - 1

    def input(self, k: int, shape, dtype) -> Buf:
        for axis, d in enumerate(shape):  # a symbolic dim: bound from the input's shape when the plan runs
            if isinstance(d, Sym) and d.e[0] == "$" and d.e[1] not in self.bound:
                self.bound.add(d.e[1])
                self.steps.append(("bind", d.e[1], k, axis))
        b = Buf(self._bid(), shape, dtype)
        self.steps.append(("input", k, b.id, dt_name(dtype), _e(b.size)))
        return b

    def new(self, shape, dtype, fill: Union[None, str, int] = "zero") -> Buf:
        b = Buf(self._bid(), shape, dtype)
        self.steps.append(("alloc", b.id, dt_name(dtype), _e(b.size), "zero" if fill is None else str(fill)))
        return b

    def const(self, a) -> Buf:
        a0 = a
        hit = self.consts.get(id(a0))
        if hit is not None and hit[0] is a0:
            return hit[1]
        a = np.ascontiguousarray(a)
        b = Buf(self._bid(), a.shape, a.dtype)
        dt_name(a.dtype)
        self.consts[id(a0)] = (a0, b)
        self.const_data[b.id] = gm_copy(a)  # (its own GM lines, as a device allocation)
        self.steps.append(("const", b.id, dt_name(a.dtype), int(a.size)))
        return b

    def buf(self, x, dtype=None) -> Buf:
        """x as a device buffer of ``dtype`` (a host cast step when a buffer has another type; a constant is
        converted here, at planning time)."""
        if isinstance(x, Buf):
            if dtype is None or np.dtype(dtype) == x.dtype:
                return x
            src = self.widened.get(x.id)
            if src is not None and src.dtype == np.dtype(dtype):  # narrowing back an exact widening: the source
                return Buf(src.id, x.shape, src.dtype)
            out = self.new(x.shape, dtype, None)
            self.steps.append(("cast", x.id, out.id, _e(x.size)))
            if _exact_widening(x.dtype, out.dtype):
                self.widened[out.id] = x
            return out
        a = np.asarray(x)
        if dtype is not None and a.dtype != np.dtype(dtype):
            a = np.ascontiguousarray(a, dtype)
        return self.const(a)

    def launch(self, kernel: str, block_dim, arrays: Sequence, tiling: "Tiling") -> None:
        ids = []
        for a in arrays:
            ids.append(None if a is None else self.buf(a).id)
        if not isinstance(tiling, Tiling):
            tiling = Tiling.raw(tiling)
        self.steps.append(("launch", kernel, self.op, _e(block_dim), ids, tiling.fields, self.gate))

    def ints(self, values: Sequence) -> Buf:
        """An int32 vector of expressions (e.g. group offsets s * T): a constant when every value is known now,
        else a device buffer the host fills when the plan runs (seti steps)."""
        if all(isinstance(v, (int, np.integer)) for v in values):
            return self.const(np.asarray(values, np.int32))
        b = self.new((len(values),), np.int32)
        for i, v in enumerate(values):
            self.steps.append(("seti", b.id, i, _e(v)))
        return b

    def read(self, b: Buf, index) -> Sym:
        """b[index] (int32) read back to the host once the kernels before have run."""
        name = f"s{self.nsym}"
        self.nsym += 1
        self.steps.append(("sym", name, "read", b.id, _e(index)))
        return Sym(("$", name))

    def nonempty(self, offs: Buf, E: int) -> Sym:
        """The number of groups g < E with offs[g] < offs[g + 1] (int32 offsets)."""
        name = f"s{self.nsym}"
        self.nsym += 1
        self.steps.append(("sym", name, "nonempty", offs.id, int(E)))
        return Sym(("$", name))

    def check(self, b: Buf, message: str, ids: Optional[Buf] = None, lo: int = 0, hi: int = 0) -> None:
        """An error when the kernel's status word b[0] is set; with ``ids``, '{}' in the message becomes the first
        of its elements outside [lo, hi) (an index the kernel refused)."""
        self.steps.append(("check", b.id, " ".join(message.split()), None if ids is None else ids.id, int(lo), int(hi),
                           0 if ids is None else _e(ids.size)))

    def host(self, index: int, name: str, ins: Sequence, outs: Sequence[Buf]) -> None:
        bufs = [self.buf(a) for a in ins]
        self.steps.append(("host", index, name, [b.id for b in bufs], [o.id for o in outs],
                           [[_e(d) for d in b.shape] for b in bufs + list(outs)]))

    @contextmanager
    def when(self, cond):
        """Launches inside are skipped at run time when ``cond`` (an expression) is 0."""
        old = self.gate
        self.gate = _e(cond) if old == 1 else _e(smin(old if isinstance(old, int) else Sym(old), cond))
        try:
            yield
        finally:
            self.gate = old

    def finish(self, outputs: Sequence[Buf], key: str = "") -> "Plan":
        steps = list(self.steps)
        keep = {b.id for b in outputs}
        outs = [("output", k, b.id, _e(b.size), [_e(d) for d in b.shape]) for k, b in enumerate(outputs)]
        return Plan(_with_frees(steps, keep) + outs, dict(self.const_data), key)


def _uses(s: tuple) -> List[int]:
    """The buffer ids a step reads or writes."""
    k = s[0]
    if k in ("input", "const", "alloc"):
        return [s[2] if k == "input" else s[1]]
    if k == "launch":
        return [a for a in s[4] if a is not None]
    if k == "sym":
        return [s[3]]
    if k == "cast":
        return [s[1], s[2]]
    if k == "seti":
        return [s[1]]
    if k == "check":
        return [s[1]] + ([s[3]] if s[3] is not None else [])
    if k == "host":
        return list(s[3]) + list(s[4])
    return []


def _with_frees(steps: List[tuple], keep: set) -> List[tuple]:
    """``free b`` after each buffer's last use (the outputs' buffers are kept): device memory holds what is live,
    not every intermediate of the model."""
    last: Dict[int, int] = {}
    for i, s in enumerate(steps):
        for b in _uses(s):
            last[b] = i
    after: Dict[int, List[int]] = {}
    for b, i in last.items():
        if b not in keep:
            after.setdefault(i, []).append(b)
    out = []
    for i, s in enumerate(steps):
        out.append(s)
        out.extend(("free", b) for b in sorted(after.get(i, [])))
    return out


class Tiling:
    """A tiling struct: little-endian fields ('i' int32 expression, 'f' float32 constant, 'q' int64)."""
    __slots__ = ("fields",)

    def __init__(self, fields):
        self.fields = [(f, (float(v) if f == "f" else _e(v))) for f, v in fields]

    @classmethod
    def pack(cls, fmt: str, *vals) -> "Tiling":
        """Like struct.pack('<' + fmt, ...) with 'i', 'f' and repeat counts ('6i')."""
        kinds, n = [], ""
        for ch in fmt.lstrip("<"):
            if ch.isdigit():
                n += ch
                continue
            kinds += [ch] * int(n or 1)
            n = ""
        if len(kinds) != len(vals):
            raise PlanError(f"tiling format {fmt} for {len(vals)} values")
        return cls(list(zip(kinds, vals)))

    @classmethod
    def raw(cls, data: bytes) -> "Tiling":
        data = bytes(data) + b"\0" * (-len(data) % 4)
        return cls([("i", v) for v in struct.unpack(f"<{len(data) // 4}i", data)])

    def concrete(self, env: Dict[str, int]) -> bytes:
        return tiling_bytes_of(self.fields, env)

    def __bytes__(self):
        return self.concrete({})


def tiling_bytes_of(fields, env) -> bytes:
    return b"".join(struct.pack("<f", v) if f == "f" else struct.pack("<q" if f == "q" else "<i", evaluate(v, env))
                    for f, v in fields)


# -- a plan: text + blob ---------------------------------------------------------------------------------
class Plan:
    def __init__(self, steps: List[tuple], const_data: Dict[int, np.ndarray], key: str = ""):
        self.steps, self.const_data, self.key = steps, const_data, key

    def host_ops(self) -> List[str]:
        return sorted({s[2] for s in self.steps if s[0] == "host"})

    def kernels(self) -> List[str]:
        return [s[1] for s in self.steps if s[0] == "launch"]

    def dump(self, store=None) -> tuple:
        """(text, blob): the blob holds the constants, 64-byte aligned, in buffer order.  ``store(bytes) ->
        offset`` puts them in a blob shared by several plans instead (the compiled folder's consts.bin: the
        weights once for every plan); the returned blob is then empty.  ``store`` may return (file, offset): the
        constant lies in that file (``weights``: the artifact's model.weights.bin) rather than in the blob."""
        lines = [FORMAT, f"key {self.key or '-'}"]
        blob = bytearray()

        def own(data: bytes) -> int:
            blob.extend(b"\0" * (-len(blob) % 64))
            blob.extend(data)
            return len(blob) - len(data)
        store = store or own
        for s in self.steps:
            k = s[0]
            if k == "bind":
                lines.append(f"bind {s[1]} {s[2]} {s[3]}")
            elif k == "seti":
                lines.append(f"seti b{s[1]} {s[2]} {_fmt_expr(s[3])}")
            elif k == "input":
                lines.append(f"input {s[1]} b{s[2]} {s[3]} {_fmt_expr(s[4])}")
            elif k == "const":
                data = np.ascontiguousarray(self.const_data[s[1]]).tobytes()
                at = store(data)
                src, off = at if isinstance(at, tuple) else (None, at)
                lines.append(f"const b{s[1]} {s[2]} {s[3]} {off} {len(data)}" + (f" {src}" if src else ""))
            elif k == "alloc":
                lines.append(f"alloc b{s[1]} {s[2]} {_fmt_expr(s[3])} {s[4]}")
            elif k == "launch":
                args = " ".join("-" if a is None else f"b{a}" for a in s[4])
                tl = " ".join(f"f {float(v).hex()}" if f == "f" else f"{f} {_fmt_expr(v)}" for f, v in s[5])
                lines.append(f"launch {s[1]} {s[2] or '-'} when {_fmt_expr(s[6])} bd {_fmt_expr(s[3])} "
                             f"args {len(s[4])} {args} tiling {len(s[5])} {tl}".replace("  ", " "))
            elif k == "sym":
                lines.append(f"sym {s[1]} {s[2]} b{s[3]} {_fmt_expr(s[4])}")
            elif k == "cast":
                lines.append(f"cast b{s[1]} b{s[2]} {_fmt_expr(s[3])}")
            elif k == "check":
                lines.append(f"check b{s[1]} {'-' if s[3] is None else f'b{s[3]}'} {s[4]} {s[5]} {_fmt_expr(s[6])} "
                             f"{s[2]}")
            elif k == "host":
                lines.append(f"host {s[1]} {s[2]} {len(s[3])} " + " ".join(f"b{a}" for a in s[3]) +
                             f" {len(s[4])} " + " ".join(f"b{a}" for a in s[4]))
                for shp in s[5]:  # the operands' shapes, then the results'
                    lines.append(f"hostshape {len(shp)} " + " ".join(_fmt_expr(d) for d in shp))
            elif k == "free":
                lines.append(f"free b{s[1]}")
            elif k == "output":
                lines.append(f"output {s[1]} b{s[2]} {_fmt_expr(s[3])} {len(s[4])} " +
                             " ".join(_fmt_expr(d) for d in s[4]))
        lines.append("end")
        return "\n".join(lines) + "\n", bytes(blob)

    @classmethod
    def load(cls, text: str, blob: bytes, files: Optional[Dict[str, object]] = None) -> "Plan":
        """``files``: the other files a const step may name (``weights``: model.weights.bin's bytes or memmap)."""
        lines = text.splitlines()
        if not lines or lines[0] != FORMAT:
            raise PlanError(f"not a {FORMAT} file")
        key = lines[1].split(" ", 1)[1]
        steps, consts = [], {}
        bid = (lambda t: int(t[1:]))
        li = 2
        while li < len(lines):
            line = lines[li]
            li += 1
            t = line.split()
            k = t[0]
            if k == "end":
                break
            if k == "bind":
                steps.append(("bind", t[1], int(t[2]), int(t[3])))
            elif k == "seti":
                steps.append(("seti", bid(t[1]), int(t[2]), _parse_expr(t, 3)[0]))
            elif k == "input":
                steps.append(("input", int(t[1]), bid(t[2]), t[3], _parse_expr(t, 4)[0]))
            elif k == "const":
                b, dt, n, off, nb = bid(t[1]), t[2], int(t[3]), int(t[4]), int(t[5])
                src = blob
                if len(t) > 6:
                    if t[6] not in (files or {}):
                        raise PlanError(f"a constant lies in '{t[6]}', which this plan was loaded without")
                    src = files[t[6]]
                if off + nb > len(src):
                    raise PlanError(f"a constant lies outside its file ({t[6] if len(t) > 6 else 'the blob'})")
                consts[b] = np.frombuffer(src[off:off + nb], np_dtype(dt)).copy()
                steps.append(("const", b, dt, n))
            elif k == "alloc":
                e, i = _parse_expr(t, 3)
                steps.append(("alloc", bid(t[1]), t[2], e, t[i]))
            elif k == "launch":
                kernel, op = t[1], (None if t[2] == "-" else t[2])
                gate, i = _parse_expr(t, 4)
                bd, i = _parse_expr(t, i + 1)
                n = int(t[i + 1])
                args = [None if a == "-" else bid(a) for a in t[i + 2:i + 2 + n]]
                i += 2 + n
                nf = int(t[i + 1])
                i += 2
                fields = []
                for _ in range(nf):
                    f = t[i]
                    if f == "f":
                        fields.append(("f", float.fromhex(t[i + 1])))
                        i += 2
                    else:
                        v, i = _parse_expr(t, i + 1)
                        fields.append((f, v))
                steps.append(("launch", kernel, op or "", bd, args, fields, gate))
            elif k == "sym":
                steps.append(("sym", t[1], t[2], bid(t[3]), _parse_expr(t, 4)[0]))
            elif k == "cast":
                steps.append(("cast", bid(t[1]), bid(t[2]), _parse_expr(t, 3)[0]))
            elif k == "check":
                n, i = _parse_expr(t, 5)
                steps.append(("check", bid(t[1]), " ".join(t[i:]), None if t[2] == "-" else bid(t[2]), int(t[3]),
                              int(t[4]), n))
            elif k == "host":
                ni = int(t[3])
                ins = [bid(a) for a in t[4:4 + ni]]
                no = int(t[4 + ni])
                outs = [bid(a) for a in t[5 + ni:5 + ni + no]]
                shapes = []
                for _ in ins + outs:
                    u = lines[li].split()
                    li += 1
                    shapes.append(_parse_dims(u[2:], int(u[1])))
                steps.append(("host", int(t[1]), t[2], ins, outs, shapes))
            elif k == "free":
                steps.append(("free", bid(t[1])))
            elif k == "output":
                e, i = _parse_expr(t, 3)
                steps.append(("output", int(t[1]), bid(t[2]), e, _parse_dims(t[i + 1:], int(t[i]))))
            else:
                raise PlanError(f"unknown launch-plan step '{k}'")
        return cls(steps, consts, "" if key == "-" else key)


def _parse_dims(toks: List[str], n: int) -> list:
    out, i = [], 0
    for _ in range(n):
        e, i = _parse_expr(toks, i)
        out.append(e)
    return out


# -- running a plan (the Python executor; host/moec_run.cpp is the C++ one) ----------------------------------
def _fill(arr: np.ndarray, fill: str) -> None:
    if fill == "zero":
        arr[...] = 0
    elif fill == "nan":
        arr[...] = np.nan
    else:
        arr[...] = int(fill)


GM_LINE = 64  # (the emulator's GM line: kernel_operator.h's GM_LINE)


def gm_empty(n: int, dtype) -> np.ndarray:
    """An uninitialised device buffer of ``n`` elements as a device allocation is: starting on a GM line and
    owning whole lines, so no other buffer shares a line with it.  numpy's small allocations pack several arrays
    into one 64-byte line; the emulator tracks scalar and pipe accesses per line, so two buffers on one line
    (a kernel's 8-byte group offsets beside the output a Fixpipe writes) showed a hazard that depended on where
    numpy had put them."""
    dt = np.dtype(dtype)
    nbytes = n * dt.itemsize
    raw = np.empty(-(-max(nbytes, 1) // GM_LINE) * GM_LINE + GM_LINE, np.uint8)
    off = (-raw.ctypes.data) % GM_LINE
    return raw[off:off + nbytes].view(dt)


def gm_copy(a: np.ndarray) -> np.ndarray:
    """``a`` in its own GM lines (gm_empty), where numpy may have packed it beside other arrays: small arrays
    (up to 1 MiB; numpy's larger allocations are mappings of their own, sharing no line with another array)."""
    if a.nbytes > 1 << 20 or (a.ctypes.data % GM_LINE == 0 and a.nbytes % GM_LINE == 0):
        return a
    b = gm_empty(a.size, a.dtype)
    b[...] = a.reshape(-1)
    return b.reshape(a.shape)


class Executor:
    """Runs plan steps one at a time (``execute`` runs a whole plan; a LiveRecorder runs each step as it is
    recorded).  ``launch(kernel, op, block_dim, [arrays or None], tiling_bytes)`` runs one kernel (raises on
    failure); ``host_op(index, name, [arrays]) -> [arrays]`` runs a host-fallback op; ``consts``: buffer id ->
    array of the const buffers; ``bind``: buffer id -> numpy array to use for a const buffer instead (the
    immediate mode writes through)."""

    def __init__(self, inputs: Sequence, consts: Dict[int, np.ndarray], launch, host_op=None,
                 bind: Optional[dict] = None):
        self.inputs, self.consts, self.launch, self.host_op, self.bind = inputs, consts, launch, host_op, bind or {}
        self.mem: Dict[int, np.ndarray] = {}
        self.env: Dict[str, int] = {}
        self.outs: Dict[int, np.ndarray] = {}

    def value(self, x):
        """A Buf's current contents as an array of its shape (numpy values pass through)."""
        if not isinstance(x, Buf):
            return x
        shp = tuple(evaluate(_e(d), self.env) for d in x.shape)
        return self.mem[x.id].reshape(-1)[:int(np.prod(shp, dtype=np.int64))].reshape(shp)

    def results(self) -> list:
        return [self.outs[i] for i in range(len(self.outs))]

    def step(self, s: tuple) -> None:
        from moec.errors import RuntimeFailure
        mem, env = self.mem, self.env
        k = s[0]
        if k == "bind":
            shp = np.shape(self.inputs[s[2]])
            if s[3] >= len(shp):
                raise RuntimeFailure(f"the launch plan binds ${s[1]} to axis {s[3]} of input {s[2]}, of rank {len(shp)}")
            env[s[1]] = int(shp[s[3]])
        elif k == "seti":
            mem[s[1]].reshape(-1).view(np.int32)[s[2]] = evaluate(s[3], env)
        elif k == "input":
            mem[s[2]] = np.ascontiguousarray(self.inputs[s[1]], np_dtype(s[3])).reshape(-1)
        elif k == "const":
            mem[s[1]] = self.bind[s[1]] if s[1] in self.bind else self.consts[s[1]]
        elif k == "alloc":
            a = gm_empty(max(0, evaluate(s[3], env)), np_dtype(s[2]))
            _fill(a, s[4])
            mem[s[1]] = a
        elif k == "launch":
            if evaluate(s[6], env) == 0:
                return
            arrays = [None if a is None else mem[a] for a in s[4]]
            self.launch(s[1], s[2], evaluate(s[3], env), arrays, tiling_bytes_of(s[5], env))
        elif k == "sym":
            src = mem[s[3]].reshape(-1)
            if s[2] == "read":
                env[s[1]] = int(src.view(np.int32)[evaluate(s[4], env)])
            else:
                o = src.view(np.int32)[:s[4] + 1]
                env[s[1]] = int(np.sum(o[1:] > o[:-1]))
        elif k == "cast":
            n = evaluate(s[3], env)
            dst = mem[s[2]].reshape(-1)
            dst[:n] = mem[s[1]].reshape(-1)[:n].astype(dst.dtype)
        elif k == "check":
            if int(mem[s[1]].reshape(-1).view(np.int32)[0]):
                msg = s[2]
                if s[3] is not None:
                    ids = mem[s[3]].reshape(-1)[:evaluate(s[6], env)]
                    bad = ids[(ids < s[4]) | (ids >= s[5])]
                    msg = msg.replace("{}", str(int(bad[0])) if bad.size else "?")
                raise RuntimeFailure(msg)
        elif k == "host":
            if self.host_op is None:
                raise RuntimeFailure(f"the plan runs {s[2]} on the host and no host executor was given")
            shapes = [tuple(evaluate(d, env) for d in shp) for shp in s[5]]
            ni = len(s[3])
            args = [mem[a].reshape(-1)[:int(np.prod(shp, dtype=np.int64))].reshape(shp)
                    for a, shp in zip(s[3], shapes[:ni])]
            res = self.host_op(s[1], s[2], args)
            for b, r, shp in zip(s[4], res, shapes[ni:]):
                r = np.asarray(r)
                if tuple(r.shape) != shp:
                    raise RuntimeFailure(f"host op {s[2]} produced shape {tuple(r.shape)}, the plan expected {shp} "
                                         f"(a shape that depends on tensor data cannot be planned)")
                dst = mem[b].reshape(-1)
                dst[:r.size] = np.ascontiguousarray(r, dst.dtype).reshape(-1)
        elif k == "free":
            del mem[s[1]]
        elif k == "output":
            n = evaluate(s[3], env)
            self.outs[s[1]] = mem[s[2]].reshape(-1)[:n].reshape([evaluate(d, env) for d in s[4]])


def execute(plan: Plan, inputs: Sequence[np.ndarray], launch, host_op=None, bind: Optional[dict] = None) -> list:
    """Run a whole plan (see Executor)."""
    ex = Executor(inputs, plan.const_data, launch, host_op, bind)
    for s in plan.steps:
        ex.step(s)
    return ex.results()


class NeedsData(Exception):
    """Planning reached a host op whose result shape depends on tensor data: such inputs are planned while they
    run (LiveRecorder), call by call."""


class _LiveSteps(list):
    def __init__(self, ex: Executor):
        super().__init__()
        self.ex = ex

    def append(self, s) -> None:
        super().append(s)
        self.ex.step(s)


class LiveRecorder(Recorder):
    """A Recorder whose steps run as they are recorded (on ``executor``), so that a host op's results, shapes
    included, are known when the ops after it are planned: the fallback for data-dependent host-op shapes.  The
    plan it makes is for these inputs' data only; it is never stored or emitted."""

    def __init__(self, desc, cores: int, aic: int, executor: Executor, host_fn):
        super().__init__(desc, cores, aic)
        self.ex, self.host_fn = executor, host_fn
        executor.consts = self.const_data
        executor.host_op = self.take_pending
        self.steps = _LiveSteps(executor)
        self.pending: list = []

    def run_host(self, index: int, name: str, ins: Sequence) -> list:
        """Runs the host op now on the inputs' values; the host step recorded after it takes these results."""
        res = [np.asarray(r) for r in self.host_fn(index, name, [self.ex.value(a) for a in ins])]
        self.pending = list(res)
        return res

    def take_pending(self, *_):
        res, self.pending = self.pending, []
        return res


def device_op(fn):
    """Lets an orchestration helper (written against a Recorder) also be called on an AscendArtifact with numpy
    arrays: it is planned with those arrays bound as buffers, run at once, and its Buf results come back as
    arrays (arrays given to it are written through, like an output argument)."""
    @functools.wraps(fn)
    def wrap(dev, *args, **kw):
        if isinstance(dev, Recorder):
            return fn(dev, *args, **kw)
        return dev.run_now(fn, args, kw)
    return wrap


def flatten_bufs(x, out: list) -> None:
    if isinstance(x, Buf):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            flatten_bufs(v, out)


def rebuild(x, vals: list):
    if isinstance(x, Buf):
        return vals.pop(0)
    if isinstance(x, (list, tuple)):
        return type(x)(rebuild(v, vals) for v in x)
    return x
