"""Ascend target (issue 16 item 6): moe.route's forms that stayed on the host now run on the NPU.

- n_shared (Inkling's always-on experts scored by the router): moe_gating selects over the first E - S logit
  columns and appends the S always-on slots (their scores) before post / norm / scale, so the normalisation sees all
  k + S slots;
- logits [B, S, E] (Switch Transformers' capacity counted per sequence): moe_init_routing resets each expert's count
  at every sequence start.
Each against the op's numpy semantics (the IR's reference), weights and ids, with ties and edge cases."""
import numpy as np
import pytest

from moec.driver import build_module
from moec.ir import run


@pytest.mark.parametrize("name", ["inkling", "softmax_all"])
def test_n_shared_route_and_layer_on_the_npu(name, tmp_path):
    from test_hf_route_forms import ROUTES, _inputs, _layer
    m = _layer(ROUTES[name])
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    step = next(s for s in art.plan["steps"] if s["op"] == "moe.route")
    assert step["where"] == "npu" and step["kernels"] == ["moe_gating"], step
    for T, same in [(7, False), (1, False), (6, True)]:  # (same: every token ties with the others)
        x = _inputs(T, same)
        np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6,
                                   err_msg=f"T={T}")
    assert art.launches.get("moe_gating", 0) > 0, art.launches


def _route_only(cols, attrs, bias, dt="f32"):
    """logits [T, cols] (+ bias) -> moe.route -> (w, ids) as the model's outputs."""
    from moec.ir import parse_module
    from moec.ir.weights import WeightStore
    from moec.ir.ops.moe import RouteOp  # noqa: F401  (the reference is the op's own)
    slots = attrs["k"] + attrs.get("n_shared", 0)
    L = f'tensor<?x{cols}x{dt}, "T">'
    W, ID = f'tensor<?x{slots}x{dt}, "T">', f'tensor<?x{slots}xi64, "T">'
    ws = WeightStore()
    txt_attrs = ", ".join(f'{k} = {v} : i64' if isinstance(v, int) and not isinstance(v, bool) else
                          f'{k} = {v!r} : f64' if isinstance(v, float) else f'{k} = "{v}"' for k, v in attrs.items())
    b_in = ""
    if bias is not None:
        ws.set("bias", bias)
        b_in = f'    %b = "moec.constant"() {{value = dense_resource<bias> : tensor<{bias.size}x{dt}>}} : () -> tensor<{bias.size}x{dt}>\n'
    text = f'''module {{
  func.func @main(%l: {L}) -> ({W}, {ID}) attributes {{moec.inputs = ["l"], moec.outputs = ["w", "ids"]}} {{
{b_in}    %r:2 = "moe.route"(%l{", %b" if bias is not None else ""}) {{{txt_attrs}}} : ({L}{f", tensor<{bias.size}x{dt}>" if bias is not None else ""}) -> ({W}, {ID})
    func.return %r#0, %r#1 : {W}, {ID}
  }}
}}'''
    return parse_module(text, ws)


ROUTE_CASES = {  # (E routed, S always-on, attrs)
    "sigmoid_sum_bias": (6, 2, dict(k=2, scoring="sigmoid", norm="sum", scale=1.75, n_shared=2), True),
    "softmax_post_softmax": (5, 1, dict(k=3, scoring="softmax", post="softmax", n_shared=1), False),
    "k_equals_E": (4, 3, dict(k=4, scoring="sigmoid", norm="sum", n_shared=3), True),
    "tie_high_drop": (6, 2, dict(k=1, scoring="softmax", tie="high", drop=1, min_weight=0.05, n_shared=2), False),
}


@pytest.mark.parametrize("case", sorted(ROUTE_CASES))
def test_n_shared_route_matches_reference(case, tmp_path):
    E, S, attrs, with_bias = ROUTE_CASES[case]
    rng = np.random.default_rng(3)
    bias = (rng.standard_normal(E) / 4).astype(np.float32) if with_bias else None
    m = _route_only(E + S, attrs, bias)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    lg = (rng.standard_normal((9, E + S)) * 1.5).astype(np.float32)
    lg[2, :] = 0.25           # ties everywhere: the lowest (tie high: highest) index first
    lg[3, E:] = -np.inf       # always-on experts with zero weight
    lg[4, 0] = np.inf if attrs["scoring"] == "sigmoid" else 30.0
    for T in (9, 1):
        w, ids = (np.asarray(a) for a in art([lg[:T]]))
        want = run(m, {"l": lg[:T]})
        np.testing.assert_array_equal(ids, want["ids"])
        np.testing.assert_allclose(w, want["w"], rtol=2e-6, atol=1e-7)


