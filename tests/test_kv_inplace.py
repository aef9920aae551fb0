"""A transformers past_key_values export's cache kept in place (issue 17 item 4): the kv-cache-inplace pass
(passes/kv_cache_inplace.py) turns each present = Concat(past, new) into ``moec.kv_append`` into a buffer of
fixed capacity the caller allocates once, and the attention reading it into ``moec.kv_attention`` over
the valid rows (ir/ops/kv.py; C kernels in codegen/c/runtime/rt_kv.c).

Checked here: the IR after the pass has no Concat of a cache and returns no presents; each step writes only
the new rows of the buffers (every other byte unchanged, the buffers' addresses unchanged); logits equal
the model's eager forward step by step and the tokens equal ``model.generate``; the ops' C kernels equal
their numpy references.  Default run: a 2-layer Mixtral through the TorchScript exporter; ``-m slow``: the
dynamo exporter."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

import hf_survey as survey  # noqa: E402
from moec import decode  # noqa: E402
from moec.ir import print_module  # noqa: E402

PROMPT = [5, 9, 17, 3, 22]
STEPS = 6


def _model(arch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return survey.build_model(arch)


def _eager(model, seq):
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq]), use_cache=False).logits.numpy()[0]


def _run(model, path, max_len=16):
    """Prefill then greedy steps through InplaceKVGenerator, checking each step's writes and logits."""
    b = decode.kv_binding(path)
    art, mod = decode.compile_past_kv_inplace(path, b, max_len)
    txt = print_module(mod)
    f = mod.main
    # no Concat of a cache: every past argument is read by kv_append (and nothing reads it through a concat)
    pasts = {p for _, p, _ in b["pairs"]}
    for o in f.ops:
        if o.name == "moec.concat":
            assert not any(v in f.args and f.arg_names[f.args.index(v)] in pasts for v in o.operands), txt
    assert sum(o.name == "moec.kv_append" for o in f.ops) == len(pasts)
    assert sum(o.name == "moec.kv_attention" for o in f.ops) == b["layers"]
    assert f.output_names == [b["logits"]] and "pos" in f.arg_names
    gen = decode.InplaceKVGenerator(art, b, max_len, 1, threads=2)
    for buf in gen.buffers.values():
        buf[...] = 7.0  # rows beyond the context: a sentinel the steps must not touch (masked, never read)
    addr = {p: buf.ctypes.data for p, buf in gen.buffers.items()}
    seq = list(PROMPT)
    feed = np.array([PROMPT])
    toks = []
    for step in range(STEPS):
        before = {p: buf.copy() for p, buf in gen.buffers.items()}
        p0, t = gen.pos, feed.shape[1]
        logits = gen(feed)
        want = _eager(model, seq)
        np.testing.assert_allclose(logits[0], want[p0:p0 + t], atol=1e-5, rtol=0, err_msg=f"step {step}")
        for p, buf in gen.buffers.items():
            assert buf.ctypes.data == addr[p]
            changed = np.nonzero((buf != before[p]).any(axis=(0, 1, 3)))[0]
            assert changed.min() >= p0 and changed.max() < p0 + t, (step, p, changed)  # only the new rows
            np.testing.assert_array_equal(buf[:, :, p0 + t:], before[p][:, :, p0 + t:])
        nxt = int(logits[0, -1].argmax())
        toks.append(nxt)
        seq.append(nxt)
        feed = np.array([[nxt]])
    return toks


def _hf_tokens(model, prompt, steps):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_torchscript_export_in_place(tmp_path):
    model = _model("mixtral")
    path = decode.export_hf_kv(model, str(tmp_path / "m.onnx"), dynamo=False)
    assert _run(model, path) == _hf_tokens(model, PROMPT, STEPS)
    r = decode.generate(path, PROMPT, 4, kv_inplace=True, max_len=12)  # the API's in-place path
    assert r.tokens[0].tolist() == _hf_tokens(model, PROMPT, 4)


@pytest.mark.slow
def test_dynamo_export_in_place(tmp_path):
    model = _model("mixtral")
    path = decode.export_hf_kv(model, str(tmp_path / "m.onnx"), dynamo=True)
    assert _run(model, path) == _hf_tokens(model, PROMPT, STEPS)


