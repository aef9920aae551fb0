"""Ascend target: 1-D convolutions -- depthwise (the causal conv1d of Mamba / gated-delta / short-conv layers) and grouped
(ZAYA's query/key conv, a group per head) -- run on the NPU as shifted multiply-adds (codegen/ascend/conv_ops.py:
vec_copy windows of a zero-padded copy, vec_elementwise products and sums), checked against torch; strided and 2-D
convolutions stay on the host with a reason."""
import numpy as np
import pytest

from moec.driver import build_module

torch = pytest.importorskip("torch")


class _CausalConv(torch.nn.Module):
    """transformers' spelling: conv1d(x.transpose(1, 2), groups=C, padding=K-1)[..., :S] then SiLU."""
    def __init__(self, C, K, bias, dilation=1):
        super().__init__()
        self.conv = torch.nn.Conv1d(C, C, K, groups=C, padding=(K - 1) * dilation, bias=bias, dilation=dilation)

    def forward(self, x):  # x [B, S, C]
        S = x.shape[1]
        y = self.conv(x.transpose(1, 2))[..., :S]
        return torch.nn.functional.silu(y).transpose(1, 2)


def _build(mod, x0, tmp_path, dyn):
    from moec.frontend.torch_import import import_torch
    m = import_torch(mod.eval(), (x0,), dynamic_dims=dyn)
    return build_module(m, str(tmp_path / "o"), target="ascend", run_passes=True)


@pytest.mark.parametrize("C,K,bias,dil,B", [(24, 4, False, 1, 1), (10, 3, True, 2, 2)])
def test_depthwise_causal_conv1d_on_the_npu(C, K, bias, dil, B, tmp_path):
    torch.manual_seed(0)
    mod = _CausalConv(C, K, bias, dil)
    art = _build(mod, torch.zeros(B, 5, C), tmp_path, {0: {1: "S"}})
    rng = np.random.default_rng(1)
    for S in (1, 9):
        x = rng.standard_normal((B, S, C)).astype(np.float32)
        with torch.no_grad():
            want = mod(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(art([x])[0], want, rtol=1e-5, atol=1e-6)
    assert not art.host_ops, art.host_ops
    assert art.launches.get("vec_copy", 0) > 0 and art.launches.get("vec_elementwise", 0) > 0, art.launches


@pytest.mark.parametrize("C,Co,G,K,bias,pad", [(12, 12, 3, 2, False, 0),    # ZAYA's grouped qk conv: a group per head
                                                (6, 12, 6, 3, True, 2),      # depthwise with a channel multiplier
                                                (8, 4, 1, 2, True, 1)])      # one group: a full 1-D conv
def test_grouped_conv1d_on_the_npu(C, Co, G, K, bias, pad, tmp_path):
    torch.manual_seed(1)
    mod = torch.nn.Conv1d(C, Co, K, groups=G, bias=bias, padding=pad)
    art = _build(mod, torch.zeros(2, C, 7), tmp_path, {0: {2: "S"}})
    rng = np.random.default_rng(2)
    for S in (3, 11):
        x = rng.standard_normal((2, C, S)).astype(np.float32)
        with torch.no_grad():
            want = mod(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(art([x])[0], want, rtol=1e-5, atol=1e-6)
    assert not art.host_ops, art.host_ops


def test_other_convolutions_stay_on_the_host_with_a_reason():
    from moec.codegen.ascend.conv_ops import conv_reason
    from moec.frontend.torch_import import import_torch
    for conv, why in ((torch.nn.Conv1d(4, 4, 3, groups=4, stride=2), "strided"),
                      (torch.nn.Conv2d(4, 4, 3, groups=4), "2-D")):
        x0 = torch.zeros((1, 4, 8) if isinstance(conv, torch.nn.Conv1d) else (1, 4, 8, 8))
        m = import_torch(conv.eval(), (x0,))
        ops = [o for o in m.ops() if o.name == "moec.conv"]
        assert ops and why in conv_reason(m, ops[0]), (why, conv_reason(m, ops[0]))
