"""The f16 KV cache on the Triton and Ascend targets (issue 17 item 4; ir/ops/kv.py's semantics, the C target's
tests in tests/test_kv_f16.py).

Triton (codegen/triton/kernels.py: kv_append_kernel, kv_attention_kernel; under TRITON_INTERPRET=1 here, no GPU):
kv_append rounds f32 rows to f16 (nearest even) into the cache tensor itself, the attention kernels load the f16
rows and widen them in registers.  Ascend (codegen/ascend/kernels/vector_kernels.cpp: vec_kv, on moec's
emulator): half rows in the Unified Buffer, Cast to float for the arithmetic, Cast back with CAST_RINT.

The oracles: the ops' numpy semantics (f16 cache operands widened), the same step in eager torch with an f16
cache (the same rounding: the f32 tolerance), the model's own f32 forward within the derived bound u max|logit|
(tests/test_kv_f16.py's module doc), transformers' greedy tokens."""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from moec.ir.opdef import OPS
from test_kv_f16 import F16_CASES, TRICKY, U, _append_attention_module, _inputs, _ref, _step_module

TARGETS = ("triton", "ascend")


def _available(target):
    from moec.targets import backend_class
    why = backend_class(target).why_unavailable()
    if why:
        pytest.skip(why)


def _check_step_cases(tmp_path, target, cases, cache="f16"):
    from moec.driver import build_module
    for i, (B, Hq, Hkv, D, Dv, M, window, runs) in enumerate(cases):
        art = build_module(_step_module(B, Hq, Hkv, D, Dv, M, 0.3, window, cache), str(tmp_path / f"k{i}{cache}"),
                           target=target)
        for j, (S, pos) in enumerate(runs):
            q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, S, D, Dv, M, seed=10 * i + j, fill=pos)
            if cache == "f32":
                kc, vc = kc.astype(np.float32), vc.astype(np.float32)
            got = art([q, kc, vc, kn, vn, np.array([pos], np.int64)])[0]
            np.testing.assert_allclose(got, _ref(q, kc, vc, kn, vn, pos, 0.3, window), rtol=2e-5, atol=2e-5,
                                       err_msg=str((target, cache, i, S, pos)))
        if target == "triton":  # (on the device: no host segment ran the op's reference)
            assert not art.stats, art.stats
        else:  # (vec_kv, one launch per call; nothing on the host)
            st = art.stats()
            assert st["launches"] == {"vec_kv": len(runs)} and not st["host_ops"], st


@pytest.mark.parametrize("target", TARGETS)
def test_step_attention_f16_cache_matches_reference(tmp_path, target):
    """moec.kv_step_attention with f16 caches on the target's kernel == the op's semantics (the cache widened):
    positions 0, 1, block edges, capacity - 1, GQA / MQA, odd head sizes, a window (Ascend; Triton's in the slow
    test); the cache past pos is NaN (never read).  The f32 cache through the same kernel too."""
    _available(target)
    _check_step_cases(tmp_path, target, F16_CASES[1:4] if target == "ascend" else F16_CASES[1:3])  # (the interpreter:
    _check_step_cases(tmp_path, target, F16_CASES[1:2], cache="f32")                              # the window is slow)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_step_attention_f16_cache_all_cases(tmp_path, target):
    """The same over every case of tests/test_kv_f16.py (head size 128, 300 and 1100 positions), f16 and f32."""
    _available(target)
    _check_step_cases(tmp_path, target, F16_CASES)
    _check_step_cases(tmp_path, target, F16_CASES, cache="f32")


def _append_cases(M):
    return ((0, 1), (0, 9), (1, 1), (9, 3), (12, 4), (16, 7), (30, 6), (M - 1, 1))