def test_kv_ops_c_kernels_equal_references():
    """moec.kv_append writes in place (the caller's buffer) and moec.kv_attention equals moec.attention on
    the valid rows, with a mask and causal, through the C target."""
    from moec.ir import parse_module
    from moec.targets import backend as target_backend
    import tempfile
    import os
    src = """module {
  func.func @main(%q: tensor<1x4x?x8xf32, "T">, %k: tensor<1x2x?x8xf32, "T">, %v: tensor<1x2x?x8xf32, "T">, %kb: tensor<1x2x10x8xf32>, %vb: tensor<1x2x10x8xf32>, %pos: tensor<1xi64>, %mask: tensor<1x1x?x?xf32>) -> (tensor<1x4x?x8xf32, "T">) attributes {moec.inputs = ["q", "k", "v", "kb", "vb", "pos", "mask"], moec.outputs = ["y"]} {
    %a = "moec.kv_append"(%kb, %k, %pos) {axis = 2 : i64} : (tensor<1x2x10x8xf32>, tensor<1x2x?x8xf32, "T">, tensor<1xi64>) -> tensor<1x2x10x8xf32>
    %b = "moec.kv_append"(%vb, %v, %pos) {axis = 2 : i64} : (tensor<1x2x10x8xf32>, tensor<1x2x?x8xf32, "T">, tensor<1xi64>) -> tensor<1x2x10x8xf32>
    %y = "moec.kv_attention"(%q, %a, %b, %pos, %mask) {scale = 0.3 : f64, causal = true} : (tensor<1x4x?x8xf32, "T">, tensor<1x2x10x8xf32>, tensor<1x2x10x8xf32>, tensor<1xi64>, tensor<1x1x?x?xf32>) -> tensor<1x4x?x8xf32, "T">
    func.return %y : tensor<1x4x?x8xf32, "T">
  }
}"""
    from moec.driver import CompileOptions, compile_module
    m = parse_module(src)
    d = os.path.join(tempfile.mkdtemp(), "a")
    compile_module(m, "kv", d, CompileOptions(verify=False))
    art = target_backend("cpu").load(d)
    rng = np.random.default_rng(1)
    from moec.ir.opdef import OPS
    att = OPS["moec.attention"]
    ref = att.__new__(att)
    ref.attrs = {"scale": 0.3, "causal": True}
    for p, t in ((0, 3), (3, 1), (4, 6)):
        kb = rng.standard_normal((1, 2, 10, 8)).astype(np.float32)
        vb = rng.standard_normal((1, 2, 10, 8)).astype(np.float32)
        k0, v0 = kb.copy(), vb.copy()
        q = rng.standard_normal((1, 4, t, 8)).astype(np.float32)
        k = rng.standard_normal((1, 2, t, 8)).astype(np.float32)
        v = rng.standard_normal((1, 2, t, 8)).astype(np.float32)
        mask = np.where(rng.random((1, 1, t, p + t)) < 0.2, -np.inf, 0.0).astype(np.float32)
        mask[..., 0] = 0.0
        y = art([q, k, v, kb, vb, np.array([p]), mask])[0]
        k0[:, :, p:p + t], v0[:, :, p:p + t] = k, v
        np.testing.assert_array_equal(kb, k0)  # written in place: the new rows, nothing else
        np.testing.assert_array_equal(vb, v0)
        want = ref.reference(q, k0[:, :, :p + t], v0[:, :, :p + t], mask)[0]
        np.testing.assert_allclose(y, want, atol=2e-6, rtol=0)
        got_ref = OPS["moec.kv_attention"].reference(ref, q, k0, v0, np.array([p]), mask)[0]
        np.testing.assert_allclose(got_ref, want, atol=0, rtol=0)


def test_kv_attention_reads_only_the_filled_rows(tmp_path):
    """moec.kv_attention's C kernel reads the first L = pos + S rows of the buffers only (a step costs O(L),
    not O(capacity)): every row past L is NaN, and the output stays finite and equal to attention over the
    valid rows; prefill-sized (S >= 4: keys packed), decode-sized (S < 4) and GQA, with and without a mask."""
    from moec.driver import CompileOptions, compile_module
    from moec.ir import parse_module
    from moec.ir.opdef import OPS
    from moec.targets import backend as target_backend
    M, D = 40, 16

    def build(masked):
        mt = ', %mask: tensor<1x1x?x?xf32>' if masked else ""
        mo = ", %mask" if masked else ""
        mty = ", tensor<1x1x?x?xf32>" if masked else ""
        src = f"""module {{
  func.func @main(%q: tensor<1x4x?x{D}xf32, "S">, %kb: tensor<1x2x{M}x{D}xf32>, %vb: tensor<1x2x{M}x{D}xf32>, %pos: tensor<1xi64>{mt}) -> (tensor<1x4x?x{D}xf32, "S">) attributes {{moec.inputs = ["q", "kb", "vb", "pos"{', "mask"' if masked else ""}], moec.outputs = ["y"]}} {{
    %y = "moec.kv_attention"(%q, %kb, %vb, %pos{mo}) {{scale = 0.25 : f64, causal = true}} : (tensor<1x4x?x{D}xf32, "S">, tensor<1x2x{M}x{D}xf32>, tensor<1x2x{M}x{D}xf32>, tensor<1xi64>{mty}) -> tensor<1x4x?x{D}xf32, "S">
    func.return %y : tensor<1x4x?x{D}xf32, "S">
  }}
}}"""
        d = str(tmp_path / f"a{int(masked)}")
        compile_module(parse_module(src), "kvnan", d, CompileOptions(verify=False))
        return target_backend("cpu").load(d)

    att = OPS["moec.attention"]
    ref = att.__new__(att)
    ref.attrs = {"scale": 0.25, "causal": True}
    rng = np.random.default_rng(3)
    for masked in (False, True):
        art = build(masked)
        for p, s in ((0, 1), (5, 1), (0, 9), (7, 6), (30, 2), (M - 3, 3), (20, 20)):
            L = p + s
            kb = np.full((1, 2, M, D), np.nan, np.float32)
            vb = np.full((1, 2, M, D), np.nan, np.float32)
            kb[:, :, :L] = rng.standard_normal((1, 2, L, D))
            vb[:, :, :L] = rng.standard_normal((1, 2, L, D))
            q = rng.standard_normal((1, 4, s, D)).astype(np.float32)
            feed = [q, kb, vb, np.array([p])]
            mask = None
            if masked:
                mask = np.where(rng.random((1, 1, s, L)) < 0.3, -np.inf, 0.0).astype(np.float32)
                mask[..., 0] = 0.0
                feed.append(mask)
            y = art(feed)[0]
            assert np.isfinite(y).all(), (masked, p, s)
            want = ref.reference(q, kb[:, :, :L], vb[:, :, :L], mask)[0]
            np.testing.assert_allclose(y, want, atol=2e-6, rtol=0, err_msg=f"masked={masked} pos={p} S={s}")
