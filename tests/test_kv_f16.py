"""A half-precision (f16) KV cache (issue 17 item 4; ir/ops/kv.py, codegen/c/runtime/rt_kv.c, compiler/decode.py).

The oracles: the ops' numpy semantics with f16 cache operands (K and V rounded to f16 when appended, read
widened to f32) for the C kernels; the same step in eager torch with an f16 cache for a compiled step (the
same rounding: the f32 tolerance); the model's own f32 forward within the cache rounding's bound.

The rounding's size (u = 2^-11, f16's unit roundoff).  A cached key or value element becomes x (1 + d),
|d| <= u.  A score s_j = scale q.k_j moves by at most E_j = u scale sum_d |q_d k_jd| <= E; each softmax
probability p_j then by a factor within [e^-2E, e^2E], so sum_j |p'_j - p_j| <= e^2E - 1; a value row by
u |v_j|.  An attention output therefore moves by at most

    (e^2E - 1) (1 + u) max|v| + u max|v|                               (bound_attention below)

(tested on the op's semantics with random inputs).  For the whole model the logits move by that error
carried through the layers after it; on the tests' 2-layer Mixtral it measured 2.3e-5 absolute at
max |logit| 0.3 (0.16 u relative): the test allows u max|logit| (6x the measured)."""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from moec.ir import parse_module
from moec.ir.opdef import OPS
from test_decode_attention import _step_module as _attention_step_module

U = 2.0 ** -11  # f16's unit roundoff (round to nearest even: relative error <= 2^-11)
TRICKY = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 2 ** -24 * 1.5, 2 ** -25, 65519.0, 65520.0,
                   -1e6, 3e-8, 0.0, -0.0, 6.1e-5, 1 / 3], np.float32)  # f32 -> f16: ties to even, subnormals, overflow


def _ref(q, kc, vc, kn, vn, pos, scale, window=0):
    op = OPS["moec.kv_step_attention"]
    o = op.__new__(op)
    o.attrs = {"scale": scale, "window": window}
    return op.reference(o, q, kc, vc, kn, vn, np.array([pos], np.int64))[0]


def _step_module(B, Hq, Hkv, D, Dv, M, scale, window=0, cache="f16"):
    return _attention_step_module(B, Hq, Hkv, D, Dv, M, scale, window, cache)


def _inputs(B, Hq, Hkv, S, D, Dv, M, seed=0, fill=None):
    """q, f16 caches (NaN past ``fill``: never read), f32 new keys/values."""
    r = np.random.default_rng(seed)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    kc, vc = f(B, Hkv, M, D).astype(np.float16), f(B, Hkv, M, Dv).astype(np.float16)
    if fill is not None:
        kc[:, :, fill:] = np.nan
        vc[:, :, fill:] = np.nan
    return f(B, Hq, S, D), kc, vc, f(B, Hkv, S, D), f(B, Hkv, S, Dv)


F16_CASES = [  # B, Hq, Hkv, D, Dv, M, window, [(S, pos)]: pos 0 and 1 (context 1), block edges, capacity - 1
    (1, 8, 8, 128, 128, 300, 0, [(1, 0), (1, 1), (1, 63), (1, 64), (1, 299), (2, 137), (5, 295)]),
    (2, 4, 2, 8, 8, 11, 0, [(1, 0), (3, 0), (1, 7), (4, 7), (1, 10)]),     # GQA 2, tiny head, tail blocks
    (1, 6, 1, 21, 13, 90, 0, [(1, 89), (3, 40), (7, 20)]),                # MQA, odd D / Dv (scalar tails)
    (1, 2, 2, 16, 16, 600, 5, [(1, 599), (3, 300)]),                      # a sliding window
    (1, 1, 1, 64, 64, 1100, 0, [(1, 1099), (2, 700)]),                    # one head: positions split over items
]


