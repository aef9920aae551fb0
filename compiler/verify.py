"""Verification: run compiled code and onnxruntime on the same seeded inputs and compare.

Inputs: floats ~ N(0, 1); bools uniform; integer inputs drawn from the values the
model accepts where moec can derive them from how the input is used
(``int_input_plan``: indices in [-n, n), a divisor or a Slice step nonzero, a
Reshape/Expand target that fits the data, a TopK k in [1, n], Split sizes that
sum up, ...), otherwise [0, 4).  Where it cannot derive them (the input reaches
such a use through arithmetic), the plan says so and the user gives inputs
(``moec compile --inputs FILE.npz``, ``moec.compile(..., example_inputs=...)``,
read by ``load_inputs_npz`` / ``check_user_inputs``).  Dynamic dimensions are
tried at several sizes (the default size, 1, and one more) so a dynamic token
count is exercised.

Trial kinds (``make_inputs(kind=...)``): ``random``; ``identical`` (every token
the same); ``tied`` (rows of zeros, of one value and of a few levels: equal
router logits, so routing ties are exercised); ``nonfinite`` (NaN / +Inf / -Inf
in a few rows of the inputs that reach a router whose semantics define them:
``moe.route`` with ``drop``, onnxruntime's MoE: the row outputs 0).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec._version import __version__
from moec.errors import RuntimeFailure, UserInputError
from moec.ir import DType, Function, IRError, Module, TensorType
from moec.ir import run as interpret
from moec.passes.recognition_trace import recognition_of
from moec.tolerances import Tolerance, tolerance_for

DEFAULT_SYMBOL_SIZES = (5, 1, 3)


def symbols_of(f: Function) -> List[str]:
    out: List[str] = []
    for a in f.args:
        for d in a.type.shape:
            if isinstance(d, str) and d not in out:
                out.append(d)
    return out


def shape_trials(f: Function, sizes: Sequence[int] = DEFAULT_SYMBOL_SIZES,
                 fixed: Optional[Dict[str, int]] = None) -> List[Dict[str, int]]:
    """Symbol bindings to try: one per size in ``sizes`` (just one when static)."""
    syms = symbols_of(f)
    if not syms:
        return [{}]
    trials = []
    for s in sizes:
        b = {k: s for k in syms}
        if fixed:
            b.update({k: v for k, v in fixed.items() if k in syms})
        if b not in trials:
            trials.append(b)
    return trials


def concrete_shape(t: TensorType, binding: Dict[str, int]) -> tuple:
    out = []
    for d in t.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str):
            out.append(binding[d])
        else:
            out.append(1)
    return tuple(out)


# -- integer inputs: the values the model accepts -------------------------------------------------
# ops whose result holds the operand's values unchanged (rearranged): a constraint on the result's
# values is one on the operand's (operand index -> passes values through)
_VALUE_PRESERVING = {"moec.squeeze": 0, "moec.unsqueeze": 0, "moec.reshape": 0, "moec.flatten": 0,
                     "moec.transpose": 0, "moec.expand": 0}


def _constraint(o, i: int):
    """What operand ``i`` of op ``o`` must hold to be valid, or None (any value is accepted)."""
    n = o.name
    spec = getattr(type(o), "index_operand", None)
    if spec is not None and i == spec[0]:
        return ("index", o.operands[spec[1]], o.attrs.get(spec[2], 0) if spec[2] else 0)
    if n in ("moec.gather_nd", "moec.scatter_nd") and i == 1:
        return ("index_nd", o.operands[0], o.attrs.get("batch_dims", 0))
    if n == "moec.div" and i == 1 and not o.operands[1].type.dtype.is_float:
        return ("nonzero",)
    if n == "moec.slice":
        return {3: ("opaque", "Slice axes"), 4: ("step",)}.get(i)
    if (n, i) in (("moec.tile", 1), ("moec.constant_of_shape", 0), ("moec.one_hot", 1)):
        return ("positive",)
    if n == "moec.range" and i == 2:
        return ("positive",)
    if n == "moec.reshape" and i == 1:
        return ("reshape", o.operands[0], o.attrs.get("allowzero", False))
    if n == "moec.expand" and i == 1:
        return ("expand", o.operands[0])
    if n == "moec.topk" and i == 1:
        return ("k", o.operands[0], o.attrs.get("axis", -1))
    if n == "moec.split" and i == 1:
        return ("split", o.operands[0], o.attrs.get("axis", 0))
    if n == "moec.cumsum" and i == 1:
        return ("axis", o.operands[0])
    if n in ("moec.squeeze", "moec.unsqueeze") and i == 1:
        return ("opaque", f"{n[5:].capitalize()} axes")
    if n == "moe.dispatch":
        return ("opaque", "expert ids")
    return None


_WHAT = {"index": "indices", "index_nd": "GatherND/ScatterND indices", "nonzero": "an integer divisor",
         "step": "Slice steps", "positive": "a count or a size", "reshape": "a Reshape target",
         "expand": "an Expand shape", "k": "TopK's k", "split": "Split sizes", "axis": "an axis"}


def int_input_plan(f: Function):
    """How to draw each integer input: (plan {id(arg): constraint or None (any value)}, unknown
    {input name: why moec cannot derive its valid values}).  A constraint comes from a direct use
    (through value-preserving ops for indices, divisors, steps and counts); an input that reaches a
    constrained operand only through arithmetic, or whose uses want different things, is unknown."""
    args = {id(a): (a, n) for a, n in zip(f.args, f.arg_names)}
    # value id -> {arg id: direct}: direct while only value-preserving ops lie between arg and value
    src: Dict[int, Dict[int, bool]] = {id(a): {id(a): True} for a in f.args if not a.type.dtype.is_float}
    found: Dict[int, list] = {k: [] for k in src}
    unknown: Dict[str, str] = {}
    for o in f.ops:
        for i, v in enumerate(o.operands):
            c = _constraint(o, i) if id(v) in src else None
            if c is None:
                continue
            for aid, direct in src[id(v)].items():
                name = args[aid][1]
                if c[0] == "opaque":
                    unknown.setdefault(name, f"it is used as {c[1]}")
                elif not direct or (c[0] in _SHAPE_LIKE and v is not args[aid][0]):
                    unknown.setdefault(name, f"it reaches {_WHAT[c[0]]} ({o.name.split('.')[-1]}) through "
                                             "other ops")
                else:
                    found[aid].append(c)
        tainted = [src[id(v)] for v in o.operands if id(v) in src]
        if not tainted:
            continue
        keep = _VALUE_PRESERVING.get(o.name)
        for r in o.results:
            if r.type.dtype.is_float:
                continue  # (no integer constraint reaches back through a float value)
            if keep is not None and id(o.operands[keep]) in src and len(tainted) == 1:
                src[id(r)] = dict(src[id(o.operands[keep])])
            else:
                src[id(r)] = {aid: False for t in tainted for aid in t}
    plan: Dict[int, object] = {}
    for aid, cs in found.items():
        name = args[aid][1]
        if name in unknown:
            continue
        kinds = {c[0] for c in cs}
        if not cs:
            plan[aid] = None
        elif len(cs) == 1:
            plan[aid] = cs[0]
        elif kinds == {"index"}:
            plan[aid] = ("index_multi", cs)
        elif len(kinds) == 1 and kinds <= {"nonzero", "step", "positive"}:
            plan[aid] = cs[0]
        else:
            unknown[name] = "it has several uses with different valid values (" + \
                            ", ".join(sorted(_WHAT.get(k, k) for k in kinds)) + ")"
    return plan, unknown


_SHAPE_LIKE = ("reshape", "expand", "k", "split", "axis", "index_nd")


def _dims(v, binding) -> Optional[tuple]:
    """Concrete shape of a value under a symbol binding; None where a dim is data dependent."""
    out = []
    for d in v.type.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d in binding:
            out.append(binding[d])
        else:
            return None
    return tuple(out)


def _draw_int(rng, c, shape, dt, binding):
    """Values for an integer input under constraint ``c``; None when it cannot be honoured here."""
    def ints(lo, hi):
        return rng.integers(lo, hi, size=shape).astype(dt.np)
    if c is None:
        return ints(0, 4)
    kind = c[0]
    if kind in ("index", "index_multi"):
        n = None
        for ci in (c[1] if kind == "index_multi" else [c]):
            ds = _dims(ci[1], binding)
            if ds is None or not ds:
                return None
            d = ds[ci[2] % len(ds)]
            n = d if n is None else min(n, d)
        if n <= 0:
            return ints(0, 1) if int(np.prod(shape)) == 0 else None
        return ints(-n, n)
    if kind == "index_nd":
        ds = _dims(c[1], binding)
        if ds is None or not shape:
            return None
        q, b = shape[-1], c[2]
        if b + q > len(ds):
            return None
        x = np.empty(shape, np.int64)
        for j in range(q):
            n = ds[b + j]
            if n <= 0:
                return None
            x[..., j] = rng.integers(-n, n, size=shape[:-1])
        return x.astype(dt.np)
    if kind == "nonzero":
        return (ints(1, 5) * rng.choice(np.array([-1, 1], np.int64), size=shape)).astype(dt.np)
    if kind == "step":
        return rng.choice(np.array([-2, -1, 1, 2], np.int64), size=shape).astype(dt.np)
    if kind == "positive":
        return ints(1, 4)
    ds = _dims(c[1], binding)
    if ds is None:
        return None
    if kind == "k":
        if not ds:
            return None
        n = ds[c[2] % len(ds)]
        return np.full(shape, rng.integers(1, n + 1) if n >= 1 else 0, dt.np)
    if kind == "axis":
        r = max(len(ds), 1)
        return ints(-r, r)
    if len(shape) != 1:
        return None
    L = shape[0]
    if kind == "reshape":
        numel = int(np.prod(ds, dtype=np.int64))
        if L == len(ds):
            tgt = list(ds)
        elif L >= 1:
            tgt = [1] * L
            tgt[int(rng.integers(0, L))] = numel
        else:
            return None if numel != 1 else np.zeros(0, dt.np)
        if numel > 0 and L and rng.random() < 0.5:
            tgt[int(rng.integers(0, L))] = -1  # the inferred dim
        return np.asarray(tgt, dt.np)
    if kind == "expand":
        r = len(ds)
        full = [1] * max(L - r, 0) + list(ds)[max(r - L, 0):]
        return np.asarray([d if rng.random() < 0.7 else 1 for d in full], dt.np)
    if kind == "split":
        if not ds:
            return None
        d = ds[c[2] % len(ds)]
        if L < 1:
            return None
        cuts = np.sort(rng.integers(0, d + 1, size=L - 1)) if L > 1 else np.zeros(0, np.int64)
        return np.diff(np.concatenate([[0], cuts, [d]])).astype(dt.np)
    return None


def selection_ops(f: Function) -> bool:
    """Whether the model selects by comparing values (routing, TopK, ArgMax): ties then matter."""
    return any(o.name in ("moe.route", "moec.topk", "moec.argmax", "moec.argmin") for o in f.ops)


def nonfinite_router_args(f: Function) -> List[int]:
    """Indices of the float inputs that reach the logits of a ``moe.route`` with ``drop`` (whose
    semantics define non-finite rows: every weight NaN, every slot dropped, the row outputs 0)."""
    return _nonfinite_routes(f)[0]


def _nonfinite_routes(f: Function):
    """(the inputs of ``nonfinite_router_args``, whether NaN is defined too).  NaN is defined where
    every such router scores with a softmax over all experts (one NaN makes every weight NaN); a router
    that selects on the raw logits (QMoE: scoring none) leaves the experts a NaN selects to the sort
    onnxruntime happens to use, so those get only +-Inf."""
    routes = [o for o in f.ops if o.name == "moe.route" and o.attrs.get("drop")]
    want = [o.operands[0] for o in routes]
    nan_ok = all(o.attrs["scoring"] == "softmax" for o in routes)
    seen, stack = set(), list(want)
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.owner is not None:
            stack.extend(v.owner.operands)
    return [i for i, a in enumerate(f.args) if id(a) in seen and a.type.dtype.is_float and a.type.rank >= 1], nan_ok


TRIAL_KINDS = ("random", "identical", "tied", "nonfinite")


def _rows(x: np.ndarray) -> np.ndarray:
    """A [rows, last] view of x (rows = every leading index)."""
    return x.reshape(-1, x.shape[-1]) if x.ndim >= 1 and x.size else x.reshape(0, 0)


def make_inputs(f: Function, binding: Dict[str, int], seed: int = 0, identical: bool = False,
                kind: Optional[str] = None) -> List[np.ndarray]:
    """Seeded inputs of one trial ``kind`` (see the module docstring; ``identical=True`` is kind
    ``identical``: the first row repeated along dim 0 of float inputs, every token the same: in an MoE
    layer most experts then get no tokens and capacity limits are hit).  Integer inputs follow
    ``int_input_plan``; one whose valid values moec cannot derive gets [0, 4)."""
    kind = kind or ("identical" if identical else "random")
    if kind not in TRIAL_KINDS:
        raise ValueError(f"unknown trial kind {kind!r}")
    rng = np.random.default_rng(seed)
    plan, _ = int_input_plan(f)
    nonfinite, nan_ok = _nonfinite_routes(f) if kind == "nonfinite" else ([], False)
    xs = []
    for ai, a in enumerate(f.args):
        t = a.type
        shape = concrete_shape(t, binding)
        dt = t.dtype
        if dt.is_float:
            x = rng.standard_normal(shape).astype(dt.np)
            if kind == "identical" and x.ndim >= 2 and x.shape[0] > 1:
                x[:] = x[:1]
            elif kind == "tied" and x.ndim >= 2:
                r = _rows(x)  # (a view)
                n, w = r.shape
                if n and w:
                    r[0] = 0                                      # equal logits after a bias-free router
                    if n > 1:
                        r[1] = np.float32(0.5)                    # one value: every logit equal
                    if n > 2:
                        r[2] = np.round(r[2])                     # a few levels: partial ties
                    if n > 3:
                        r[3, : max(1, w // 2)] = r[3, 0]          # half the row tied at one value
            elif ai in nonfinite:
                r = _rows(x)
                n, w = r.shape
                if n and w:
                    specials = ([("nan", 1)] if nan_ok else []) + [("inf", 1), ("-inf", 1), ("-inf", w)]
                    for i, (val, cnt) in enumerate(specials[:n]):
                        cols = rng.choice(w, size=min(cnt, w), replace=False)
                        r[i, cols] = np.float32(val)
        elif dt == DType.BOOL:
            x = rng.random(shape) < 0.5
        else:
            x = _draw_int(rng, plan.get(id(a)), shape, dt, binding)
            if x is None:
                x = rng.integers(0, 4, size=shape).astype(dt.np)
        xs.append(np.asarray(x))
    return xs


# -- inputs given by the user (moec compile --inputs FILE.npz, moec.compile(example_inputs=...)) ------
MAX_INPUT_FILE_BYTES = 1 << 30      # the .npz file, and the sum of its arrays' sizes
MAX_INPUT_ARRAYS = 4096


def check_user_inputs(f: Function, given, what: str) -> Dict[str, np.ndarray]:
    """``given`` (a dict name -> array, or a sequence in the model's input order) checked against the
    model's inputs: every name an input, every input given, dtype, rank, static dims and one size per
    symbolic dim.  Returns {name: array} in input order; UserInputError (naming ``what``) otherwise."""
    from moec.errors import UserInputError
    names = list(f.arg_names)
    if isinstance(given, dict):
        items = dict(given)
    else:
        try:
            seq = list(given)
        except TypeError:
            raise UserInputError(f"{what}: expected a dict of input name -> array or a sequence of arrays in the "
                                 f"model's input order ({', '.join(names)})") from None
        if len(seq) != len(names):
            raise UserInputError(f"{what}: {len(seq)} array(s) given, the model has {len(names)} input(s) "
                                 f"({', '.join(names)})")
        items = dict(zip(names, seq))
    for k in items:
        if not isinstance(k, str) or k not in names:
            raise UserInputError(f"{what}: '{_shown(k)}' is not an input of the model (inputs: "
                                 f"{', '.join(_shown(n) for n in names)})")
    missing = [n for n in names if n not in items]
    if missing:
        raise UserInputError(f"{what}: no value for input(s) {', '.join(_shown(n) for n in missing)}; give every "
                             "input of the model")
    out: Dict[str, np.ndarray] = {}
    sizes: Dict[str, int] = {}
    for n, a in zip(names, f.args):
        x = items[n]
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        want = a.type
        if x.dtype.hasobject or x.dtype != want.dtype.np:
            raise UserInputError(f"{what}: input '{_shown(n)}' is {x.dtype}, the model takes {want.dtype.np.name}")
        if x.ndim != want.rank:
            raise UserInputError(f"{what}: input '{_shown(n)}' has rank {x.ndim}, the model takes rank {want.rank} "
                                 f"({want})")
        for i, (d, got) in enumerate(zip(want.shape, x.shape)):
            if isinstance(d, int) and d != got:
                raise UserInputError(f"{what}: input '{_shown(n)}' has {got} at dim {i}, the model takes {d}")
            if isinstance(d, str):
                if sizes.setdefault(d, got) != got:
                    raise UserInputError(f"{what}: dim '{_shown(d)}' is {sizes[d]} in one input and {got} in "
                                         f"input '{_shown(n)}'")
        out[n] = np.ascontiguousarray(x)
    return out


def _shown(s) -> str:
    """A name from a file, safe to print on one line."""
    t = str(s)
    t = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in t[:80])
    return t + ("..." if len(str(s)) > 80 else "")


def load_inputs_npz(path: str, f: Function) -> Dict[str, np.ndarray]:
    """Inputs from a .npz file (untrusted): a zip of .npy arrays, one per model input, named as the
    inputs.  No pickles; sizes read from the headers and bounded before anything is loaded."""
    import os
    import zipfile
    from moec.errors import UserInputError
    what = f"--inputs '{_shown(path)}'"
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserInputError(f"{what}: cannot read it ({e.strerror or e})") from None
    import stat as _stat
    if not _stat.S_ISREG(st.st_mode):
        raise UserInputError(f"{what}: not a regular file")
    if st.st_size > MAX_INPUT_FILE_BYTES:
        raise UserInputError(f"{what}: {st.st_size} bytes, more than the {MAX_INPUT_FILE_BYTES} allowed")
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_INPUT_ARRAYS:
                raise UserInputError(f"{what}: {len(infos)} members, more than {MAX_INPUT_ARRAYS}")
            total = 0
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise UserInputError(f"{what}: member '{_shown(info.filename)}' is not a .npy array "
                                         "(save the inputs with numpy.savez)")
                name = info.filename[:-4]
                if name in arrays:
                    raise UserInputError(f"{what}: input '{_shown(name)}' appears twice")
                total += info.file_size
                if info.file_size > MAX_INPUT_FILE_BYTES or total > MAX_INPUT_FILE_BYTES:
                    raise UserInputError(f"{what}: the arrays hold more than {MAX_INPUT_FILE_BYTES} bytes")
                with z.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise ValueError(f"unsupported .npy version {version}")
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = reader(fh)
                    if dtype.hasobject:
                        raise UserInputError(f"{what}: array '{_shown(name)}' holds Python objects (pickles "
                                             "are not read)")
                    count = 1
                    for d in shape:
                        count *= int(d)
                    if count * max(dtype.itemsize, 1) > info.file_size:
                        raise UserInputError(f"{what}: array '{_shown(name)}' claims {list(shape)} "
                                             f"{dtype} but the file holds {info.file_size} bytes")
                with z.open(info) as fh:
                    arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 - the file is untrusted: whatever fails to parse in it is bad input
        why = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserInputError(f"{what}: not a valid .npz file ({_shown(why)})") from None
    return check_user_inputs(f, arrays, what)


@dataclass
class Comparison:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    worst_output: Optional[str]
    message: str = ""
    per_output: List[dict] = field(default_factory=list)


def compare(names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray],
            tol_override: Optional[Tolerance] = None) -> Comparison:
    ok = True
    max_abs = max_rel = 0.0
    worst, worst_excess, msg = None, -1.0, ""
    per = []
    for n, g, w in zip(names, got, want):
        w = np.asarray(w)
        g = np.asarray(g)
        dname = DType.from_np(w.dtype).mlir if w.dtype != np.dtype(object) else "?"
        tol = tol_override or tolerance_for(dname)
        entry = {"name": n, "dtype": dname, "shape": list(w.shape), "tolerance": tol.to_json()}
        if g.shape != w.shape:
            ok = False
            entry.update(ok=False, error=f"shape {list(g.shape)} != expected {list(w.shape)}")
            per.append(entry)
            if worst_excess < float("inf"):
                worst, worst_excess, msg = n, float("inf"), entry["error"]
            continue
        if g.dtype != w.dtype:
            ok = False
            entry.update(ok=False, error=f"dtype {g.dtype} != expected {w.dtype}")
            per.append(entry)
            worst, worst_excess, msg = n, float("inf"), entry["error"]
            continue
        if w.size == 0:
            entry.update(ok=True, max_abs_err=0.0, max_rel_err=0.0)
            per.append(entry)
            continue
        gf = g.astype(np.float64)
        wf = w.astype(np.float64)
        nan_g, nan_w = np.isnan(gf), np.isnan(wf)
        bad_nan = np.any(nan_g != nan_w)
        inf_mismatch = np.any((np.isinf(wf) | np.isinf(gf)) & ~(gf == wf) & ~(nan_g | nan_w))
        both = ~(nan_g | nan_w) & ~(np.isinf(wf) & (gf == wf))
        with np.errstate(all="ignore"):
            diff = np.where(both, np.abs(gf - wf), 0.0)
            rel = np.where(both, diff / np.maximum(np.abs(wf), 1e-30), 0.0)
            allowed = tol.atol + tol.rtol * np.abs(wf)
            excess = np.where(both, diff - allowed, -1.0)
        a = float(np.nanmax(np.where(np.isfinite(diff), diff, 0))) if diff.size else 0.0
        r = float(np.nanmax(np.where(np.isfinite(rel) & (diff > tol.atol), rel, 0))) if rel.size else 0.0
        this_ok = not bad_nan and not inf_mismatch and not np.any(excess > 0)
        entry.update(ok=bool(this_ok), max_abs_err=a, max_rel_err=r)
        per.append(entry)
        max_abs, max_rel = max(max_abs, a), max(max_rel, r)
        if not this_ok:
            ok = False
            ex = float(np.max(excess)) if not (bad_nan or inf_mismatch) else float("inf")
            if ex > worst_excess:
                worst_excess = ex
                worst = n
                if bad_nan:
                    msg = f"output '{n}': NaN in different positions"
                elif inf_mismatch:
                    msg = f"output '{n}': infinities differ"
                else:
                    pos = np.unravel_index(int(np.argmax(excess)), w.shape)
                    msg = (f"output '{n}': max abs error {a:.3g} (at index {tuple(int(p) for p in pos)}: got "
                           f"{gf[pos]:.6g}, expected {wf[pos]:.6g}); tolerance atol={tol.atol:g} rtol={tol.rtol:g}")
    return Comparison(ok, max_abs, max_rel, worst, msg, per)


def run_onnxruntime(model_bytes, input_names: Sequence[str], inputs: Sequence[np.ndarray],
                    threads: int = 2) -> List[np.ndarray]:
    """``model_bytes``: the model serialised, or the path of a file holding the whole model."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # (a kernel it lacks is raised as an exception; its error log is noise)
    try:
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        # a newer onnx package may stamp an IR version this onnxruntime does not know yet;
        # the ops are unchanged, so retry with the newest IR version it supports
        import re
        m = re.search(r"max supported IR version: (\d+)", str(e))
        if not m:
            raise
        import onnx
        proto = onnx.load_from_string(model_bytes) if isinstance(model_bytes, bytes) else onnx.load(model_bytes)
        proto.ir_version = int(m.group(1))
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return sess.run(None, dict(zip(input_names, inputs)), ro)


def half_trial(got, want, ref, dtype: str, others: Sequence = ()) -> dict:
    """moec's half-precision outputs ``got`` against the f32 model's ``ref``, next to the model's own
    half-precision outputs ``want`` (PyTorch eager, onnxruntime on the model, or moec's interpreter
    running it op by op; ``others``: more such runs, the worst per token counts, since each is a
    faithful execution and onnxruntime may fuse away roundings the model's ops specify).  The criterion
    (per-token relative L2 errors, mean and max, within max(floor, c x the model's own)) and its
    derivation are tolerances.half_precision_check's."""
    from moec.tolerances import half_precision_check
    return half_precision_check(got, want, ref, dtype, others)


_HALF_ONNX = (16, 10)  # TensorProto.BFLOAT16, TensorProto.FLOAT16


def widen_half_model(proto):
    """A copy of ONNX model ``proto`` with every bf16/f16 tensor, type and cast made float32: the model's
    f32 analogue, which onnxruntime's CPU provider can run where it has no bf16 kernels.  None if the
    model holds no half-precision type."""
    from onnx import TensorProto
    return _retyped_model(proto, _HALF_ONNX, TensorProto.FLOAT, np.float32)


def float64_model(proto):
    """A copy of ONNX model ``proto`` with every float32 tensor, type and cast made float64: the model evaluated
    in double precision on the same weights (the reference of the f32 criterion, tolerances.f32_check; onnxruntime
    runs it where every op of the model has a double kernel).  None if the model holds no float32 type."""
    from onnx import TensorProto
    return _retyped_model(proto, (TensorProto.FLOAT,), TensorProto.DOUBLE, np.float64)


def _retyped_model(proto, src, dst: int, dst_np):
    """A copy of ``proto`` with every tensor, value type and type attribute ("to", "dtype", "output_datatype") of an
    element type in ``src`` made ``dst`` (numpy ``dst_np``); None where nothing was."""
    import onnx
    from onnx import AttributeProto, numpy_helper
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    changed = [False]

    def tensor(t):
        if t.data_type in src:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(dst_np), t.name))
            changed[0] = True

    def vtype(tp):
        if tp.HasField("tensor_type") and tp.tensor_type.elem_type in src:
            tp.tensor_type.elem_type = dst
            changed[0] = True
        for f in ("sequence_type", "optional_type"):
            if tp.HasField(f):
                vtype(getattr(tp, f).elem_type)

    def graph(g):
        for t in g.initializer:
            tensor(t)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            vtype(vi.type)
        for n in g.node:
            for a in n.attribute:
                if a.type == AttributeProto.INT and a.name in ("to", "dtype", "output_datatype") and a.i in src:
                    a.i = dst
                    changed[0] = True
                elif a.type == AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.type == AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        graph(sg)
    graph(p.graph)
    return p if changed[0] else None


