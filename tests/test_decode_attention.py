"""The decode step's attention as one fused op (issue 17 items 2 and 4): ``moec.kv_step_attention``
(ir/ops/kv.py), recognised by passes/recognize_decoder.py in compiler/decode.py's KVStep (its split
softmax over a cache read in place and the new keys), and its C kernel (codegen/c/runtime/rt_kv.c).

The oracle: torch's scaled_dot_product_attention over the concatenated keys for the op's semantics;
the op's semantics for the kernel; the graph itself (evaluated) for the recognition, whose near misses
(another mask position, no max subtraction, another scale, an unrelated two-part softmax) stay as they
are; the model's eager logits for a compiled step."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from moec.ir import parse_module, verify_module
from moec.ir.interpreter import run as ir_run
from moec.ir.opdef import OPS


# ---- the op's semantics --------------------------------------------------------------------------------
def _ref(q, kc, vc, kn, vn, pos, scale, window=0):
    op = OPS["moec.kv_step_attention"]
    o = op.__new__(op)
    o.attrs = {"scale": scale, "window": window}
    return op.reference(o, q, kc, vc, kn, vn, np.array([pos], np.int64))[0]


def _inputs(B, Hq, Hkv, S, D, Dv, M, seed=0, fill=None):
    r = np.random.default_rng(seed)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    kc, vc = f(B, Hkv, M, D), f(B, Hkv, M, Dv)
    if fill is not None:  # (positions past the context hold anything: they must not be read)
        kc[:, :, fill:] = np.nan
        vc[:, :, fill:] = np.nan
    return f(B, Hq, S, D), kc, vc, f(B, Hkv, S, D), f(B, Hkv, S, Dv)


@pytest.mark.parametrize("window", [0, 4])
def test_reference_matches_torch_sdpa(window):
    """The op == torch's SDPA over [cache rows < pos ; new keys] with GQA (kv heads repeated) and the
    causal (and sliding-window) mask of query rows at positions pos .. pos + S - 1."""
    torch = pytest.importorskip("torch")
    B, Hq, Hkv, S, D, Dv, M, pos = 2, 6, 2, 3, 8, 5, 12, 7
    q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=3)
    got = _ref(q, kc, vc, kn, vn, pos, 0.4, window)
    K = np.concatenate([kc[:, :, :pos], kn], 2)
    V = np.concatenate([vc[:, :, :pos], vn], 2)
    K, V = (torch.from_numpy(x).double().repeat_interleave(Hq // Hkv, dim=1) for x in (K, V))
    qp = pos + torch.arange(S)[:, None]
    kp = torch.arange(pos + S)[None, :]
    seen = (kp <= qp) & ((qp - kp < window) if window else True)
    want = torch.nn.functional.scaled_dot_product_attention(torch.from_numpy(q).double(), K, V, attn_mask=seen,
                                                            scale=0.4)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


# ---- the C kernel ----------------------------------------------------------------------------------------
def _step_module(B, Hq, Hkv, D, Dv, M, scale, window=0, cache="f32"):
    """one moec.kv_step_attention; the caches' element type ``cache`` (f32 / f16)"""
    ts = [f"tensor<{B}x{Hq}x?x{D}xf32>", f"tensor<{B}x{Hkv}x{M}x{D}x{cache}>", f"tensor<{B}x{Hkv}x{M}x{Dv}x{cache}>",
          f"tensor<{B}x{Hkv}x?x{D}xf32>", f"tensor<{B}x{Hkv}x?x{Dv}xf32>", "tensor<1xi64>"]
    names = ["q", "kc", "vc", "kn", "vn", "pos"]
    out = f"tensor<{B}x{Hq}x?x{Dv}xf32>"
    args = ", ".join(f"%{n}: {t}" for n, t in zip(names, ts))
    return parse_module(f"""module {{
  func.func @main({args}) -> ({out}) attributes {{moec.inputs = [{", ".join(f'"{n}"' for n in names)}], moec.outputs = ["y"]}} {{
    %y = "moec.kv_step_attention"({", ".join("%" + n for n in names)}) {{scale = {scale!r} : f64, window = {window} : i64}} : ({", ".join(ts)}) -> {out}
    func.return %y : {out}
  }}
}}
""")