def _check_cases(tmp_path, **build):
    from moec.driver import build_module
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(F16_CASES):
        art = build_module(_step_module(B, Hq, Hkv, D, Dv, M, 0.3, window), str(tmp_path / f"k{i}"), **build)
        for j, (S, pos) in enumerate(runs):
            xs = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j, fill=pos)
            got = art([*xs, np.array([pos], np.int64)])[0]
            np.testing.assert_allclose(got, _ref(*xs, pos, 0.3, window), rtol=2e-5, atol=2e-5,
                                       err_msg=str((build, i, S, pos)))


def test_step_kernel_f16_cache_matches_reference(tmp_path):
    """moec.kv_step_attention's C kernel reading f16 cache rows (vcvtph2ps in the multi-row dots and the p V
    loop) == the op's semantics (the cache widened): GQA / MQA, odd head sizes, positions 0, 1, block edges
    and capacity - 1, a window, the positions split across work items; the cache past pos is NaN."""
    _check_cases(tmp_path, threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["generic", "avx2"])
def test_step_kernel_f16_other_builds(tmp_path, arch):
    """The same on the AVX2 (F16C, 8 lanes) and generic (scalar widening, 4 lanes) builds."""
    _check_cases(tmp_path, arch=arch, threads=2)


@pytest.mark.slow
def test_step_kernel_f16_is_sanitizer_clean(tmp_path):
    """The f16-cache kernel under ASan + UBSan (the harness's heap buffers: a load of 16 halves past the end of
    the cache would be reported; odd head sizes, splits, windows): no report, the op's values."""
    from moec.driver import build_module
    from moec.targets.cpu_harness import build_harness, run_harness
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(F16_CASES):
        out = str(tmp_path / f"k{i}")
        build_module(_step_module(B, Hq, Hkv, D, Dv, M, 0.3, window), out, threads=2)
        exe = build_harness(out, sanitize=True)
        for j, (S, pos) in enumerate(runs[-2:]):
            xs = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j)
            got = run_harness(exe, out, [*xs, np.array([pos], np.int64)], 1)[0]
            np.testing.assert_allclose(got, _ref(*xs, pos, 0.3, window), rtol=2e-5, atol=2e-5, err_msg=str((i, S, pos)))


def _append_attention_module(M, D, cache="f16"):
    return parse_module(f"""module {{
  func.func @main(%q: tensor<1x4x?x{D}xf32, "T">, %k: tensor<1x2x?x{D}xf32, "T">, %v: tensor<1x2x?x{D}xf32, "T">, %kb: tensor<1x2x{M}x{D}x{cache}>, %vb: tensor<1x2x{M}x{D}x{cache}>, %pos: tensor<1xi64>) -> (tensor<1x4x?x{D}xf32, "T">) attributes {{moec.inputs = ["q", "k", "v", "kb", "vb", "pos"], moec.outputs = ["y"]}} {{
    %a = "moec.kv_append"(%kb, %k, %pos) {{axis = 2 : i64}} : (tensor<1x2x{M}x{D}x{cache}>, tensor<1x2x?x{D}xf32, "T">, tensor<1xi64>) -> tensor<1x2x{M}x{D}x{cache}>
    %b = "moec.kv_append"(%vb, %v, %pos) {{axis = 2 : i64}} : (tensor<1x2x{M}x{D}x{cache}>, tensor<1x2x?x{D}xf32, "T">, tensor<1xi64>) -> tensor<1x2x{M}x{D}x{cache}>
    %y = "moec.kv_attention"(%q, %a, %b, %pos) {{scale = 0.3 : f64, causal = true}} : (tensor<1x4x?x{D}xf32, "T">, tensor<1x2x{M}x{D}x{cache}>, tensor<1x2x{M}x{D}x{cache}>, tensor<1xi64>) -> tensor<1x4x?x{D}xf32, "T">
    func.return %y : tensor<1x4x?x{D}xf32, "T">
  }}
}}""")