def half_rounded_model(proto):
    """A copy of ONNX model ``proto`` that computes what the model's own half-precision run computes, on
    onnxruntime's f32 kernels (its CPU provider has no bf16 MatMul, Gelu, ...): widen_half_model's f32 copy in
    which every value the model stores in bf16/f16 is rounded to that type (a Cast to it and back) right after
    the op that makes it -- each op computed in f32 from its rounded inputs, its result rounded once, as a
    device's half kernels do.  Feed it the half inputs widened to f32.  None if the model holds no half type,
    has subgraphs, or an op's result type cannot be inferred (a value it could not round); half_rounded_copy
    says which."""
    return half_rounded_copy(proto)[0]


def half_rounded_copy(proto):
    """(half_rounded_model(proto), None), or (None, why there is no such copy: the first thing it could not
    round faithfully)."""
    import onnx
    from onnx import AttributeProto, helper, shape_inference
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception as e:  # noqa: BLE001 (a model shape inference refuses)
        return None, f"onnx shape inference refused the model ({str(e).splitlines()[0][:200] if str(e) else e!r})"
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)
             if vi.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in g.initializer})
    wide = widen_half_model(proto)
    if wide is None:
        return None, "the model holds no bf16/f16 type"
    nodes = []
    for n in wide.graph.node:
        what = f"{n.op_type} node '{n.name}'" if n.name else f"a {n.op_type} node"
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute):
            return None, f"{what} has a subgraph"
        nodes.append(n)
        if n.op_type == "Constant":  # (its half value widened exactly)
            continue
        for j, name in enumerate(n.output):
            if not name:
                continue
            if name not in types:
                return None, f"onnx shape inference gives no type for '{name}' (output of {what})"
            if types[name] in _HALF_ONNX:
                n.output[j] = name + "__moec_f32"
                nodes.append(helper.make_node("Cast", [n.output[j]], [name + "__moec_half"], to=types[name]))
                nodes.append(helper.make_node("Cast", [name + "__moec_half"], [name], to=onnx.TensorProto.FLOAT))
    out = onnx.ModelProto()
    out.CopyFrom(wide)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, None