KERNEL_CASES = [  # B, Hq, Hkv, D, Dv, M, window, [(S, pos)]
    (1, 8, 8, 128, 128, 300, 0, [(1, 0), (1, 1), (1, 63), (1, 64), (1, 200), (1, 299), (2, 137), (5, 295)]),
    (2, 4, 2, 8, 8, 11, 0, [(1, 0), (3, 0), (1, 7), (4, 7), (1, 10)]),       # GQA 2, tiny head, tail blocks
    (1, 6, 1, 20, 12, 90, 0, [(1, 89), (3, 40), (7, 20)]),                  # MQA 6 rows: two row groups, D % 16
    (1, 2, 2, 16, 16, 600, 5, [(1, 599), (3, 300), (6, 2)]),                # a sliding window
    (1, 1, 1, 64, 64, 2000, 0, [(1, 1999), (2, 1500), (1, 513)]),           # one head: positions split over items
    (1, 2, 1, 32, 32, 1100, 0, [(70, 1000), (70, 0)]),                      # a prefill chunk after a cache
]


@pytest.mark.parametrize("threads", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_kernel_matches_reference(tmp_path, threads):
    """The C kernel == the op's semantics: decode rows (S = 1) and a few rows, GQA/MQA, positions 0, at
    block edges and at the capacity's end (the last block copied), head sizes off the vector width, a
    window, one kv head with the positions split across work items; the cache past pos is NaN (never read)."""
    from moec.driver import build_module
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(KERNEL_CASES):
        m = _step_module(B, Hq, Hkv, D, Dv, M, 0.3, window)
        art = build_module(m, str(tmp_path / f"k{i}"), threads=threads)
        for j, (S, pos) in enumerate(runs):
            q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j, fill=pos)
            got = art([q, kc, vc, kn, vn, np.array([pos], np.int64)])[0]
            want = _ref(q, kc, vc, kn, vn, pos, 0.3, window)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=str((i, S, pos)))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["generic", "avx2"])
def test_kernel_other_vector_widths(tmp_path, arch):
    """The kernel built for 16- and 32-byte vectors (blocks of 16 / 32 positions) == the op's semantics."""
    from moec.driver import build_module
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(KERNEL_CASES):
        art = build_module(_step_module(B, Hq, Hkv, D, Dv, M, 0.3, window), str(tmp_path / f"k{i}"), arch=arch,
                           threads=2)
        for j, (S, pos) in enumerate(runs):
            q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j, fill=pos)
            got = art([q, kc, vc, kn, vn, np.array([pos], np.int64)])[0]
            np.testing.assert_allclose(got, _ref(q, kc, vc, kn, vn, pos, 0.3, window), rtol=2e-5, atol=2e-5,
                                       err_msg=str((arch, i, S, pos)))


@pytest.mark.slow
def test_kernel_is_sanitizer_clean(tmp_path):
    """The kernel under ASan + UBSan (the last block copied at the capacity's end, splits, windows, row
    groups): no report, the op's values."""
    from moec.driver import build_module
    from moec.targets.cpu_harness import build_harness, run_harness
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(KERNEL_CASES):
        out = str(tmp_path / f"k{i}")
        build_module(_step_module(B, Hq, Hkv, D, Dv, M, 0.3, window), out, threads=2)
        exe = build_harness(out, sanitize=True)
        for j, (S, pos) in enumerate(runs[-2:]):
            q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j)
            got = run_harness(exe, out, [q, kc, vc, kn, vn, np.array([pos], np.int64)], 1)[0]
            np.testing.assert_allclose(got, _ref(q, kc, vc, kn, vn, pos, 0.3, window), rtol=2e-5, atol=2e-5,
                                       err_msg=str((i, S, pos)))


