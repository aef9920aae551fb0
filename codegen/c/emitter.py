"""C emitter: a moec function -> one C translation unit calling the runtime kernels.

Per-op emitters are registered with :func:`c_op` (modules ``kernels_*.py``
beside this one).  An emitter gets the :class:`CEmitCtx` and the op and
returns C statements; it names tensors with ``ctx.t(value)`` (a
``moec_tensor*`` expression), embeds attributes with ``ctx.c_int`` /
``ctx.c_float`` / ``ctx.c_ints`` (string attributes select from a fixed table;
any input text goes through ``ctx.c_str``, i.e. ``moec.codegen.escape.c_string``,
and only ever as a ``"%s"`` argument, never into a format string), and may
declare file-level code with ``ctx.decl``.  Statements must report failure
through ``MOEC_TRY(...)``.

The generated unit exports::

    int moec_init(const char *weights_path, char *err, int errlen);
    int moec_run(const moec_tensor *inputs, int n_in, moec_tensor *outputs, int n_out,
                 int nthreads, char *err, int errlen);
    void moec_free_outputs(moec_tensor *outputs, int n_out);

``moec_run`` validates the inputs against the function's types (dtype, rank,
static sizes, consistent symbolic sizes), runs the ops, releases each
intermediate after its last use, and on any failure returns non-zero with a
message naming the node.
"""
from __future__ import annotations

import glob
import importlib
import os
import pkgutil
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from moec.ir import DType, Function, Module, Value
from moec.ir.core import Operation, ResourceRef
from moec.codegen.escape import c_string
from moec.codegen.c.dtypes import C_DTYPE

EmitFn = Callable[["CEmitCtx", Operation], List[str]]


class _Emitter:
    def __init__(self, fn: EmitFn, aliases: Dict[int, int]):
        self.fn = fn
        self.aliases = aliases


C_EMITTERS: Dict[str, _Emitter] = {}


def c_op(op_name: str, aliases: Optional[Dict[int, int]] = None):
    """Register a C emitter.  ``aliases={r: i}``: result r may share operand i's memory."""

    def wrap(fn):
        C_EMITTERS[op_name] = _Emitter(fn, dict(aliases or {}))
        return fn

    return wrap


_loaded = False


def load_emitters():
    global _loaded
    if _loaded:
        return
    pkg = importlib.import_module(__package__)
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name.startswith("kernels"):
            importlib.import_module(f"{__package__}.{m.name}")
    _loaded = True


RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime")