def _seq_module(cap, E=4, dt="f32"):
    from moec.ir import parse_module
    from moec.ir.weights import WeightStore
    L3 = f'tensor<?x?x{E}x{dt}, "B,S">'
    text = f'''module {{
  func.func @main(%l: {L3}) -> (tensor<?x1x{dt}>, tensor<?x1xi64>) attributes {{moec.inputs = ["l"], moec.outputs = ["w", "ids"]}} {{
    %r:2 = "moe.route"(%l) {{k = 1 : i64, scoring = "softmax", capacity = {cap} : i64}} : ({L3}) -> (tensor<?x1x{dt}>, tensor<?x1xi64>)
    func.return %r#0, %r#1 : tensor<?x1x{dt}>, tensor<?x1xi64>
  }}
}}'''
    return parse_module(text, WeightStore())


@pytest.mark.parametrize("cap", [1, 2])
def test_per_sequence_capacity_on_the_npu(cap, tmp_path):
    m = _seq_module(cap)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    step = next(s for s in art.plan["steps"] if s["op"] == "moe.route")
    assert step["kernels"] == ["moe_gating", "moe_init_routing"], step
    rng = np.random.default_rng(2)
    for B, S in [(3, 5), (1, 4), (2, 1), (4, 7)]:
        lg = rng.standard_normal((B, S, 4)).astype(np.float32)
        lg[1:, :, 2] += 3.0  # sequences after the first all choose expert 2: over capacity in each
        w, ids = (np.asarray(a) for a in art([lg]))
        want = run(m, {"l": lg})
        np.testing.assert_array_equal(ids, want["ids"], err_msg=f"B={B} S={S}")
        np.testing.assert_allclose(w, want["w"], rtol=1e-6, atol=1e-7)
        if B > 1 and S > cap:  # every later sequence keeps exactly cap tokens of expert 2 (counted per sequence)
            kept = (want["ids"].reshape(B, S) == 2).sum(1)[1:]
            assert kept.tolist() == [cap] * (B - 1)


def test_per_sequence_capacity_many_blocks(tmp_path):
    """More slots than one moe_init_routing block takes: the blocks' shares split sequences, each block's counts
    still restart at every sequence start."""
    from moec.targets.ascend_backend import ROUTE_SLOTS_PER_BLOCK
    m = _seq_module(3)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    rng = np.random.default_rng(5)
    B, S = 7, ROUTE_SLOTS_PER_BLOCK // 3 + 5
    lg = rng.standard_normal((B, S, 4)).astype(np.float32)
    w, ids = (np.asarray(a) for a in art([lg]))
    want = run(m, {"l": lg})
    np.testing.assert_array_equal(ids, want["ids"])
    np.testing.assert_allclose(w, want["w"], rtol=1e-6, atol=1e-7)
    assert (want["ids"] == -1).sum() > 0


@pytest.mark.slow
def test_switch_block_per_sequence_capacity_on_the_npu(tmp_path):
    """transformers' SwitchTransformersSparseMLP (TorchScript export, recognised with its capacity counted per
    sequence) on the NPU: no host op, equal to eager on batches whose sequences overflow their experts' capacity."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_expert_forms import _switch_block, _switch_exact, _switch_onnx
    blk = _switch_block(2)
    m, layers = _switch_onnx(blk, tmp_path)
    assert len(layers) == 1 and layers[0]["capacity_counted"] == "per sequence", layers
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    _switch_exact(blk, m, art)


@pytest.mark.parametrize("dt", ["f16", "bf16"])
def test_n_shared_route_half(dt, tmp_path):
    """Half logits, bias and weights (moe_gating widens each row to float, computes, rounds the k + S weights once):
    ids equal to the reference's, weights within one rounding of the element type."""
    import ml_dtypes
    npt = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}[dt]
    E, S = 6, 2
    attrs = dict(k=2, scoring="sigmoid", norm="sum", scale=1.75, n_shared=2)
    rng = np.random.default_rng(6)
    bias = (rng.standard_normal(E) / 4).astype(npt)
    m = _route_only(E + S, attrs, bias, dt)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    lg = (rng.standard_normal((9, E + S)) * 1.5).astype(npt)
    w, ids = (np.asarray(a) for a in art([lg]))
    want = run(m, {"l": lg})
    np.testing.assert_array_equal(ids, want["ids"])
    tol = 2.0 ** -10 if dt == "f16" else 2.0 ** -7
    np.testing.assert_allclose(w.astype(np.float32), want["w"].astype(np.float32), rtol=tol, atol=tol)


def test_host_program_runs_the_new_route_forms(tmp_path):
    """The C++ host program (moec_run, no Python) runs the same plans: the Inkling layer (always-on slots) and the
    per-sequence capacity route."""
    from moec.targets import ascend_backend as ab
    from test_hf_route_forms import ROUTES, _inputs, _layer
    lg = np.random.default_rng(0).standard_normal((3, 4, 4)).astype(np.float32)
    lg[1:, :, 2] += 3.0
    for name, m, ins in (("inkling", _layer(ROUTES["inkling"]), [_inputs(4)]), ("per_seq", _seq_module(2), [lg])):
        out = str(tmp_path / name)
        build_module(m, out, target="ascend", run_passes=True)
        exe = ab.build_host_program(out)
        assert ab.host_program_can_run(out, ins), name
        for got, want in zip(ab.run_host_program(exe, out, ins), run(m, ins).values()):
            np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-6, err_msg=name)