# ---- recognition: the split softmax of compiler/decode.py's step, and near misses ---------------------------
def _split_attention(q, kc, vc, k, v, pos, scale, variant="", window=0):
    """compiler/decode.py's ``_attention`` math on plain tensors (q [B,Hq,T,D], caches [B,Hkv,M,D] both,
    new keys/values [B,Hkv,T,D]), with the near misses the recognition must leave alone."""
    import torch
    b, hq, t, d = q.shape
    hkv, m = k.shape[1], kc.shape[2]
    g = hq // hkv
    qg = q.reshape(b, hkv, g * t, d)
    kt = kc.reshape(b * hkv, d, m) if variant == "kt" else kc.reshape(b * hkv, m, d).transpose(1, 2)
    s_past = torch.bmm(qg.reshape(b * hkv, g * t, d), kt).reshape(b, hkv, g, t, m) * scale
    s_new = torch.matmul(qg, k.transpose(2, 3)).reshape(b, hkv, g, t, t) * (scale * 1.25 if variant == "scale" else scale)
    j = torch.arange(m)
    ok_past = (j.unsqueeze(0) <= pos) if variant == "mask" else (j.unsqueeze(0) < pos)
    i = torch.arange(t)
    ok_new = i.unsqueeze(0) <= i.unsqueeze(1)
    if window:
        qpos = pos + i
        ok_past = ok_past & (qpos.unsqueeze(1) - j.unsqueeze(0) < window)
        ok_new = ok_new & (i.unsqueeze(1) - i.unsqueeze(0) < window)
    low = torch.finfo(s_past.dtype).min
    s_past, s_new = torch.where(ok_past, s_past, low), torch.where(ok_new, s_new, low)
    if variant == "nomax":
        e_past, e_new = torch.exp(s_past), torch.exp(s_new)
    else:
        mx = torch.maximum(s_past.amax(-1, keepdim=True), s_new.amax(-1, keepdim=True))
        e_past, e_new = torch.exp(s_past - mx), torch.exp(s_new - mx)
    if variant == "two":  # two softmaxes, each over its own keys, summed
        p_past, p_new = e_past / e_past.sum(-1, keepdim=True), e_new / e_new.sum(-1, keepdim=True)
    else:
        denom = e_past.sum(-1, keepdim=True) + e_new.sum(-1, keepdim=True)
        p_past, p_new = e_past / denom, e_new / denom
    o_past = torch.bmm(p_past.reshape(b * hkv, g * t, m), vc.reshape(b * hkv, m, d)).reshape(b, hkv, g, t, d)
    o_new = torch.matmul(p_new, v.unsqueeze(2))
    out = o_new + o_past if variant == "swap" else o_past + o_new
    return out.reshape(b, hq, t, d)