@pytest.mark.parametrize("target", TARGETS)
def test_append_rounds_in_place_and_attention_reads_f16(tmp_path, target):
    """moec.kv_append into f16 cache buffers rounds f32 rows to nearest even (bit-equal to numpy's astype: ties,
    subnormals, overflow to inf) and writes them into the caller's buffer itself (only rows pos .. pos+T-1; the rest
    keep their NaN sentinel), which stays f16 (2 bytes an element); moec.kv_attention over the buffers (causal, GQA)
    == its semantics; both on the device (no host op).  Triton: torch tensors on the run device (the interpreter's
    CPU: the caller's memory); Ascend: numpy buffers (the plan's inputs are the caller's arrays).  A position whose
    rows do not fit: the op's error."""
    _available(target)
    from moec.driver import build_module
    M, D = 40, 21
    art = build_module(_append_attention_module(M, D), str(tmp_path / "a"), target=target)
    if target == "triton":
        import torch

        def call(xs):
            ts = [torch.from_numpy(x) for x in xs]
            out = art.call_torch(ts)[0].numpy()
            assert ts[3].dtype == torch.float16 and ts[3].element_size() == 2
            return out
    else:
        def call(xs):
            return art(xs)[0]
    rng = np.random.default_rng(7)
    ref = OPS["moec.kv_attention"]
    o = ref.__new__(ref)
    o.attrs = {"scale": 0.3, "causal": True}
    checked = 0
    for p, t in _append_cases(M):
        kb = np.full((1, 2, M, D), np.nan, np.float16)
        vb = np.full((1, 2, M, D), np.nan, np.float16)
        kb[:, :, :p] = rng.standard_normal((1, 2, p, D))
        vb[:, :, :p] = rng.standard_normal((1, 2, p, D))
        k0, v0 = kb.copy(), vb.copy()
        k = rng.standard_normal((1, 2, t, D)).astype(np.float32)
        v = rng.standard_normal((1, 2, t, D)).astype(np.float32)
        if t >= 7:
            k.reshape(-1)[:TRICKY.size] = TRICKY
        q = rng.standard_normal((1, 4, t, D)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the overflowing rows' inf scores)
            y = call([q, k, v, kb, vb, np.array([p])])
        with np.errstate(over="ignore"):
            k0[:, :, p:p + t], v0[:, :, p:p + t] = k.astype(np.float16), v.astype(np.float16)
        np.testing.assert_array_equal(kb.view(np.uint16), k0.view(np.uint16))
        np.testing.assert_array_equal(vb.view(np.uint16), v0.view(np.uint16))
        if t < 7:
            np.testing.assert_allclose(y, ref.reference(o, q, k0, v0, np.array([p]))[0], rtol=2e-5, atol=2e-5,
                                       err_msg=str((p, t)))
            checked += 1
    assert checked == 6
    if target == "triton":
        assert not art.stats and art.launcher.INPLACE == (3, 4)
        kb0 = kb.copy()  # (numpy in: the device copy's new rows come back into the caller's buffer)
        art([q[:, :, :1], k[:, :, :1], v[:, :, :1], kb, vb, np.array([3])])
        assert (kb[:, :, 3] == k[:, :, 0].astype(np.float16)).all() and (np.delete(kb, 3, 2) == np.delete(kb0, 3, 2)).all()
    else:
        st = art.stats()
        assert not st["host_ops"] and st["launches"]["vec_kv"] == 3 * len(_append_cases(M)), st
    z = np.zeros((1, 2, 2, D), np.float32)
    with pytest.raises(Exception, match="do not fit"):
        call([np.zeros((1, 4, 2, D), np.float32), z, z, kb, vb, np.array([M - 1])])


# ---- the decode step on each target: compile_step / generate / the CLI -----------------------------------------
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from moec import decode  # noqa: E402
from test_generate import PROMPT, STEPS, _eager_logits, _hf_tokens, _mixtral  # noqa: E402


@pytest.fixture(scope="module")
def mixtral():
    return _mixtral()


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_f16_decode_step_on_target(tmp_path, capsys, target, mixtral, moec_module_cache):
    """The decode step compiled for the target with its default cache (f16): cache inputs f16, each read only by
    its layer's moec.kv_step_attention (the casts folded: no widened copy); logits equal the eager f16 step at
    the f32 tolerance, the model's f32 forward within u max|logit|, and the f32 cache's logits within the same;
    tokens equal transformers' greedy generate and the f32 cache's."""
    _available(target)
    assert decode.default_kv_cache("moec", target) == "f16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = decode.generate(mixtral, PROMPT, STEPS, target=target, keep_logits=True)
        cm = decode.compile_step(mixtral, len(PROMPT) + STEPS, target=target)  # (a cache hit: generate's build)
        r32 = decode.generate(mixtral, PROMPT, STEPS, target=target, kv_cache="f32", keep_logits=True)
        rt = decode.generate(mixtral, PROMPT, STEPS, engine="torch", kv_cache="f16", keep_logits=True)
    assert r.kv_cache == "f16" and r32.kv_cache == "f32" and cm.stats.report["kv_cache"] == "f16"
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
    for s, (a, b, c) in enumerate(zip(r.logits, rt.logits, r32.logits)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a, c, atol=tol, rtol=0)
        want = full[:len(PROMPT)] if s == 0 else full[len(PROMPT) + s - 1]
        np.testing.assert_allclose(a[0] if s == 0 else a[0, 0], want, atol=tol, rtol=0)
    hf = _hf_tokens(mixtral, PROMPT, STEPS)
    assert r.tokens[0].tolist() == hf == r32.tokens[0].tolist()
    from moec.cli import main as cli_main  # (the command: the target's default cache, printed)
    mixtral.save_pretrained(tmp_path / "ckpt")
    capsys.readouterr()
    rc = cli_main(["generate", str(tmp_path / "ckpt"), "--prompt-ids", ",".join(map(str, PROMPT)), "--steps",
                   str(STEPS), "--target", target])
    out = capsys.readouterr().out
    assert rc == 0 and "kv cache: f16" in out, out
    assert [int(t) for t in out.splitlines()[0].split(":")[1].split(",")] == hf


@pytest.mark.parametrize("target", TARGETS)
def test_cli_bad_kv_cache_on_target(tmp_path, capsys, target, mixtral):
    """`moec generate CHECKPOINT --target T --kv-cache f8`: exit 2, one line naming the value (before any
    compile); the API the same."""
    from moec.cli import main as cli_main
    ckpt = tmp_path / "ckpt"
    mixtral.save_pretrained(ckpt)
    capsys.readouterr()
    rc = cli_main(["generate", str(ckpt), "--prompt-ids", "1,2", "--steps", "2", "--target", target,
                   "--kv-cache", "f8"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "%|" not in ln]  # (transformers' progress bars)
    assert rc == 2 and len(err) == 1 and "kv_cache='f8'" in err[0], err
    with pytest.raises(decode.UserInputError, match="kv_cache='bf16'"):
        decode.generate(mixtral, PROMPT, 2, target=target, kv_cache="bf16")


def test_ascend_cann_project_carries_the_f16_cache(tmp_path):
    """The CANN project emitted for a decode-sized step with an f16 cache: its compile-time launch plan binds the
    cache inputs as f16 buffers (half the bytes) and launches vec_kv with the half cache type in its tiling (cdt 2);
    the kernel source defines vec_kv with the half path, the host launcher dispatches it with 8 GM arguments, and
    plan.json places the op on the NPU with its cost-model estimate; the plan runs (== the op's semantics)."""
    _available("ascend")
    from moec.driver import build_module
    from moec.ir import parse_module
    B, Hq, Hkv, D, M = 1, 4, 2, 16, 64
    ts = [f"tensor<{B}x{Hq}x1x{D}xf32>", f"tensor<{B}x{Hkv}x{M}x{D}xf16>", f"tensor<{B}x{Hkv}x{M}x{D}xf16>",
          f"tensor<{B}x{Hkv}x1x{D}xf32>", f"tensor<{B}x{Hkv}x1x{D}xf32>", "tensor<1xi64>"]
    names = ["q", "kc", "vc", "kn", "vn", "pos"]
    out = f"tensor<{B}x{Hq}x1x{D}xf32>"
    m = parse_module(f"""module {{
  func.func @main({", ".join(f"%{n}: {t}" for n, t in zip(names, ts))}) -> ({out}) attributes {{moec.inputs = [{", ".join(f'"{n}"' for n in names)}], moec.outputs = ["y"]}} {{
    %y = "moec.kv_step_attention"({", ".join("%" + n for n in names)}) {{scale = 0.25 : f64, window = 0 : i64}} : ({", ".join(ts)}) -> {out}
    func.return %y : {out}
  }}
}}""")
    d = tmp_path / "s"
    art = build_module(m, str(d), target="ascend")
    launch = d / "ascend" / "launch"
    assert (launch / "index.txt").read_text().split()[0].startswith("f32:1x4x1x16,f16:1x2x64x16,f16:1x2x64x16,")
    plan = (launch / "plan0.txt").read_text()
    inputs = [ln.split() for ln in plan.splitlines() if ln.startswith("input")]
    assert [x[3] for x in inputs] == ["f32", "f16", "f16", "f32", "f32", "i64"], inputs
    kv = [ln for ln in plan.splitlines() if ln.startswith("launch vec_kv")]
    assert len(kv) == 1, plan
    fields = kv[0].split(" tiling ")[1].split()[2::2]  # (KvTiling's words: kv_ops.FIELDS' order)
    from moec.codegen.ascend.kv_ops import FIELDS
    assert len(fields) == len(FIELDS) and fields[[f for f, _ in FIELDS].index("cdt")] == "2", kv[0]
    src = (d / "ascend" / "kernels" / "vector_kernels.cpp").read_text()
    assert "void vec_kv(" in src and "kv_attn_body<half>" in src
    assert "X(vec_kv, 8)" in (d / "ascend" / "host" / "launch.cpp").read_text()
    import json
    steps = json.loads((d / "ascend" / "plan.json").read_text())["steps"]
    assert steps[0]["where"] == "npu" and steps[0]["kernels"] == ["vec_kv"]
    assert all(e["estimate_us"] > 0 and e["context"] == M for e in steps[0]["estimates"])
    q, kc, vc, kn, vn = _inputs(B, Hq, Hkv, 1, D, D, M, seed=3, fill=40)
    got = art([q, kc, vc, kn, vn, np.array([40], np.int64)])[0]
    np.testing.assert_allclose(got, _ref(q, kc, vc, kn, vn, 40, 0.25), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_kv_attention_with_a_mask_and_an_f32_cache(tmp_path, target):
    """moec.kv_attention with an additive mask over f16 and f32 buffers (what kv-cache-inplace forms from an export's
    mask): == its semantics, a row masked entirely gives 0 (moec.attention's rule); Triton runs it on the device
    (the mask's strides, 0 where broadcast), Ascend keeps it on the host and says why (vec_kv takes no mask)."""
    _available(target)
    from moec.driver import build_module
    from moec.ir import parse_module
    ref = OPS["moec.kv_attention"]
    o = ref.__new__(ref)
    o.attrs = {"scale": 0.5, "causal": False}
    rng = np.random.default_rng(11)
    M, D, S, p = 24, 12, 3, 9
    for cache in ("f16", "f32"):
        ct = f"tensor<1x2x{M}x{D}x{cache}>"
        qt, mt, yt = f"tensor<1x4x{S}x{D}xf32>", f"tensor<1x1x{S}x{p + S}xf32>", f"tensor<1x4x{S}x{D}xf32>"
        m = parse_module(f"""module {{
  func.func @main(%q: {qt}, %k: {ct}, %v: {ct}, %pos: tensor<1xi64>, %mask: {mt}) -> ({yt}) attributes {{moec.inputs = ["q", "k", "v", "pos", "mask"], moec.outputs = ["y"]}} {{
    %y = "moec.kv_attention"(%q, %k, %v, %pos, %mask) {{scale = 0.5 : f64, causal = false}} : ({qt}, {ct}, {ct}, tensor<1xi64>, {mt}) -> {yt}
    func.return %y : {yt}
  }}
}}""")
        art = build_module(m, str(tmp_path / cache), target=target)
        dt = np.float16 if cache == "f16" else np.float32
        q = rng.standard_normal((1, 4, S, D)).astype(np.float32)
        k, v = (rng.standard_normal((1, 2, M, D)).astype(dt) for _ in "kv")
        mask = np.where(rng.random((1, 1, S, p + S)) < 0.3, -np.inf, rng.standard_normal((1, 1, S, p + S))).astype(np.float32)
        mask[0, 0, 1] = -np.inf
        got = art([q, k, v, np.array([p], np.int64), mask])[0]
        want = ref.reference(o, q, k, v, np.array([p]), mask)[0]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=cache)
        assert not got[0, :, 1].any()
        if target == "triton":
            assert not art.stats
        else:
            from moec.codegen.ascend.plan import make_plan
            from moec.targets import target_for
            assert "mask" in make_plan(m, target_for("ascend"))["host_ops"]["moec.kv_attention"]


@pytest.mark.slow
def test_past_key_values_export_f16_refused_where_attention_stays_decomposed(tmp_path, capsys, mixtral):
    """A transformers past_key_values export with --kv-cache f16 on Triton / Ascend: the in-place build rewrites the
    recognised moec.attention, which those targets keep decomposed (tests/test_decoder_ops.py), so the f16 cache
    cannot be kept there: exit 2 with one line saying so and what to use (the step path keeps f16 on them)."""
    from moec.cli import main as cli_main
    path = decode.export_hf_kv(mixtral, str(tmp_path / "m.onnx"), dynamo=False)
    capsys.readouterr()
    for target in TARGETS:
        rc = cli_main(["generate", path, "--prompt-ids", "1,2", "--steps", "2", "--target", target, "--kv-cache", "f16"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"the {target} target keeps attention decomposed" in err[0], err


@pytest.mark.parametrize("target", TARGETS)
def test_append_into_an_f32_cache(tmp_path, target):
    """moec.kv_append into f32 buffers on the target's kernel (the exact path: the rows' bits copied as they are, -0
    and subnormals kept), in place, then the attention over them; on an axis other than 2 too ([M, H, D] rows)."""
    _available(target)
    from moec.driver import build_module
    from moec.ir import parse_module
    M, D = 16, 8
    art = build_module(_append_attention_module(M, D, cache="f32"), str(tmp_path / "a"), target=target)
    rng = np.random.default_rng(3)
    kb, vb = (np.full((1, 2, M, D), 7.0, np.float32) for _ in "kv")
    k, v = (rng.standard_normal((1, 2, 3, D)).astype(np.float32) for _ in "kv")
    k[0, 0, 0, :3] = [1e4, -0.0, 1e-40]
    q = rng.standard_normal((1, 4, 3, D)).astype(np.float32)
    y = art([q, k, v, kb, vb, np.array([5])])[0]
    want_k, want_v = kb.copy(), vb.copy()
    want_k[:, :, 5:8], want_v[:, :, 5:8] = k, v
    np.testing.assert_array_equal(kb.view(np.uint32), want_k.view(np.uint32))
    np.testing.assert_array_equal(vb.view(np.uint32), want_v.view(np.uint32))
    ref = OPS["moec.kv_attention"]
    o = ref.__new__(ref)
    o.attrs = {"scale": 0.3, "causal": True}
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(y, ref.reference(o, q, want_k, want_v, np.array([5]))[0], rtol=2e-5, atol=2e-5)
    m = parse_module(f"""module {{
  func.func @main(%c: tensor<{M}x2x{D}xf32>, %n: tensor<2x2x{D}xf32>, %pos: tensor<1xi64>) -> (tensor<{M}x2x{D}xf32>) attributes {{moec.inputs = ["c", "n", "pos"], moec.outputs = ["y"]}} {{
    %a = "moec.kv_append"(%c, %n, %pos) {{axis = 0 : i64}} : (tensor<{M}x2x{D}xf32>, tensor<2x2x{D}xf32>, tensor<1xi64>) -> tensor<{M}x2x{D}xf32>
    func.return %a : tensor<{M}x2x{D}xf32>
  }}
}}""")
    art = build_module(m, str(tmp_path / "b"), target=target)
    c = np.zeros((M, 2, D), np.float32)
    n = rng.standard_normal((2, 2, D)).astype(np.float32)
    out = art([c, n, np.array([M - 2])])[0]
    want = np.zeros_like(c)
    want[M - 2:] = n
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(c, want)



def test_ascend_key_tiles_fit_the_unified_buffer():
    """vec_kv's key tile is the largest (a multiple of 8, <= 248 rows) whose buffers fit the Unified Buffer, smaller
    for larger heads and for an f16 cache's float copies; heads whose 8-row tile cannot fit stay on the host, named."""
    from moec.codegen.ascend.kv_ops import key_tile, tile_bytes
    from moec.codegen.ascend.plan import make_plan
    from moec.codegen.ascend.vector_ops import usable_ub
    from moec.targets import target_for
    ub = usable_ub(target_for("ascend"))
    for D in (8, 64, 128, 256, 512):
        for cs in (2, 4):
            nk = key_tile(ub, D, D, cs, True)
            assert nk % 8 == 0 and 8 <= nk <= 248 and tile_bytes(nk, D, D, cs, True) <= ub
            assert nk == 248 or tile_bytes(nk + 8, D, D, cs, True) > ub
    assert key_tile(ub, 128, 128, 2, True) < key_tile(ub, 128, 128, 4, True) < key_tile(ub, 64, 64, 4, True)
    from test_decode_attention import _step_module as mod
    plan = make_plan(mod(1, 2, 2, 2048, 2048, 64, 0.1, 0, "f16"), target_for("ascend"))
    assert "do not fit the Unified Buffer" in plan["host_ops"]["moec.kv_step_attention"]
    assert make_plan(mod(1, 2, 2, 128, 128, 64, 0.1, 0, "f16"), target_for("ascend"))["host_ops"] == {}


def test_triton_kv_kernels_stay_inside_the_buffers_without_the_host_check(tmp_path, monkeypatch):
    """Inside a CUDA graph capture the launcher cannot read pos on the host (runtime._pos gives None there, faked
    here): the kernels' own guards keep a position outside the cache from writing (kv_append writes nothing) or
    reading (the attention clamps to the buffer) outside it; with the host read, the op's error."""
    _available("triton")
    import torch
    from moec.codegen.triton import runtime as rt
    M, D = 8, 4
    cache = torch.full((1, 1, M, D), 7.0, dtype=torch.float16)
    new = torch.ones((1, 1, 2, D))
    with pytest.raises(ValueError, match="do not fit"):
        rt.kv_append(cache, new, torch.tensor([M - 1]), axis=2)
    monkeypatch.setattr(rt, "_pos", lambda pos: None)
    for p in (M - 1, -1, 10 ** 6):
        assert rt.kv_append(cache, new, torch.tensor([p]), axis=2) is cache
        assert (cache == 7.0).all()
        y = rt.kv_step_attention(torch.ones((1, 1, 1, D)), cache, cache, new[:, :, :1], new[:, :, :1], torch.tensor([p]),
                                 scale=0.5, window=0)
        assert torch.isfinite(y).all()
