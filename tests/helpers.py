"""Test helpers: build small ONNX models, compile them with moec, check everything we promise.

``check_model`` is what op tests call: it compiles the model for the C target,
verifies against onnxruntime at several shapes (the driver does this), and
checks that the final IR round-trips through the printer/parser and parses
with MLIR's own parser.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moec.driver import CompileOptions, compile_onnx
from moec.ir import parse_module, print_module, verify_module

IR_VERSION = 10  # what the installed onnxruntime accepts


def tensor_info(name: str, dtype, shape):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) if not isinstance(dtype, int) else dtype
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, initializers: Optional[Dict[str, np.ndarray]] = None,
               opset: int = 18, name: str = "test", extra_opsets: Sequence = ()) -> onnx.ModelProto:
    """inputs/outputs: lists of (name, numpy dtype, shape) or ValueInfoProto."""
    def vi(x):
        return x if isinstance(x, onnx.ValueInfoProto) else tensor_info(*x)

    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    g = helper.make_graph(list(nodes), name, [vi(i) for i in inputs], [vi(o) for o in outputs], inits)
    ops = [helper.make_opsetid("", opset)] + list(extra_opsets)
    m = helper.make_model(g, opset_imports=ops, producer_name="moec-tests")
    m.ir_version = IR_VERSION
    return m


def check_ir_text(module) -> None:
    """print -> parse -> print is the identity, the result verifies, and MLIR parses it."""
    text = print_module(module)
    m2 = parse_module(text, module.weights)
    verify_module(m2)
    again = print_module(m2)
    if again != text:
        import difflib
        diff = "\n".join(difflib.unified_diff(text.splitlines(), again.splitlines(), lineterm=""))
        raise AssertionError(f"print -> parse -> print changed the text:\n{diff}")
    mlir_parse(text)


_mlir_ctx = None


def mlir_parse(text: str):
    global _mlir_ctx
    from iree.compiler import ir
    if _mlir_ctx is None:
        _mlir_ctx = ir.Context()
        _mlir_ctx.allow_unregistered_dialects = True
    with _mlir_ctx:
        return ir.Module.parse(text)


def check_model(model: onnx.ModelProto, tmp_path, symbol_sizes=(5, 1, 3), **opts):
    """Compile for the C target and verify against onnxruntime; return the report."""
    out = os.path.join(str(tmp_path), f"out_{model.graph.name}_{id(model)}")
    r = compile_onnx(model, out, CompileOptions(force=True, symbol_sizes=symbol_sizes, **opts))
    assert r.report["verified"], r.report.get("failure")
    assert r.report["oracle"] == "onnxruntime", r.report["oracle"]
    check_ir_text(r.module)
    return r.report


def run_compiled(model: onnx.ModelProto, tmp_path, inputs: List[np.ndarray]):
    """Compile without verification and run on the given inputs (for error-path tests)."""
    from moec.targets.registry import CpuArtifact
    out = os.path.join(str(tmp_path), f"run_{model.graph.name}_{id(model)}")
    compile_onnx(model, out, CompileOptions(force=True, verify=False))
    return CpuArtifact(out)(inputs)


def to_f16(model):
    """The model with every f32 tensor made f16: initializers, Constant values, graph inputs/outputs/value
    infos, Cast targets.  (onnxruntime's CPU provider has f16 kernels for every op of the models used here.)"""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    return m


def experts_module(mode, qi, qo, extra, T_dim, D, E, k, aq="none", G=0):
    """x [T, D], router logits l [T, E] -> route -> dispatch -> moe.experts(wq=mode; weights qi, qo and the
    quantisation operands `extra` as constants) -> combine: one MoE layer in IR, verified."""
    from moec.ir import Module, Function, TensorType, DType, Value, verify_module
    from moec.ir.opdef import OPS
    from moec.ir.core import ResourceRef
    m = Module()
    f = Function("main", [Value(TensorType(DType.F32, (T_dim, D)), "x"), Value(TensorType(DType.F32, (T_dim, E)), "l")])
    m.functions.append(f)

    def const(a, hint):
        key = m.weights.add(a, hint)
        return f.add(OPS["moec.constant"].create([], {"value": ResourceRef(key)}, None,
                                                 [TensorType(DType.from_np(a.dtype), a.shape)])).result
    rw, ids = f.add(OPS["moe.route"].create([f.args[1]], {"k": k})).results
    order, off = f.add(OPS["moe.dispatch"].create([ids], {"num_experts": E})).results
    ops = [f.args[0], ids, order, off, const(qi, "wi"), const(qo, "wo")] + [const(a, "q") for a in extra]
    y = f.add(OPS["moe.experts"].create(ops, {"wq": mode, "wq_group": G if mode == "int4" else 0,
                                             "wq_zp": mode == "int4", "aq": aq})).result
    out = f.add(OPS["moe.combine"].create([y, rw])).result
    f.outputs, f.output_names = [out], ["y"]
    verify_module(m)
    return m
