"""fuse-shared-linears (passes/fuse_shared_linears.py): linears reading one input run as one linear over the
concatenated weights, the columns split back.  Golden cases: tests/golden/fuse-shared-linears__*.mlir.

Here: every weight format of the C target gives bit-identical results per column with and without the fusion
(the fused weight is quantised as one matrix after the pass: per-column codes and scales are the separate
layers'), at one row (the decode GEMV) and several (prefill), and the pipeline fuses the q/k/v projections of
a real transformers Mixtral's decode step (tests/test_decode_greedy.py runs its tokens against eager)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from moec.driver import build_module
from moec.ir import WeightStore, parse_module, print_module
from moec.passes.pipeline import run_pipeline
from moec.targets import target_for

K, NS = 128, (128, 64, 64)


def _module(bias: bool = False):
    """x [1, T, K] -> three reshapes (as torch.export writes them) -> q/k/v matmuls with weights of the store
    (and a constant bias add each) -> neg (so the linears are not function outputs)."""
    rng = np.random.default_rng(0)
    ws = WeightStore()
    lines, outs, types = [], [], []
    for i, n in enumerate(NS):
        ws.set(f"w{i}", (rng.standard_normal((K, n)) / np.sqrt(K)).astype(np.float32))
        lines += [f'    %w{i} = "moec.constant"() {{value = dense_resource<w{i}> : tensor<{K}x{n}xf32>}} : () -> tensor<{K}x{n}xf32>',
                  f'    %s{i} = "moec.constant"() {{value = dense<[-1, {K}]> : tensor<2xi64>}} : () -> tensor<2xi64>',
                  f'    %x{i} = "moec.reshape"(%h, %s{i}) : (tensor<1x?x{K}xf32, "T">, tensor<2xi64>) -> tensor<?x{K}xf32, "T">',
                  f'    %m{i} = "moec.matmul"(%x{i}, %w{i}) : (tensor<?x{K}xf32, "T">, tensor<{K}x{n}xf32>) -> tensor<?x{n}xf32, "T">']
        last = f"%m{i}"
        if bias:
            ws.set(f"b{i}", rng.standard_normal(n).astype(np.float32))
            lines += [f'    %b{i} = "moec.constant"() {{value = dense_resource<b{i}> : tensor<{n}xf32>}} : () -> tensor<{n}xf32>',
                      f'    %a{i} = "moec.add"(%m{i}, %b{i}) : (tensor<?x{n}xf32, "T">, tensor<{n}xf32>) -> tensor<?x{n}xf32, "T">']
            last = f"%a{i}"
        lines += [f'    %y{i} = "moec.neg"({last}) : (tensor<?x{n}xf32, "T">) -> tensor<?x{n}xf32, "T">']
        outs.append(f"%y{i}")
        types.append(f'tensor<?x{n}xf32, "T">')
    names = ", ".join(f'"y{i}"' for i in range(len(NS)))
    text = (f'module {{\n  func.func @main(%h: tensor<1x?x{K}xf32, "T">) -> ({", ".join(types)}) attributes '
            f'{{moec.inputs = ["h"], moec.outputs = [{names}]}} {{\n' + "\n".join(lines) +
            f'\n    func.return {", ".join(outs)} : {", ".join(types)}\n  }}\n}}\n')
    return text, ws


def _build(tmp_path, weights: str, fuse: bool, tag: str, bias: bool = False):
    text, ws = _module(bias)
    m = parse_module(text, ws)
    desc = replace(target_for("cpu"), fuse_shared_linears=fuse)
    run_pipeline(m, desc, weights=weights, group=32)
    printed = print_module(m)
    return build_module(m, str(tmp_path / tag), threads=2), printed


FORMATS = ["f32", "int4", "w8a8"]
SLOW = ["bf16", "int8", "w4a8"]


@pytest.mark.parametrize("weights,bias", [(w, False) for w in FORMATS] + [("f32", True), ("int4", True)] +
                         [pytest.param(w, b, marks=pytest.mark.slow) for w in SLOW for b in (False, True)] +
                         [pytest.param("w8a8", True, marks=pytest.mark.slow)])
def test_fused_linears_bit_identical_per_column(weights, bias, tmp_path):
    fused, text_f = _build(tmp_path, weights, True, "fused", bias)
    plain, text_p = _build(tmp_path, weights, False, "plain", bias)
    op = '"moec.linear_q"' if weights != "f32" else ('"moec.linear"' if bias else '"moec.matmul"')
    assert text_f.count('"moec.split"') == 1 and text_f.count(op) == 1, text_f
    assert text_p.count('"moec.split"') == 0 and text_p.count(op) == 3, text_p
    if bias:  # (the add folded into the linear in both builds)
        assert '"moec.add"' not in text_f and '"moec.add"' not in text_p
    for t in (1, 3, 40):
        h = np.random.default_rng(t).standard_normal((1, t, K)).astype(np.float32)
        a, b = fused([h]), plain([h])
        for x, y in zip(a, b):
            assert x.shape == y.shape and x.tobytes() == y.tobytes(), (weights, t)


def test_decode_step_fuses_qkv(moec_module_cache):
    """The pipeline on a real transformers Mixtral's decode step: one fused q/k/v matmul per layer (two
    splits), the o projection, the router and the output layer left alone."""
    import os
    import warnings
    pytest.importorskip("transformers")
    from moec import decode
    from test_generate import _mixtral
    model = _mixtral()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = decode.compile_step(model, 11, kv_cache="f16", greedy=True)
    text = open(os.path.join(cm.stats.outdir, "model.mlir")).read()
    assert text.count('"moec.split"') == 2 and text.count("dense_resource<fused_") == 2