# -- reports -------------------------------------------------------------------------------------

def build_report(m: Module, name: str, target: str, verified: Optional[bool], verification: Optional[str],
                 head: Optional[dict] = None, recognised: Optional[Module] = None, **fields) -> dict:
    """report.json, one builder for the driver and the JIT: who built what (``head`` after the target),
    the verdict so far, ``fields``, then what the passes found in ``m`` (its MoE layers, the recognition
    trace -- of ``recognised`` where the passes ran on another copy -- and the op histogram)."""
    rep = {"moec_version": __version__, "model": name, "target": target, **(head or {}),
           "verified": verified, "verification": verification, **fields}
    rep.update(moe_layers=moe_layers_of(m), recognition=recognition_of(recognised if recognised is not None else m),
               op_histogram=op_histogram(m))
    return rep


def write_report(outdir: str, report: dict) -> None:
    with open(os.path.join(outdir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=json_default)


def json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def op_histogram(m: Module) -> Dict[str, int]:
    h: Dict[str, int] = {}
    for o in m.ops():
        h[o.name] = h.get(o.name, 0) + 1
    return dict(sorted(h.items(), key=lambda kv: (-kv[1], kv[0])))


def moe_layers_of(m: Module) -> List[dict]:
    """MoE layers found by the recognition passes: they record one JSON object per layer in the
    module attribute ``moec.moe_layers`` (so the record survives printing and parsing)."""
    return [json.loads(x) for x in m.attrs.get("moec.moe_layers", [])]


# -- verifying an artifact against the ONNX model (onnxruntime; on the half-rounded f32 copy where it cannot run a
# half model; moec's interpreter on the imported model only where neither can) --

def recheck_output(got: np.ndarray, want: np.ndarray):
    """(ok, max abs error): a verified artifact looked at again on fresh inputs (conformance's module cells):
    within 1e-5 + 1e-4 * max|want| of the f32 reference."""
    err = float(np.abs(got - want).max())
    return err <= 1e-5 + 1e-4 * float(np.abs(want).max()), err


def _widened_onnxruntime(proto, lazy: dict, f, xs, threads: int):
    """onnxruntime on the model's f32 analogue (verify.widen_half_model), half inputs widened; None
    where that cannot run either."""
    try:
        if "widened" not in lazy:
            w = widen_half_model(proto)
            lazy["widened"] = None if w is None else w.SerializeToString()
        if lazy["widened"] is None:
            return None
        from moec.passes.moe_util import widen
        return [np.asarray(r) for r in run_onnxruntime(lazy["widened"], f.arg_names, [widen(x) for x in xs],
                                                       threads=threads)]
    except Exception:  # noqa: BLE001 - no f32 oracle: the op-by-op interpreter result decides alone
        return None


def rounded_copy_name(half_dt) -> str:
    """How reports name onnxruntime on verify.half_rounded_model's copy: the model's own half-precision run."""
    return f"onnxruntime on the {half_dt.mlir}-rounded f32 copy"


def _rounded_onnxruntime(proto, lazy: dict, f, xs, threads: int):
    """(outputs, None): onnxruntime on the model's half-rounded f32 copy (verify.half_rounded_model), half inputs
    widened, each output in the model's output type (exact: the copy rounds it to that type); (None, why) where
    there is no such copy.  Raises where onnxruntime cannot run the copy (the oracle itself fails there)."""
    if "rounded" not in lazy:
        r, no = half_rounded_copy(proto)
        lazy["rounded"] = (None if r is None else r.SerializeToString(), no)
    data, no = lazy["rounded"]
    if data is None:
        return None, no
    from moec.passes.moe_util import widen
    ys = run_onnxruntime(data, f.arg_names, [widen(x) for x in xs], threads=threads)
    return [np.asarray(y).astype(v.type.dtype.np, copy=False) if v.type.dtype.is_float else np.asarray(y)
            for y, v in zip(ys, f.outputs)], None


def _float64_onnxruntime(proto, lazy: dict, f, xs, threads: int) -> list:
    """onnxruntime on the model in float64 (verify.float64_model), f32 inputs widened: the f32 criterion's
    reference.  Raises where onnxruntime cannot run it (an op without a double kernel): no reference then."""
    if "float64" not in lazy:
        w = float64_model(proto)
        if w is None:
            raise ValueError("the model holds no float32 type")
        lazy["float64"] = w.SerializeToString()
    return [np.asarray(r) for r in run_onnxruntime(lazy["float64"], f.arg_names,
                                                   [x.astype(np.float64) if x.dtype == np.float32 else x for x in xs],
                                                   threads=threads)]


def user_inputs(m: Module, opts: "CompileOptions") -> "CompileOptions":
    """``opts`` with the user's input sets (``inputs``, ``inputs_file``) checked against the imported
    model's inputs (names, dtypes, ranks, sizes; the file untrusted: no pickles, sizes bounded), as
    {name: array} dicts in ``inputs``; UserInputError (exit 2) for anything that does not fit."""
    if not opts.inputs and not opts.inputs_file:
        return opts
    f = m.main
    sets = [check_user_inputs(f, s, f"example input set {i}" if len(opts.inputs) > 1 else "example inputs")
            for i, s in enumerate(opts.inputs or [])]
    if opts.inputs_file:
        sets.append(load_inputs_npz(opts.inputs_file, f))
    return dataclasses.replace(opts, inputs=sets, inputs_file=None)


# trial kinds skipped, not failed, where the model's own oracle cannot run them (the model is not defined on those
# inputs): a shape the model does not run at (a TorchScript export of an expert loop at 1 token), and every row the
# same token (such a trace keeps only the experts its example hit: one token reaches one set of experts)
UNDEFINED_KINDS = ("random", "identical")


def _trials(f, opts: "CompileOptions"):
    """Verification trials [(symbol binding, kind, user inputs or None)] and the integer inputs whose
    valid values moec cannot derive ({name: why}).  The user's input sets come first; generated trials
    follow (random at each shape, identical tokens, tied router rows where the model selects by value,
    non-finite router rows where a router defines them) unless an integer input is underivable and the
    user gave inputs, then the user's are the only ones."""
    _, unknown = int_input_plan(f)
    trials = [({}, "user", given) for given in (opts.inputs or [])]
    if unknown and trials:
        return trials, {}
    gen = [(b, "random", None) for b in shape_trials(f, opts.symbol_sizes)]
    if any(a.type.rank >= 2 and a.type.dtype.is_float for a in f.args):
        gen.append((gen[0][0], "identical", None))  # plus a batch of identical tokens
        if selection_ops(f):
            gen.append((gen[0][0], "tied", None))  # equal router logits: routing ties
    seen = {v.type.dtype for v in f.args} | {r.type.dtype for o in f.ops for r in o.results}
    if nonfinite_router_args(f) and opts.weights == "f32" and not seen & {DType.F16, DType.BF16}:
        gen.append((gen[0][0], "nonfinite", None))  # NaN / Inf router rows (they output 0)
    return trials + gen, unknown


def verify_artifact(proto, m: Module, artifact, opts: "CompileOptions", f32_module: Optional[Module] = None,
                    model_file: Optional[str] = None) -> dict:
    """Run the artifact and onnxruntime (and the IR interpreter) on seeded inputs at several shapes.

    Quantised builds (``opts.weights`` != f32) are checked against their own reference semantics
    (the IR interpreter on the quantised module: dequantise, then compute in f32) with the f32
    tolerance; the distance to onnxruntime on the f32 model is the quantisation error, measured
    and reported (``quantization_error``) and bounded by ``tolerances.QUANT_ERROR_BOUNDS``.
    ``model_file``: the file ``proto`` was read from where it holds the whole model: onnxruntime reads it there
    (a serialisation of ``proto`` is another copy of every weight, held through verification).  ``proto``: the
    ModelProto, or a function returning it (the driver's, which reads the file again only where needed)."""
    f = m.main
    get_proto = proto if callable(proto) else (lambda: proto)
    model_bytes = model_file if model_file is not None else get_proto().SerializeToString()
    trials, unknown_ints = _trials(f, opts)
    out = {"verified": True, "shapes_tried": [], "max_abs_err": 0.0, "max_rel_err": 0.0,
           "oracle": "onnxruntime", "trials": []}
    quantized = opts.weights != "f32" and f32_module is not None
    qerr = {"max_abs": 0.0, "rel_rms": 0.0, "max_abs_rel_to_max": 0.0, "token_rel_median": 0.0,
            "token_rel_max": 0.0, "tokens": 0, "tokens_over_4x_bound": 0}
    qtokens: List[float] = []
    tol_seen = {}
    lazy: Dict[str, object] = {}
    derived: Dict[str, float] = {}  # (the trials the f32 criterion against the model in float64 passed)
    f32_oracle = "onnxruntime on the model"

    def original() -> Module:  # the model as imported, before any pass: its own semantics
        if "orig" not in lazy:
            from moec.frontend.onnx_import import import_model
            lazy["orig"] = f32_module if f32_module is not None else import_model(get_proto())
        return lazy["orig"]
    # the narrowest float type the model computes in (bf16 before f16), and whether a float output is
    # wider than that: an f32 output summed from f16 expert outputs carries f16 rounding, which the f32
    # elementwise tolerance would wrongly hold against the compiled code
    seen = {v.type.dtype for v in f.args} | {r.type.dtype for o in f.ops for r in o.results}
    half_dt = DType.BF16 if DType.BF16 in seen else (DType.F16 if DType.F16 in seen else None)
    wide_out = half_dt is not None and any(v.type.dtype in (DType.F32, DType.F64) for v in f.outputs)
    def hinted(msg: str) -> str:  # a failure on inputs moec could not make valid says so
        if not unknown_ints:
            return msg
        why = "; ".join(f"'{n}': {r}" for n, r in unknown_ints.items())
        return (f"{msg} [moec could not derive valid values for integer input(s) ({why}) and drew them from "
                "[0, 4): give inputs with --inputs FILE.npz (moec.compile(..., example_inputs=...))]")
    for ti, (binding, kind, given) in enumerate(trials):
        if given is not None:
            xs = list(check_user_inputs(f, given, "inputs").values())
        else:
            xs = make_inputs(f, binding, seed=opts.seed + ti, kind=kind)
        identical = kind == "identical"
        shapes = {n: list(x.shape) for n, x in zip(f.arg_names, xs)}
        if kind in ("random", "user"):
            out["shapes_tried"].append(shapes)
        oracle, why, half_ref, own_runs, own = "onnxruntime", None, None, [], None
        rounded = None  # (the model's own half run by onnxruntime on its half-rounded f32 copy, where made)
        try:
            want = run_onnxruntime(model_bytes, f.arg_names, xs, threads=opts.threads)
        except Exception as e:  # onnxruntime cannot run it (bf16 on its CPU provider, ...)
            why = str(e).splitlines()[0][:200]
            want, failed, no_copy = None, None, None
            if half_dt is not None:
                # the model's own half-precision semantics, by onnxruntime: each op on its f32 kernels, rounded
                # where the graph stores a half type (verify.half_rounded_model)
                try:
                    rounded, no_copy = _rounded_onnxruntime(get_proto(), lazy, f, xs, opts.threads)
                except Exception as re_:  # noqa: BLE001 - the oracle itself fails on these inputs
                    failed = (f"{rounded_copy_name(half_dt)} failed "
                              f"({str(re_).splitlines()[0][:200] if str(re_) else repr(re_)}); "
                              f"onnxruntime on the model: {why}")
            # (a quantised build has its own oracle, below: this run is its f32 reference)
            if rounded is not None:
                want, own = rounded, rounded_copy_name(half_dt)
                oracle = f"{own} (onnxruntime could not run the model: {why})"
            elif failed is None:
                # no faithful copy for onnxruntime: the model's own semantics op by op (moec's interpreter on the
                # model as imported, not on the compiled module: the passes are what is being checked)
                try:
                    want = list(interpret(original(), xs).values())
                except IRError as ie:
                    failed = f"onnxruntime failed ({why}), moec's interpreter failed ({ie})"
                else:
                    nc = f"; no {half_dt.mlir}-rounded f32 copy for onnxruntime: {no_copy}" if no_copy else ""
                    own = f"moec's interpreter op by op{nc}"
                    oracle = (f"moec's interpreter on the imported model (onnxruntime could not run the model: "
                              f"{why}{nc})")
            if failed is not None:
                if kind in UNDEFINED_KINDS and not unknown_ints:
                    # the model itself is not defined on these inputs (its oracle fails there, not moec): say so
                    if shapes in out["shapes_tried"]:
                        out["shapes_tried"].remove(shapes)
                    out.setdefault("model_undefined_at", []).append({"shapes": shapes, "kind": kind, "why": failed})
                    continue
                out.update(verified=False, no_oracle=True, failure=hinted(f"no oracle could run the model: {failed}"))
                return out
        if not quantized and half_dt is not None and (why is not None or wide_out):
            # judged against the model's f32 analogue, next to the model's own half-precision run(s)
            half_ref = _widened_onnxruntime(get_proto(), lazy, f, xs, opts.threads)
            if half_ref is not None:
                if why is None:  # onnxruntime ran the model; its op-by-op rounding is a second faithful run
                    try:
                        second, no_copy = _rounded_onnxruntime(get_proto(), lazy, f, xs, opts.threads)
                        own = rounded_copy_name(half_dt)
                        if second is None:  # (no faithful copy for onnxruntime: moec's interpreter op by op)
                            second = list(interpret(original(), xs).values())
                            own = f"moec's interpreter op by op (no {half_dt.mlir}-rounded f32 copy: {no_copy})"
                        own_runs.append(second)
                    except Exception:  # noqa: BLE001 - onnxruntime's own run of the model decides alone
                        own = None
                oracle = (f"onnxruntime on the model widened to f32 (moec's error must be no worse than the "
                          f"model's own {half_dt.mlir} run"
                          + (f", by {own}; onnxruntime failed on the model: {why})" if why else
                             f", by onnxruntime{f' and by {own}' if own else ''}: the model returns a wider type)"))
        f32_want = None
        if quantized:
            f32_want = want
            f32_oracle = ("onnxruntime on the model" if why is None else
                          rounded_copy_name(half_dt) if rounded is not None else "moec's interpreter on the model")
            want = None
            oracle = f"interpreter on the {opts.weights} module (dequantise-then-compute)"
        try:
            got = artifact(xs)
        except RuntimeFailure as e:
            out.update(verified=False, failure=hinted(f"compiled code failed at shapes {shapes}: {e}"))
            return out
        trial = {"shapes": shapes, "oracle": oracle, "kind": kind, "identical_rows": identical}
        if opts.check_interpreter or want is None:
            try:
                ref = list(interpret(m, xs).values())
            except IRError as e:
                ref = None
                trial["interpreter_error"] = str(e)
                if want is None:
                    out.update(verified=False, no_oracle=True, failure=hinted(f"no oracle could run the model: {e}"))
                    return out
            if ref is not None:
                if want is None:
                    want = ref
                else:
                    c2 = compare(f.output_names, ref, want)
                    trial["interpreter_vs_onnxruntime"] = {"ok": c2.ok, "max_abs_err": c2.max_abs_err}
        tol_override = None
        from moec.tolerances import FLIP_TOKEN_BOUNDS, QUANT_VERIFY_TOLERANCE
        if quantized and opts.weights in QUANT_VERIFY_TOLERANCE:
            tol_override = QUANT_VERIFY_TOLERANCE[opts.weights]  # quantised GEMM inputs (see tolerances.py)
        c = compare(f.output_names, got, want, tol_override)
        trial.update(ok=c.ok, max_abs_err=c.max_abs_err, max_rel_err=c.max_rel_err, outputs=c.per_output)
        if quantized and opts.weights in FLIP_TOKEN_BOUNDS and not c.ok:
            # flipped int8 / e4m3 codes of the activations (tolerances.py: the per-token model)
            from moec.tolerances import w8a8_flip_check
            fc = w8a8_flip_check(got, want, token_bound=FLIP_TOKEN_BOUNDS[opts.weights])
            trial["w8a8_flipped_tokens"] = fc
            if fc["ok"]:
                c = dataclasses.replace(c, ok=True, message="")
                trial["ok"] = True
        if not c.ok and not quantized and half_dt is None and oracle == "onnxruntime":
            # beyond the plain tolerance against onnxruntime's f32 run: the f32 criterion against onnxruntime on the
            # model in float64 (tolerances.f32_check; made only now: a build within the tolerance never pays for it)
            fc = f32_against_float64(f.output_names, got, want, c,
                                     lambda: _float64_onnxruntime(get_proto(), lazy, f, xs, opts.threads))
            if fc is not None:
                trial.update(ok=fc["ok"], f32_vs_float64=fc)
                if fc["ok"]:
                    trial["oracle"] = "onnxruntime on the model in float64"
                    c = dataclasses.replace(c, ok=True, message="")
                    worst = derived.get("moec_err", -1.0) < fc["moec_err"]
                    derived.update(trials=derived.get("trials", 0) + 1, plain_max_abs_err=max(
                        derived.get("plain_max_abs_err", 0.0), c.max_abs_err), **({k: fc[k] for k in (
                            "moec_err", "own_err", "allowed")} if worst else {}))
                else:
                    c = dataclasses.replace(c, message=c.message + (
                        f"; no float64 run of the model to judge its f32 rounding by ({fc['unavailable']})"
                        if "unavailable" in fc else
                        f"; against onnxruntime on the model in float64 too: {f32_criterion_text(fc, 'onnxruntime')}"))
        if half_ref is not None:  # judged against the f32 model, next to the model's own half semantics
            ht = half_trial(got, want, half_ref, half_dt.np.name, own_runs)
            trial.update(ok=ht["ok"], half_precision=ht)
            c = dataclasses.replace(c, ok=ht["ok"], message=ht.get("failure", ""))
        if quantized:
            from moec.tolerances import QUANT_ERROR_BOUNDS, quantization_error
            qe = quantization_error(got, f32_want, QUANT_ERROR_BOUNDS[opts.weights])
            qtokens += qe.pop("token_rel")  # the median is over the tokens of all trials (tolerances.py)
            trial["quantization_error"] = qe
            for key in qerr:
                qerr[key] = qerr[key] + qe[key] if key in ("tokens", "tokens_over_4x_bound") else max(qerr[key], qe[key])
        out["trials"].append(trial)
        if ti == 0 or (out["oracle"] == "onnxruntime" and oracle != "onnxruntime"):
            out["oracle"] = oracle  # any trial not judged by onnxruntime on the model itself is what is reported
        out["max_abs_err"] = max(out["max_abs_err"], c.max_abs_err)
        out["max_rel_err"] = max(out["max_rel_err"], c.max_rel_err)
        for p in c.per_output:
            tol_seen[p["dtype"]] = p["tolerance"]
        if not c.ok:
            out.update(verified=False, failure=hinted(f"{c.message} at input shapes {shapes}"
                                                      + (f" ({kind} inputs)" if kind != "random" else "")),
                       worst_output=c.worst_output)
            break
    if not out["trials"] and out.get("model_undefined_at"):  # no drawn shape at which the model itself runs
        out.update(verified=False, no_oracle=True,
                   failure=hinted(f"no oracle could run the model: {out['model_undefined_at'][0]['why']}"))
    out["tolerance"] = tol_seen
    if not quantized and half_dt is None and out["trials"]:
        _f32_criterion_record(out, derived, "onnxruntime's f32 output" if out["oracle"] == "onnxruntime" else
                              out["oracle"], "onnxruntime on the model in float64", "onnxruntime")
    # True only if every trial was judged by onnxruntime running the model as given: the CLI's verdict line
    # and report.json never claim onnxruntime otherwise
    out["oracle_is_onnxruntime"] = bool(out["trials"]) and all(t["oracle"] == "onnxruntime" for t in out["trials"])
    if quantized:
        from moec.tolerances import QUANT_ERROR_BOUNDS
        from moec.tolerances import token_median
        bound = QUANT_ERROR_BOUNDS[opts.weights]
        qerr["token_rel_median"] = token_median(qtokens)
        out["quantization_error"] = {**qerr, "vs": f32_oracle, "bound_token_rel_median": bound}
        if out["verified"] and qerr["token_rel_median"] > bound:
            out.update(verified=False, failure=f"quantisation error too large: median per-token relative error "
                                               f"{qerr['token_rel_median']:.3g} vs the f32 model (over the "
                                               f"{len(qtokens)} tokens of all trials) > {bound} allowed "
                                               f"for {opts.weights} weights")
    return out


# -- verifying an artifact against a PyTorch module (moec.compile / moec.jit) --------------------------

def _trial_shapes(example_inputs, arg_shapes, half: bool) -> list:
    """Input shapes for the verification trials: every symbolic dim of the compiled inputs takes other
    sizes (the first symbol 5, 1, 3 -- 64, 1, 7 for half precision --, the second 3, 2, 1, the rest
    2, 1, 2; one symbol shared by several inputs takes one size), static dims keep the example's."""
    syms: List[str] = []
    for shp in arg_shapes:
        for d in shp:
            if not isinstance(d, int) and d not in syms:
                syms.append(d)
    if not syms:
        return [[tuple(x.shape) for x in example_inputs]]
    first = (64, 1, 7) if half else (5, 1, 3)
    sizes = [first, (3, 2, 1)] + [(2, 1, 2)] * max(0, len(syms) - 2)
    trials = []
    for j in range(3):
        val = {s: sizes[i][j] for i, s in enumerate(syms)}
        trials.append([tuple(val[d] if not isinstance(d, int) else int(x.shape[k]) for k, d in enumerate(shp))
                       if shp is not None else tuple(x.shape)
                       for x, shp in zip(example_inputs, list(arg_shapes) + [None] * len(example_inputs))])
    return trials


def verify_against_module(art, module, example_inputs, weights, name, target, arg_shapes=None) -> dict:
    """Compare the artifact with the module's own eager output on inputs whose symbolic dims take
    other sizes (token counts 5, 1, 3 for a [tokens, hidden] input; see _trial_shapes).

    A half-precision module (f16/bf16 inputs) is judged against the same module run in f32: its own
    eager output carries rounding at every op, so the question is whether moec's error against f32
    is no worse than eager's (per-token relative errors, mean and max; see verify.half_trial)."""
    from moec.frontend.torch_import import without_kv_cache
    with without_kv_cache(module):  # (as it was exported: a CausalLM returns its logits)
        return _verify_module_trials(art, module, example_inputs, weights, name, target, arg_shapes)


def _verify_module_trials(art, module, example_inputs, weights, name, target, arg_shapes) -> dict:
    import torch

    from moec.frontend.torch_import import tensor_to_numpy
    from moec.tolerances import QUANT_ERROR_BOUNDS, quantization_error
    half = [x.dtype for x in example_inputs if isinstance(x, torch.Tensor) and x.dtype in (torch.float16,
                                                                                            torch.bfloat16)]
    if not half and not any(isinstance(x, torch.Tensor) and x.is_floating_point() for x in example_inputs):
        # no float input (a CausalLM's input_ids): the module's own parameters say whether it runs in half
        params = {p.dtype for p in module.parameters()} if hasattr(module, "parameters") else set()
        half = sorted(params & {torch.float16, torch.bfloat16}, key=str)[:1]
    out = {"oracle": "the module's eager PyTorch output", "verified": True, "max_abs_err": 0.0, "trials": []}
    ref_module = None
    lazy: dict = {}  # (the module's float64 copy, made at the first trial beyond the plain f32 tolerance)
    derived: dict = {}  # (the trials the f32 criterion against it passed: the errors at the worst)
    if half:
        ref_module = _f32_analogue(module)
        out["oracle"] = (f"the module in f32 (moec's {half[0]} error must be no worse than the module's own "
                         f"{half[0]} eager error)")
    g = torch.Generator().manual_seed(0)
    if arg_shapes is None:  # (the compiled inputs' types: dim 0 symbolic where the type starts with ?)
        arg_shapes = [(("T",) if i["type"].startswith("tensor<?") else (-1,)) + tuple(x.shape[1:])
                      for i, x in zip(art.manifest["inputs"], example_inputs)]
        arg_shapes = [tuple(int(x.shape[0]) if d == -1 else d for d in s) for s, x in zip(arg_shapes, example_inputs)]
    for shapes in _trial_shapes(example_inputs, arg_shapes, bool(half)):
        T = shapes[0][0] if shapes and shapes[0] else None
        xs = []
        for x, shape in zip(example_inputs, shapes):
            if x.is_floating_point():
                xs.append(torch.randn(shape, generator=g).to(x.dtype).to(x.device))  # (where the module is)
            else:
                hi = int(x.max().item()) + 1 if x.numel() else 1
                xs.append(torch.randint(0, max(hi, 1), shape, generator=g, dtype=x.dtype).to(x.device))
        with torch.no_grad():
            want = _as_list(module(*xs))
            ref = want
            if half:
                try:
                    ref = _as_list(ref_module(*[x.float() if x.is_floating_point() else x for x in xs]))
                except Exception as e:  # noqa: BLE001 - the user's code: say what moec needs
                    raise UserInputError(
                        f"'{name}': moec verifies a {half[0]} model against the same model in float32, and "
                        f"running it in float32 failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "make the model run in float32 after .float() (e.g. no hard-coded half dtypes), "
                        "or pass verify=False") from None
        got = ([tensor_to_numpy(o) for o in art.call_torch(xs)] if hasattr(art, "call_torch")  # the path users call
               else art([tensor_to_numpy(x) for x in xs]))
        want = [tensor_to_numpy(w) for w in want]
        ref = [tensor_to_numpy(r) for r in ref]
        picks, bad = argmax_outputs(got, want)
        if bad:
            out.update(verified=False, failure=f"{bad} at input shapes {shapes}")
            break
        if picks:  # (judged above against moec's own scores; the scores against the module below)
            got, want, ref = ([o for i, o in enumerate(x) if i not in picks] for x in (got, want, ref))
        if weights != "f32":
            qe = quantization_error(got, ref, QUANT_ERROR_BOUNDS[weights])
            qe.pop("token_rel")
            ok = qe["token_rel_median"] <= QUANT_ERROR_BOUNDS[weights]
            out["trials"].append({"T": T, "shapes": shapes, "quantization_error": qe, "ok": ok})
            if not ok:
                out.update(verified=False, failure=f"quantisation error {qe['token_rel_median']:.3g} > bound")
                break
            continue
        if half:
            trial = half_trial(got, want, ref, str(half[0]).replace("torch.", ""))
            out["trials"].append(dict(trial, T=T, shapes=shapes))
            out["max_abs_err"] = max(out["max_abs_err"], trial["max_abs_err_vs_eager"])
            if not trial["ok"]:
                out.update(verified=False, failure=f"{trial['failure']} at input shapes {shapes}")
                break
            continue
        blind = _nothing_finite(want)
        if blind:  # NaN where the module is NaN agrees (compare), but with no finite element nothing is checked
            out.update(verified=False, no_oracle=True, failure=(
                f"the module's own output {blind} at input shapes {shapes}: there is nothing to verify "
                "against (an uninitialised module? transformers' experts parameters stay torch.empty until a "
                "model's weight init runs: build it with from_config / from_pretrained or initialise its "
                "parameters, or pass verify=False)"))
            break
        names = [f"out{i}" for i in range(len(want))]
        c = compare(names, got, want)
        trial = {"T": T, "shapes": shapes, "ok": c.ok, "max_abs_err": c.max_abs_err}
        out["trials"].append(trial)
        out["max_abs_err"] = max(out["max_abs_err"], c.max_abs_err)
        fc = None
        if not c.ok and weights == "f32":  # beyond the plain tolerance: against the module in float64 (above)
            if "f64" not in lazy:
                lazy["f64"] = Float64Analogue(module)
            fc = f32_against_float64(names, got, want, c, lambda: [tensor_to_numpy(r) for r in _as_list(lazy["f64"](*xs))])
        if fc is not None:
            trial.update(ok=fc["ok"], f32_vs_float64=fc)
            if fc["ok"]:
                worst = derived.get("moec_err", -1.0) < fc["moec_err"]
                derived.update(trials=derived.get("trials", 0) + 1, plain_max_abs_err=max(
                    derived.get("plain_max_abs_err", 0.0), c.max_abs_err), **({k: fc[k] for k in (
                        "moec_err", "own_err", "allowed")} if worst else {}))
                continue
        if not trial["ok"]:
            why = ("" if fc is None else f"; no float64 run of the module to judge its f32 rounding by "
                   f"({fc['unavailable']})" if "unavailable" in fc else
                   f"; against the module in float64 too: {f32_criterion_text(fc, 'the module')}")
            out.update(verified=False, failure=f"{c.message}{why} at input shapes {shapes}")
            break
    if weights == "f32" and not half:
        _f32_criterion_record(out, derived, "the module's eager PyTorch output", "the module in float64 (a copy)",
                              "the module")
    return out


def argmax_outputs(got, want):
    """({index of an integer output that is the argmax of a float output: that output's index}, failure or '').

    An integer output the module computes as the argmax over the last axis of one of its float outputs (a greedy
    decode step's token beside its logits: ``want``'s values show which, no names) is judged against moec's own
    float output, exactly: moec's ids must be the argmax of moec's scores (ties: the lowest index; a NaN score
    fails).  Comparing the ids with the module's instead would fail a correct build wherever two scores lie
    within the build's tolerance of each other (a near-tie; with quantised weights a legitimately moved choice),
    and pass a build whose scores are wrong but keep their order.  The float output itself is checked against
    the module by the caller's criterion."""
    picks, failure = {}, ""
    fl = [j for j, w in enumerate(want) if np.asarray(w).dtype.kind == "f" and np.asarray(w).ndim >= 1
          and np.asarray(w).shape[-1] > 0]
    for i, w in enumerate(want):
        w = np.asarray(w)
        if w.dtype.kind not in "iu":
            continue
        for j in fl:
            s = np.asarray(want[j])
            if s.shape[:-1] == w.shape and np.array_equal(np.argmax(s, axis=-1), w):
                picks[i] = j
                g, gs = np.asarray(got[i]), np.asarray(got[j], np.float64)
                if g.shape != w.shape or gs.shape != s.shape:
                    failure = failure or f"output {i}: shape {list(g.shape)} (its scores {list(gs.shape)})"
                elif not np.isfinite(gs).all():
                    failure = failure or f"output {i}: the scores it picks from (output {j}) are not finite"
                elif not np.array_equal(np.argmax(gs, axis=-1), g):
                    k = int(np.flatnonzero(np.argmax(gs, axis=-1).reshape(-1) != g.reshape(-1))[0])
                    failure = failure or (f"output {i}: id {int(g.reshape(-1)[k])} at row {k} is not the argmax of "
                                          f"moec's own output {j} there")
                break
    return picks, failure


def _f32_criterion_record(out: dict, derived: dict, oracle: str, reference: str, own: str) -> None:
    """``out``'s criterion, oracle and verification entries for an f32 build: the plain f32 tolerance against the
    f32 ``oracle`` judged every trial, or (``derived``: the trials it did not pass) the f32 criterion against the
    model in float64 (``reference``) judged some."""
    from moec.tolerances import TOLERANCES
    tol = TOLERANCES["f32"]
    plain = f"the f32 tolerance (atol {tol.atol:g}, rtol {tol.rtol:g}) against {oracle}"
    if not derived:
        out["criterion"] = plain
        if out["verified"]:
            out["verification"] = f"verified by {plain}: max abs error {out['max_abs_err']:.3g}"
        return
    out["criterion"] = (f"the f32 criterion (moec.tolerances.f32_check) against {reference}, where {plain} was "
                        "exceeded")
    out["f32_vs_float64"] = dict(derived, reference=reference)
    text = f32_criterion_text(derived, own)
    out["oracle"] = (f"{reference} by the f32 criterion ({text}; beyond the plain f32 tolerance against {oracle}: max abs "
                     f"error {derived['plain_max_abs_err']:.3g})")
    if out["verified"]:
        out["verification"] = (f"verified by the f32 criterion against {reference} in {derived['trials']} of "
                               f"{len(out['trials'])} trials: {text}; {plain}: max abs error "
                               f"{derived['plain_max_abs_err']:.3g} (beyond it)")


def _nothing_finite(outs) -> str:
    """'' when some float output holds a finite element, else what the outputs hold ("is NaN everywhere",
    ...): a module whose float outputs are all NaN/Inf gives verification nothing to compare."""
    fl = [np.asarray(o) for o in outs if np.asarray(o).dtype.kind == "f" or np.asarray(o).dtype.name == "bfloat16"]
    fl = [o.astype(np.float32) if o.dtype.kind != "f" else o for o in fl if o.size]
    if not fl or any(np.isfinite(o).any() for o in fl):
        return ""
    nan = sum(int(np.isnan(o).sum()) for o in fl)
    n = sum(o.size for o in fl)
    return "is NaN everywhere" if nan == n else f"holds no finite value ({nan} of {n} elements NaN, the rest Inf)"


def _f32_analogue(module):
    """The module in float32 (its half-precision tensors widened), leaving the user's module untouched."""
    import torch
    return _analogue(module, torch.float32)


def _analogue(module, dtype):
    """The module with its float tensors in ``dtype`` (float32: the half ones; float64: every float one), leaving
    the user's module untouched: a deep copy, ``.to(dtype)``.  For a function wrapped by moec.jit, the modules and
    tensors it reaches through its closure and its globals are replaced by such copies in a rebuilt function
    (``def f(x): return layer(x)``)."""
    import copy
    import types

    import torch
    widen = (torch.float16, torch.bfloat16) + ((torch.float32,) if dtype == torch.float64 else ())
    fn = getattr(module, "_moec_fn", None)
    if fn is None or not isinstance(fn, types.FunctionType):
        return copy.deepcopy(module).to(dtype)
    memo: dict = {}

    def conv(v):
        if isinstance(v, torch.nn.Module):
            if id(v) not in memo:
                memo[id(v)] = copy.deepcopy(v).to(dtype)
            return memo[id(v)]
        if isinstance(v, torch.Tensor) and v.dtype in widen:
            return v.to(dtype)
        return v
    names = set(fn.__code__.co_names)
    g = dict(fn.__globals__)
    for k in names & set(g):
        g[k] = conv(g[k])
    cells = tuple(types.CellType(conv(c.cell_contents)) if _filled(c) else c for c in fn.__closure__ or ())
    new_fn = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, cells or None)
    wrapper = copy.copy(module)
    wrapper.forward = lambda *a: new_fn(*a)
    return wrapper