@pytest.mark.parametrize("arch", [None, pytest.param("generic", marks=pytest.mark.slow)])
def test_append_rounds_and_attention_reads_f16_buffers(tmp_path, arch):
    """moec.kv_append into f16 buffers: f32 rows rounded to nearest even (the vector conversion and the scalar
    tail bit-equal to numpy's astype, ties, subnormals, overflow to inf included), written in place (the
    caller's buffer, only the new rows); moec.kv_attention over them == its semantics, decode-sized (the decode
    kernel, new keys read from the f16 buffer) and prefill-sized (rows widened, moec.attention) queries, from
    position 0 to the capacity's end."""
    from moec.driver import build_module
    M, D = 40, 21  # (21: 16 vector lanes + a scalar tail per row)
    art = build_module(_append_attention_module(M, D), str(tmp_path / "a"), threads=2,
                       **({"arch": arch} if arch else {}))
    rng = np.random.default_rng(7)
    tricky = TRICKY
    ref = OPS["moec.kv_attention"]
    o = ref.__new__(ref)
    o.attrs = {"scale": 0.3, "causal": True}
    checked = 0
    for p, t in ((0, 1), (0, 9), (1, 1), (9, 3), (12, 4), (16, 7), (30, 6), (M - 1, 1)):
        kb = np.full((1, 2, M, D), np.nan, np.float16)
        vb = np.full((1, 2, M, D), np.nan, np.float16)
        kb[:, :, :p] = rng.standard_normal((1, 2, p, D))
        vb[:, :, :p] = rng.standard_normal((1, 2, p, D))
        k0, v0 = kb.copy(), vb.copy()
        k = rng.standard_normal((1, 2, t, D)).astype(np.float32)
        v = rng.standard_normal((1, 2, t, D)).astype(np.float32)
        if t >= 7:  # (the conversion's edge cases; the other rows check the attention too)
            k.reshape(-1)[:tricky.size] = tricky
        q = rng.standard_normal((1, 4, t, D)).astype(np.float32)
        y = art([q, k, v, kb, vb, np.array([p])])[0]
        with np.errstate(over="ignore"):
            k0[:, :, p:p + t], v0[:, :, p:p + t] = k.astype(np.float16), v.astype(np.float16)
        np.testing.assert_array_equal(kb.view(np.uint16), k0.view(np.uint16))  # rounded as numpy rounds, in place
        np.testing.assert_array_equal(vb.view(np.uint16), v0.view(np.uint16))
        if t < 7:
            want = ref.reference(o, q, k0, v0, np.array([p]))[0]
            np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5, err_msg=str((p, t)))
            checked += 1
    assert checked == 6
    # the op's semantics itself: the rounding when appended
    a = OPS["moec.kv_append"]
    ao = a.__new__(a)
    ao.attrs = {"axis": 2}
    with np.errstate(over="ignore"):
        got = ao.reference(np.zeros((1, 1, 4, tricky.size), np.float16), tricky.reshape(1, 1, 1, -1),
                           np.array([2]))[0]
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got[0, 0, 2], tricky.astype(np.float16))


def bound_attention(q, kc, vc, pos, scale):
    """The derived bound (module doc) on |y(f16 cache) - y(f32 cache)| per query row: [B, Hq, S, 1]."""
    B, Hq, S, D = q.shape
    g = Hq // kc.shape[1]
    k = np.repeat(np.abs(kc[:, :, :pos].astype(np.float64)), g, 1)
    v = np.repeat(np.abs(vc[:, :, :pos].astype(np.float64)), g, 1)
    E = U * scale * np.einsum("bhsd,bhjd->bhsj", np.abs(q.astype(np.float64)), k).max(-1, keepdims=True)
    vmax = v.max(axis=(2, 3))[:, :, None, None]
    return (np.expm1(2 * E) * (1 + U) + U) * vmax