def runtime_group_headers() -> List[str]:
    """The kernel headers of the runtime (``rt_*.h``), included by every generated unit."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(RUNTIME_DIR, "rt_*.h")))


class CodegenError(Exception):
    pass


class CEmitCtx:
    def __init__(self, module: Module, func: Function):
        self.m = module
        self.f = func
        self.names: Dict[int, str] = {}
        self.decls: List[str] = []
        self._n = 0
        self._decl_keys: Dict[str, str] = {}
        self.packs: Dict[object, dict] = {}  # id(op) / (id(op), operand) -> packed panels (gemm_pack.append_packs)
        self.inits: List[str] = []  # statements for moec_init_weights (binding packed weights)

    # -- naming ----------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def t(self, v: Value) -> str:
        """C expression (a moec_tensor*) for a value."""
        return "&" + self.names[id(v)]

    def c_dtype(self, dt: DType) -> str:
        return C_DTYPE[dt][0]

    def c_int(self, x) -> str:
        x = int(x)
        if not -(2 ** 63) <= x < 2 ** 63:
            raise CodegenError(f"integer {x} does not fit in int64")
        if x == -(2 ** 63):
            return "INT64_MIN"
        return f"INT64_C({x})"

    def c_float(self, x) -> str:
        x = float(x)
        if np.isnan(x):
            return "NAN"
        if np.isinf(x):
            return "INFINITY" if x > 0 else "(-INFINITY)"
        return x.hex()

    def c_bool(self, x) -> str:
        return "1" if x else "0"

    def c_ints(self, xs: Sequence[int]) -> str:
        """Name of a static const int64_t array holding xs (NULL-safe for empty)."""
        xs = [int(x) for x in xs]
        body = ", ".join(self.c_int(x) for x in xs) or "0"
        key = "i64:" + body
        if key not in self._decl_keys:
            name = self.fresh("k_ints")
            self.decls.append(f"static const int64_t {name}[] = {{{body}}};")
            self._decl_keys[key] = name
        return self._decl_keys[key]

    def c_floats(self, xs: Sequence[float]) -> str:
        body = ", ".join(self.c_float(x) for x in xs) or "0"
        key = "f64:" + body
        if key not in self._decl_keys:
            name = self.fresh("k_f64")
            self.decls.append(f"static const double {name}[] = {{{body}}};")
            self._decl_keys[key] = name
        return self._decl_keys[key]

    def c_str(self, s: str) -> str:
        return c_string(s)

    def decl(self, code: str) -> None:
        self.decls.append(code)

    def decl_once(self, key: str, code: str) -> None:
        """Declare file-level code once per unit, whatever number of ops ask for it (``key`` names it)."""
        if "once:" + key not in self._decl_keys:
            self._decl_keys["once:" + key] = key
            self.decls.append(code)

    def packed(self, e: dict) -> str:
        """The C tensor (``&name``) of packed weight panels (an entry of gemm_pack.append_packs), bound once in
        moec_init_weights and shared by every op that reads them."""
        if "cname" not in e:
            e["cname"] = name = self.fresh("pk")
            self.decl(f"static moec_tensor {name};")
            self.inits.append(f"  if (moec_bind_weight(&{name}, {e.get('ctype', 'MOEC_F32')}, {len(e['shape'])}, "
                              f"{self.c_ints(e['shape'])}, {self.c_int(e['offset'])}, {self.c_int(e['nbytes'])}, "
                              "err, errlen)) return 1;")
        return "&" + e["cname"]


def _liveness(f: Function, aliases_of) -> Dict[int, int]:
    """id(root value) -> index of the last op that uses it or any alias of it."""
    root: Dict[int, int] = {}
    last: Dict[int, int] = {}

    def r(v):
        return root.get(id(v), id(v))

    for i, o in enumerate(f.ops):
        for v in o.operands:
            last[r(v)] = i
        for ri, oi in aliases_of(o).items():
            root[id(o.results[ri])] = r(o.operands[oi])
        for res in o.results:
            last.setdefault(r(res), i)
    return last, root


def emit_c(module: Module, func: Optional[Function] = None, weight_index: Optional[Dict[str, dict]] = None,
           packs: Optional[Dict[int, dict]] = None) -> str:
    """Emit the C unit for ``func`` (default: main).  ``weight_index`` maps weight keys
    to their offsets in the weights file (from WeightStore.save); ``packs`` the ops whose weight
    also has packed panels in it (from gemm_pack.append_packs: id(op) for the f32 GEMM's panels,
    (id(op), operand index) for the bf16 pair panels)."""
    load_emitters()
    f = func or module.main
    ctx = CEmitCtx(module, f)
    ctx.packs = dict(packs or {})
    missing = sorted({o.name for o in f.ops if o.name not in C_EMITTERS and o.name != "moec.constant"})
    if missing:
        raise CodegenError(f"the C target has no code generator for op(s): {', '.join(missing)}")

    def aliases_of(o):
        e = C_EMITTERS.get(o.name)
        return e.aliases if e else {}

    last, root = _liveness(f, aliases_of)

    # tensors: args, constants (static, set up in moec_init), temporaries (locals)
    static_lines, init_lines, local_names = [], [], []
    for i, a in enumerate(f.args):
        ctx.names[id(a)] = f"in{i}"
    weight_index = weight_index or {}
    const_ids = set()
    for o in f.ops:
        if o.name == "moec.constant":
            name = ctx.fresh("c")
            v = o.results[0]
            ctx.names[id(v)] = name
            const_ids.add(id(v))
            static_lines.append(f"static moec_tensor {name};")
            t = v.type
            shape = ctx.c_ints(t.shape)
            dt = ctx.c_dtype(t.dtype)
            val = o.attrs["value"]
            if isinstance(val, ResourceRef):
                e = weight_index.get(val.key)
                if e is None:
                    raise CodegenError(f"weight '{val.key}' has no entry in the weights file index")
                nbytes = e["nbytes"]
                if e.get("layout") is not None:  # stored as its kernels' (padded) panels: only its shape is read
                    nbytes = min(nbytes, int(np.prod(t.shape, dtype=np.int64)) * t.dtype.np.itemsize)
                init_lines.append(f"  if (moec_bind_weight(&{name}, {dt}, {int(t.rank)}, {shape}, "
                                  f"{ctx.c_int(e['offset'])}, {ctx.c_int(nbytes)}, err, errlen)) return 1;")
            else:
                arr = np.asarray(val, order="C")
                raw = arr.tobytes() or b"\0"
                data = ctx.fresh("d")
                body = ",".join(str(b) for b in raw)
                static_lines.append(f"static const uint8_t {data}[] __attribute__((aligned(64))) = {{{body}}};")
                init_lines.append(f"  if (moec_bind_const(&{name}, {dt}, {t.rank}, {shape}, (void *){data}, err, errlen)) return 1;")
        else:
            for r in o.results:
                name = ctx.fresh("t")
                ctx.names[id(r)] = name
                local_names.append(name)

    body: List[str] = []
    body.extend(_input_checks(ctx, f))
    for i, o in enumerate(f.ops):
        if o.name == "moec.constant":
            continue
        body.append(f"  ctx.node = {c_string(o.loc or o.name)}; ctx.op = {c_string(o.name)};")
        try:
            stmts = C_EMITTERS[o.name].fn(ctx, o)
        except CodegenError:
            raise
        except Exception as e:
            raise CodegenError(f"C code generation failed for op {o.describe()}: {type(e).__name__}: {e}") from e
        body.extend("  " + s for s in stmts)
        # results must match the declared element type
        for r in o.results:
            body.append(f"  MOEC_TRY(moec_check_result(&ctx, {ctx.t(r)}, {ctx.c_dtype(r.type.dtype)}, {r.type.rank}));")
        # release values whose (alias group's) last use is this op
        for v in list(o.operands) + list(o.results):
            rid = root.get(id(v), id(v))
            if last.get(rid) == i and id(v) == rid and id(v) not in const_ids and v.owner is not None \
                    and not any(rid == root.get(id(x), id(x)) for x in f.outputs):
                body.append(f"  moec_release({ctx.t(v)});")
                last[rid] = -1  # released once

    out_lines = []
    for k, v in enumerate(f.outputs):
        src = ctx.t(v)
        # outputs must own their memory (views, args and constants are copied)
        out_lines.append(f"  if (!({src})->owned || moec_output_taken(outputs, {k}, ({src})->data)) "
                         f"{{ MOEC_TRY(moec_clone(&ctx, &outputs[{k}], {src})); }} "
                         f"else {{ outputs[{k}] = *({src}); ({src})->owned = 0; }}")

    lines = ['#include "moec_rt.h"', '#include "moec_model.h"']
    lines += [f'#include "{h}"' for h in runtime_group_headers()]
    lines += ["#include <math.h>", "#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>", ""]
    lines += ctx.decls + static_lines
    lines += ["", "int moec_init_weights(char *err, int errlen) {"] + init_lines + ctx.inits + ["  return 0;", "}", ""]
    lines.append("int moec_run(const moec_tensor *inputs, int n_in, moec_tensor *outputs, int n_out, int nthreads, "
                 "char *err, int errlen) {")
    lines.append("  moec_ctx ctx; memset(&ctx, 0, sizeof ctx); ctx.nthreads = nthreads;")
    lines.append("  if (!moec_weights_ready()) { snprintf(err, errlen, \"moec_init was not called\"); return 2; }")
    lines.append(f"  if (n_in != {len(f.args)} || n_out != {len(f.outputs)}) {{ snprintf(err, errlen, "
                 f"\"expected {len(f.args)} inputs and {len(f.outputs)} outputs, got %d and %d\", n_in, n_out); return 2; }}")
    for i in range(len(f.args)):
        lines.append(f"  moec_tensor in{i} = inputs[{i}]; in{i}.owned = 0;")
    for n in local_names:
        lines.append(f"  moec_tensor {n}; memset(&{n}, 0, sizeof {n});")
    lines.append(f"  for (int k = 0; k < {len(f.outputs)}; k++) memset(&outputs[k], 0, sizeof outputs[k]);")
    lines += body + out_lines
    for n in local_names:
        lines.append(f"  moec_release(&{n});")
    lines.append("  return 0;")
    lines.append("moec_fail_label:")
    for n in local_names:
        lines.append(f"  moec_release(&{n});")
    lines.append(f"  moec_free_outputs(outputs, {len(f.outputs)});")
    lines.append("  snprintf(err, errlen, \"%s\", ctx.err[0] ? ctx.err : \"unknown failure\");")
    lines.append("  return 1;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _input_checks(ctx: CEmitCtx, f: Function) -> List[str]:
    # names and symbols come from the model: only as c_string arguments of constant formats
    out = ["  ctx.node = \"inputs\"; ctx.op = \"input check\";"]
    syms: Dict[str, str] = {}
    for i, (a, n) in enumerate(zip(f.args, f.arg_names)):
        t = a.type
        out.append(f"  MOEC_TRY(moec_check_input(&ctx, &in{i}, {c_string(n)}, {c_string(str(t))}, "
                   f"{ctx.c_dtype(t.dtype)}, {int(t.rank)}));")
        for d, dim in enumerate(t.shape):
            if isinstance(dim, int):
                out.append(f"  if (in{i}.shape[{d}] != {ctx.c_int(dim)}) {{ moec_fail(&ctx, \"input '%s' dimension %d "
                           f"is %lld, expected %lld (type %s)\", {c_string(n)}, {d}, (long long)in{i}.shape[{d}], "
                           f"(long long){ctx.c_int(dim)}, {c_string(str(t))}); goto moec_fail_label; }}")
            elif isinstance(dim, str):
                if dim in syms:
                    out.append(f"  if (in{i}.shape[{d}] != {syms[dim]}) {{ moec_fail(&ctx, \"input '%s' dimension %d "
                               f"is %lld but symbol %s is %lld from an earlier input\", {c_string(n)}, {d}, "
                               f"(long long)in{i}.shape[{d}], {c_string(dim)}, (long long){syms[dim]}); "
                               "goto moec_fail_label; }")
                else:
                    syms[dim] = f"in{i}.shape[{d}]"
    return out