class Float64Analogue:
    """The module evaluated in float64 on the same (f32) weights and inputs: the math its f32 run approximates, the
    reference of the f32 criterion (tolerances.f32_check).  A copy (verify._analogue); the user's module is not
    touched.  Called with the f32 inputs (float ones widened) under no_grad, it returns the module's output.
    transformers' grouped_mm experts have no float64 kernel in torch: the copy runs them as batched_mm (the same
    function: frontend.torch_import.traceable_experts).  What the module's own code pins to float32 (``.float()``
    before a router's softmax) stays float32 in the copy; a module whose code then mixes float32 and float64
    operands fails here, and is judged by the plain tolerance (the caller says so)."""

    def __init__(self, module):
        import torch
        self.copy = _analogue(module, torch.float64)

    def __call__(self, *xs):
        import contextlib

        import torch

        from moec.frontend.torch_import import _transformers_experts, traceable_experts
        grouped = any(e.config._experts_implementation == "grouped_mm" for e in _transformers_experts(self.copy)) \
            if isinstance(self.copy, torch.nn.Module) else False
        ctx = traceable_experts(self.copy, "batched_mm")[0] if grouped else contextlib.nullcontext()
        with ctx, torch.no_grad():
            return self.copy(*[x.double() if x.is_floating_point() else x for x in xs])