def _split_module(variant="", window=0, scale=0.35):
    torch = pytest.importorskip("torch")
    from moec.frontend.torch_import import import_torch

    class Att(torch.nn.Module):
        def forward(self, q, kc, vc, k, v, pos):
            return _split_attention(q, kc, vc, k, v, pos, scale, variant, window)

    B, Hq, Hkv, D, M = 1, 4, 2, 8, 12
    ex = (torch.zeros(B, Hq, 3, D), torch.zeros(B, Hkv, M, D), torch.zeros(B, Hkv, M, D), torch.zeros(B, Hkv, 3, D),
          torch.zeros(B, Hkv, 3, D), torch.tensor([2]))
    dims = {0: {2: "T"}, 1: {}, 2: {}, 3: {2: "T"}, 4: {2: "T"}, 5: {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_torch(Att().eval(), ex, dynamic_dims=dims)


def _recognise(m):
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.recognize_decoder import RecognizeDecoder
    changed = RecognizeDecoder(ops=("moec.kv_step_attention",)).run(m)
    DeadCodeElimination().run(m)
    verify_module(m)
    return changed, [o for o in m.main.ops if o.name == "moec.kv_step_attention"]


def _feeds(t, pos, seed=0):
    r = np.random.default_rng(seed)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    return [f(1, 4, t, 8), f(1, 2, 12, 8), f(1, 2, 12, 8), f(1, 2, t, 8), f(1, 2, t, 8), np.array([pos], np.int64)]


@pytest.mark.parametrize("window,variant", [(0, ""), (0, "swap"), pytest.param(3, "", marks=pytest.mark.slow)])
def test_split_softmax_recognised(window, variant):
    """The step's attention (with and without a sliding window; the sum's parts in either order: both
    parts' keys are transposed views, the cache's is the one the position reaches) becomes one
    moec.kv_step_attention with the scale and window read from the graph, no softmax pieces left, and
    equal values at other sizes and positions."""
    m0, m = _split_module(variant, window=window), _split_module(variant, window=window)
    changed, ops = _recognise(m)
    assert changed and len(ops) == 1, [o.name for o in m.main.ops]
    assert ops[0].attrs["window"] == window and abs(ops[0].attrs["scale"] - 0.35) < 1e-7
    assert not [o for o in m.main.ops if o.name in ("moec.exp", "moec.matmul", "moec.reduce_sum")]
    for t, pos in ((1, 0), (1, 11), (2, 5), (4, 8)):
        xs = _feeds(t, pos, seed=t + pos)
        want = list(ir_run(m0, xs).values())[0]
        got = list(ir_run(m, xs).values())[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["mask", "nomax", "kt", pytest.param("scale", marks=pytest.mark.slow),
                                     pytest.param("two", marks=pytest.mark.slow)])
def test_near_misses_left_alone(variant):
    """Not the step's attention: the cache's mask one position off (j <= pos), exp without the max
    subtraction (the same value until the scores overflow), the new keys scaled otherwise than the cache's,
    two softmaxes each over its own keys, the cache's keys read as if stored transposed ([D, M] per head:
    the old layout, not the op's rows): no op is formed, the graph is unchanged."""
    from moec.passes.dce import DeadCodeElimination
    m = _split_module(variant)
    DeadCodeElimination().run(m)
    n = len(m.main.ops)
    changed, ops = _recognise(m)
    assert not changed and not ops and len(m.main.ops) == n


# ---- moec.kv_attention (the past_key_values path) through the same decode kernel ---------------------------
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True), (False, False)])
def test_kv_attention_decode_rows_match_reference(tmp_path, causal, masked):
    """moec.kv_attention with 1-4 query rows (the decode kernel: rows of the buffers in place, the newest S
    rows as the new keys) == the op's semantics: GQA, causal or not, a per-head additive mask with -inf
    entries, positions 0 .. capacity - S, rows past pos + S NaN (never read), 1 and 2 threads."""
    from moec.driver import build_module
    B, Hq, Hkv, M, D = 2, 6, 2, 700, 32
    mt = f", %mask: tensor<{B}x{Hq}x?x?xf32>" if masked else ""
    src = f"""module {{
  func.func @main(%q: tensor<{B}x{Hq}x?x{D}xf32>, %k: tensor<{B}x{Hkv}x{M}x{D}xf32>, %v: tensor<{B}x{Hkv}x{M}x{D}xf32>, %pos: tensor<1xi64>{mt}) -> (tensor<{B}x{Hq}x?x{D}xf32>) attributes {{moec.inputs = ["q", "k", "v", "pos"{', "mask"' if masked else ""}], moec.outputs = ["y"]}} {{
    %y = "moec.kv_attention"(%q, %k, %v, %pos{", %mask" if masked else ""}) {{scale = 0.2 : f64, causal = {str(causal).lower()}}} : (tensor<{B}x{Hq}x?x{D}xf32>, tensor<{B}x{Hkv}x{M}x{D}xf32>, tensor<{B}x{Hkv}x{M}x{D}xf32>, tensor<1xi64>{f", tensor<{B}x{Hq}x?x?xf32>" if masked else ""}) -> tensor<{B}x{Hq}x?x{D}xf32>
    func.return %y : tensor<{B}x{Hq}x?x{D}xf32>
  }}
}}"""
    m = parse_module(src)
    ref = OPS["moec.kv_attention"]
    r = np.random.default_rng(int(causal) * 2 + int(masked))
    for th in (1, 2):
        art = build_module(m, str(tmp_path / f"t{th}"), threads=th)
        for S, pos in ((1, 0), (1, 1), (2, 63), (4, 300), (1, 600), (3, M - 3)):
            L = pos + S
            k = np.full((B, Hkv, M, D), np.nan, np.float32)
            v = np.full((B, Hkv, M, D), np.nan, np.float32)
            k[:, :, :L] = r.standard_normal((B, Hkv, L, D))
            v[:, :, :L] = r.standard_normal((B, Hkv, L, D))
            xs = [r.standard_normal((B, Hq, S, D)).astype(np.float32), k, v, np.array([pos], np.int64)]
            if masked:
                mask = np.where(r.random((B, Hq, S, L)) < 0.3, -np.inf, r.standard_normal((B, Hq, S, L)))
                mask[1, 0] = -np.inf  # (a head whose rows see no key: 0)
                xs.append(mask.astype(np.float32))
            got = art(xs)[0]
            o = ref.__new__(ref)
            o.attrs = {"scale": 0.2, "causal": causal}
            want = ref.reference(o, *xs)[0]
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=str((th, S, pos)))