def test_f16_cache_error_within_the_derived_bound():
    """The op's result with the cache rounded to f16 against the f32 cache: within bound_attention, and not
    far below it (the bound is not vacuous: the error is a sizeable fraction of it somewhere)."""
    r = np.random.default_rng(5)
    worst = 0.0
    for B, Hq, Hkv, S, D, M, pos, scale in ((1, 8, 8, 1, 128, 256, 200, 128 ** -0.5), (2, 4, 2, 3, 16, 64, 50, 0.25),
                                            (1, 2, 1, 1, 64, 1100, 1024, 2.0)):
        q = r.standard_normal((B, Hq, S, D)).astype(np.float32)
        kc, vc = (r.standard_normal((B, Hkv, M, D)).astype(np.float32) for _ in "kv")
        kn, vn = (r.standard_normal((B, Hkv, S, D)).astype(np.float32) for _ in "kv")
        y32 = _ref(q, kc, vc, kn, vn, pos, scale).astype(np.float64)
        y16 = _ref(q, kc.astype(np.float16), vc.astype(np.float16), kn, vn, pos, scale).astype(np.float64)
        err = np.abs(y16 - y32).max(-1, keepdims=True)
        bound = bound_attention(q, kc, vc, pos, scale)
        assert (err <= bound + 1e-6).all(), float((err - bound).max())
        worst = max(worst, float((err / bound).max()))
    assert worst > 0.01, worst


# ---- the decode step: KVStep / compile_step / Generator / generate / the CLI -----------------------------------
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from moec import decode  # noqa: E402
from test_generate import _eager_logits, _mixtral  # noqa: E402

PROMPT = [5, 9, 17, 3, 22]
STEPS = 6


@pytest.fixture(scope="module")
def mixtral():
    return _mixtral()


def test_generator_keeps_an_f16_cache_in_place(mixtral):
    """Generator(kv_cache f16): the cache buffers are f16 (half the bytes of f32: fails if it silently stays
    f32), the step gets the same f16 memory every call (no copy per token), the new rows are the step's f32
    keys rounded to nearest even, positions past the context never written."""
    g = decode.cache_geometry(mixtral)
    inner = decode.torch_step(mixtral)
    seen, news = [], []

    def step(*xs):
        seen.append([(x.__array_interface__["data"][0], x.dtype) for x in xs[2:]])
        lg, new = inner(*xs)
        news.append(new)
        return lg, new

    gen = decode.Generator(step, g["layers"], g["kv_heads"], g["head_dim"], 32, dtype="f16")
    L, H, D = g["layers"], g["kv_heads"], g["head_dim"]
    assert gen.k.dtype == np.float16 and gen.k.nbytes == L * 1 * H * 32 * D * 2 == gen.v.nbytes
    k_addr = gen.k.__array_interface__["data"][0]
    gen.generate(PROMPT, 4)
    assert len(seen) == 4 and all(s == seen[0] for s in seen) and seen[0][0] == (k_addr, np.float16)
    np.testing.assert_array_equal(gen.k[:, :, :, :len(PROMPT)], news[0][:, 0].astype(np.float16))
    np.testing.assert_array_equal(gen.v[:, :, :, len(PROMPT)], news[1][:, 1, :, :, 0].astype(np.float16))
    used = len(PROMPT) + 3
    assert not gen.k[:, :, :, used:].any() and not gen.v[:, :, :, used:].any()
    with pytest.raises(decode.UserInputError, match="kv_cache='bf16'"):
        decode.Generator(step, 1, 1, 1, 4, dtype="bf16")