def f32_against_float64(names, got, want, c: "Comparison", reference) -> Optional[dict]:
    """The f32 criterion (tolerances.f32_check) for a trial whose plain comparison ``c`` of ``got`` with the f32
    oracle's ``want`` failed only on the values of f32 outputs: ``reference()`` gives the model's outputs in float64
    (called only here, so a build within the plain tolerance never pays for a float64 run).  None where it does not
    apply (``c`` passed; a shape, dtype or non-f32 output failed: those are judged exactly as before); else the check's
    result ({ok, moec_err, own_err, allowed, ...}), or {ok: False, unavailable: why} where no float64 reference
    could be made."""
    if c.ok or any("error" in p or (not p.get("ok") and p["dtype"] != "f32") for p in c.per_output):
        return None
    idx = [i for i, p in enumerate(c.per_output) if p["dtype"] == "f32"]
    try:
        ref = list(reference())
    except Exception as e:  # noqa: BLE001 - the user's model / the oracle: say why and keep the plain verdict
        return {"ok": False, "unavailable": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
    if len(ref) != len(got):
        return {"ok": False, "unavailable": f"its float64 run returns {len(ref)} outputs, not {len(got)}"}
    for i in idx:
        if np.asarray(ref[i]).dtype != np.float64:
            return {"ok": False, "unavailable": f"its float64 run returns {np.asarray(ref[i]).dtype} for output "
                                                f"'{_shown(names[i])}' (the model casts to float32 itself)"}
    from moec.tolerances import f32_check
    fc = f32_check([got[i] for i in idx], [want[i] for i in idx], [ref[i] for i in idx])
    for p in fc.get("outputs", []):
        p["output"] = names[idx[p["output"]]]
    return fc


def f32_criterion_text(fc: dict, own: str) -> str:
    """moec's and ``own``'s (the f32 oracle's) errors against the float64 reference, for reports."""
    return (f"moec's f32 error {fc['moec_err']:.3g}, {own}'s own f32 error {fc['own_err']:.3g}, in units of the f32 "
            f"tolerance against the float64 run (allowed {fc['allowed']:.3g}: max(1, 2x {own}'s))")


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # (a cell not yet assigned)
        return False
    return True


def _as_list(y) -> list:
    """The tensors of a module's output in the order the import returns them (a tuple, a dict,
    transformers' ModelOutput)."""
    from moec.frontend.torch_import import flat_outputs
    return flat_outputs(y)


# -- modules whose own weights leave nothing to verify (issue 16) ----------------------------------------------
# transformers leaves a block's experts and router parameters torch.empty until a model's weight init runs, so a
# block built from its config alone computes with NaN / ~1e35 / garbage.  Comparing the build with such a module
# proves nothing (equal NaN positions "agree"; an output NaN everywhere leaves nothing to compare), so the same
# pipeline is verified on a copy of the module whose weights are finite: every float parameter of 2+ dimensions
# (the projections, as recognition's proofs read them) and any float tensor holding NaN / values beyond a trained
# model's take the proofs' deterministic pseudo-random values (recognize_moe._probe_array); the copy is imported,
# compiled with the same options and compared with its own eager output at the usual tolerance.  The artifact the
# user gets is built from the real weights; the report says what was verified, and on what.

def unfit_tensors(module) -> List[str]:
    """Names of the module's float parameters and buffers holding NaN/Inf or finite values beyond any trained
    weight's (uninitialised memory; recognize_moe._unfit, with +-inf counted for parameters)."""
    from moec.passes.recognize_moe import _unfit
    out = []
    named = [(n, t, True) for n, t in module.named_parameters()] + [(n, t, False) for n, t in module.named_buffers()]
    for n, t, param in named:
        if not t.is_floating_point() or t.numel() < 2:
            continue
        a = t.detach().float().cpu().numpy()
        if _unfit(a) or (param and not np.isfinite(a).all()):
            out.append(n)
    return out


def substituted_copy(module):
    """(a deep copy of ``module`` with finite weights, the names of the tensors replaced): every float parameter
    of 2+ dimensions and every unfit tensor (see above) takes recognize_moe's probe values for its name."""
    import copy

    import torch

    from moec.passes.recognize_moe import _probe_array
    twin = copy.deepcopy(module)
    unfit = set(unfit_tensors(twin))
    names = []
    with torch.no_grad():
        for n, t in list(twin.named_parameters()) + list(twin.named_buffers()):
            if not t.is_floating_point() or not (n in unfit or (t.dim() >= 2 and isinstance(t, torch.nn.Parameter))):
                continue
            t.copy_(torch.from_numpy(_probe_array(n, np.zeros(tuple(t.shape), np.float32))).to(t.dtype))
            names.append(n)
    return twin, names


def verify_module_or_substitute(art, built: Module, module, example_inputs, weights, name, target, arg_shapes,
                                build_copy) -> dict:
    """verify_against_module, or -- when the module's own weights are unfit (see above) or give an output with
    nothing finite -- the same check of the same pipeline on substituted finite weights.  ``build_copy(twin)``
    imports and compiles ``twin`` as the module was and returns (its loaded artifact, its compiled IR)."""
    unfit = unfit_tensors(module)
    if unfit:
        import torch

        from moec.frontend.torch_import import tensor_to_numpy, without_kv_cache
        where = f"{', '.join(unfit[:4])}{f', ... {len(unfit)} tensors' if len(unfit) > 4 else ''}"
        with without_kv_cache(module), torch.no_grad():
            y = [tensor_to_numpy(o) for o in _as_list(module(*example_inputs))]
        fl = [np.asarray(o, np.float32) for o in y if o.dtype.kind == "f" or o.dtype.name == "bfloat16"]
        why = (f"the module's own weights give a non-finite output (NaN/Inf or uninitialised values in {where})"
               if any(not np.isfinite(o).all() for o in fl) else
               f"the module's own weights hold NaN/Inf or uninitialised values ({where})")
    else:
        out = verify_against_module(art, module, example_inputs, weights, name, target, arg_shapes)
        if not out.get("no_oracle"):
            return out
        why = f"the module's own weights give a non-finite output ({out['failure'].split(': there is')[0]})"
    twin, names = substituted_copy(module)
    twin_art, twin_built = build_copy(twin)
    out = verify_against_module(twin_art, twin, example_inputs, weights, name, target, arg_shapes)
    out["substituted_weights"] = {"reason": why, "tensors": names}
    # the same program: what recognition found and the ops built (only the constants' values differ, and what
    # is measured on them: a quantised layer's error statistics)
    def program(m):
        return [{k: v for k, v in la.items() if k != "weights"} for la in moe_layers_of(m)], op_histogram(m)
    same = program(twin_built) == program(built)
    if out["verified"] and not same:
        out.update(verified=False, failure="the build on substituted finite weights is not the same program as "
                   "the module's own (its recognised layers or ops differ), so it verifies nothing about it")
    if out["verified"]:
        qe = [t["quantization_error"]["token_rel_median"] for t in out["trials"] if "quantization_error" in t]
        f64 = out.get("f32_vs_float64")
        err = (f"quantisation error {max(qe):.3g} (median per-token relative) against the substituted module's eager "
               "output" if qe else
               f"by the f32 criterion against the substituted module in float64: "
               f"{f32_criterion_text(f64, 'the substituted module')}" if f64 else
               f"max abs error {out['max_abs_err']:.3g} against the substituted module's eager output")
        out["verification"] = f"verified on substituted finite weights: {why}; {err}"
    else:
        out["failure"] = f"on substituted finite weights ({why}): {out.get('failure', 'mismatch')}"
    return out