def test_moec_f16_step_default_matches_f16_eager_and_model(mixtral, moec_module_cache):
    """``moec.generate`` on the C target keeps an f16 cache by default: the compiled step's cache inputs are
    f16, each read in place by its layer's moec.kv_step_attention alone (no widened copy); logits equal the
    same step in eager torch with an f16 cache (the same rounding) at the f32 tolerance, and the model's own
    f32 forward within the derived tolerance u max|logit|; tokens equal transformers' generate."""
    import moec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = moec.generate(mixtral, PROMPT, STEPS, keep_logits=True)
        cm = decode.compile_step(mixtral, len(PROMPT) + STEPS)  # (a cache hit: generate's build)
        rt = decode.generate(mixtral, PROMPT, STEPS, engine="torch", kv_cache="f16", keep_logits=True)
    assert cm.stats.cache_hit and cm.stats.report["kv_cache"] == "f16" and r.kv_cache == "f16"
    assert rt.kv_cache == "f16"
    assert decode.artifact_kv_cache(cm.artifact.manifest) == "f16"
    ins = {i["name"]: i["type"] for i in cm.artifact.manifest["inputs"]}
    assert ins["k_0"] == "tensor<1x2x11x8xf16>" and ins["v_1"] == "tensor<1x2x11x8xf16>"
    text = open(os.path.join(cm.stats.outdir, "model.mlir")).read().split("\n", 2)[2]
    for name in ins:
        if name[0] in "kv":
            users = re.findall(r'(%[\w.]+)\s*=\s*"([\w.]+)"\([^)]*%' + name + r'\b', text)
            assert [op for _, op in users] == ["moec.kv_step_attention"], (name, users)
    seq = list(PROMPT) + [int(t) for t in r.tokens[0]]
    full = _eager_logits(mixtral, seq[:-1])[0]
    tol = U * float(np.abs(full).max())
    for s, (a, b) in enumerate(zip(r.logits, rt.logits)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        want = full[:len(PROMPT)] if s == 0 else full[len(PROMPT) + s - 1]
        np.testing.assert_allclose(a[0] if s == 0 else a[0, 0], want, atol=tol, rtol=0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = mixtral.generate(torch.tensor([PROMPT]), max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
    assert r.tokens[0].tolist() == hf[0, len(PROMPT):].tolist()


def test_kv_cache_choice_is_validated(tmp_path, capsys, mixtral):
    """An unknown cache type from the API or the CLI: one line, exit 2; an explicit type an ONNX step does not
    keep is refused; the torch engine defaults to the model's f32."""
    from moec.cli import main as cli_main
    for bad in ("f8", "F16", "float16; rm -rf /", ""):
        with pytest.raises(decode.UserInputError, match="kv_cache="):
            decode.generate(mixtral, PROMPT, 2, engine="torch", kv_cache=bad)
    assert decode.default_kv_cache("torch") == "f32" and decode.default_kv_cache("moec", "reference") == "f32"
    assert decode.default_kv_cache("onnxruntime", "cpu") == "f32" and decode.default_kv_cache("moec", "triton") == "f16"
    # (an untrusted capacity: sizes in Python integers, a cache larger than the machine refused before any compile)
    for max_len, msg in ((10 ** 15, "GiB, more than this machine"), (0, "at least one position")):
        with pytest.raises(decode.UserInputError, match=msg):
            decode.generate(mixtral, PROMPT, 2, max_len=max_len)
    assert decode.check_cache_size(2, 8, 128, 1056, 1, "f16") == 2 * 2 * 8 * 128 * 1056 * 2
    with pytest.raises(decode.UserInputError, match="GiB"):
        decode.Generator(lambda *xs: None, 2, 8, 128, 2 ** 40, 1, "f16")
    path = decode.export_onnx(mixtral, str(tmp_path / "step.onnx"), 12, dynamo=False)
    assert decode.onnx_geometry(path)["kv_cache"] == "f32"
    rc = cli_main(["generate", path, "--prompt-ids", "1,2", "--steps", "2", "--kv-cache", "f8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "kv_cache='f8'" in err[0]
    rc = cli_main(["generate", path, "--prompt-ids", "1,2", "--steps", "2", "--engine", "onnxruntime",
                   "--kv-cache", "f16"])
    assert rc == 2 and "the ONNX step's cache inputs are f32" in capsys.readouterr().err


@pytest.mark.slow
def test_f16_onnx_step_on_onnxruntime_and_moec(tmp_path, mixtral, moec_module_cache):
    """export_onnx(kv_cache="f16"): f16 cache inputs; onnxruntime and moec run it with an f16 Generator (the
    type read from the file) and agree with the eager f16 step."""
    path = decode.export_onnx(mixtral, str(tmp_path / "step16.onnx"), 16, kv_cache="f16")
    assert decode.onnx_geometry(path)["kv_cache"] == "f16"
    want = decode.generate(mixtral, PROMPT, STEPS, engine="torch", kv_cache="f16", max_len=16, keep_logits=True)
    for engine in ("onnxruntime", "moec"):
        r = decode.generate(path, PROMPT, STEPS, engine=engine, keep_logits=True)
        for a, b in zip(r.logits, want.logits):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert r.tokens.tolist() == want.tokens.tolist(), engine


def test_past_key_values_export_with_an_f16_cache_in_place(tmp_path, mixtral):
    """A transformers past_key_values export built in place with ``kv_cache="f16"`` (kv-cache-inplace's
    cache_dtype): the buffers are f16 arguments (half the bytes), the artifact's kv_append writes only the new
    rows into them (rows past the context keep their sentinel), at the same addresses every step; logits equal
    the model's f32 forward within u max|logit|, tokens equal transformers' generate; the copying (not
    in-place) loop refuses an f16 cache, the API's default picks the in-place build for it."""
    pytest.importorskip("onnxruntime")
    path = decode.export_hf_kv(mixtral, str(tmp_path / "m.onnx"), dynamo=False)
    b = decode.kv_binding(path)
    art, mod = decode.compile_past_kv_inplace(path, b, 16, kv_cache="f16")
    past = b["pairs"][0][1]
    t = mod.main.args[mod.main.arg_names.index(past)].type
    assert t.dtype.np == np.float16 and t.shape[2] == 16
    gen = decode.InplaceKVGenerator(art, b, 16, 1, threads=2, dtype=np.float16)
    assert all(buf.dtype == np.float16 and buf.nbytes == buf.size * 2 for buf in gen.buffers.values())
    for buf in gen.buffers.values():
        buf[...] = 7.0  # (rows past the context: never written)
    addr = {p: buf.ctypes.data for p, buf in gen.buffers.items()}
    seq, feed = list(PROMPT), np.array([PROMPT])
    for step in range(STEPS):
        p0, n = gen.pos, feed.shape[1]
        logits = gen(feed)
        want = _eager_logits(mixtral, seq)[0]
        np.testing.assert_allclose(logits[0], want[p0:p0 + n], atol=U * float(np.abs(want).max()), rtol=0)
        for p, buf in gen.buffers.items():
            assert buf.ctypes.data == addr[p] and (buf[:, :, p0 + n:] == 7.0).all()
            assert not (buf[:, :, :p0 + n] == 7.0).all()
        seq.append(int(logits[0, -1].argmax()))
        feed = np.array([[seq[-1]]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = mixtral.generate(torch.tensor([PROMPT]), max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
    assert seq[len(PROMPT):] == hf[0, len(PROMPT):].tolist()
    with pytest.raises(decode.UserInputError, match="keeps its f32 cache"):
        decode.generate(path, PROMPT, 2, kv_inplace=False, kv_cache="f16")
    r = decode.generate(path, PROMPT, 3, kv_cache="f16", max_len=12)  # (the API: in place, f16)
    assert r.tokens[0].tolist() == hf[0, len(PROMPT):len(PROMPT) + 3].tolist()


def test_cli_generate_checkpoint_keeps_an_f16_cache(tmp_path, capsys, mixtral, moec_module_cache):
    """`moec generate CHECKPOINT`: the moec step with its default f16 cache (printed), the tokens of
    transformers' generate; `--kv-cache f32` the exact path, printed as such."""
    from moec.cli import main as cli_main
    ckpt = tmp_path / "ckpt"
    mixtral.save_pretrained(ckpt)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = mixtral.generate(torch.tensor([PROMPT]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    for flag, kv in (([], "f16"), (["--kv-cache", "f32"], "f32")):
        rc = cli_main(["generate", str(ckpt), "--prompt-ids", ",".join(map(str, PROMPT)), "--steps", "4", *flag])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert [int(t) for t in out.splitlines()[0].split(":")[1].split(",")] == hf[0, len(PROMPT):].tolist()
        assert f"kv cache: {kv}" in out
