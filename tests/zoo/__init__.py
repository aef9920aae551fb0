"""The tests use the zoo that ships with moec (moec.zoo, also run by `moec conformance`)."""
from moec.zoo import *  # noqa: F401,F403
from moec.zoo import ZOO, ZooEntry, _source_hash, cache_dir, make_inputs, make_module, zoo_inputs  # noqa: F401


# One export of each zoo family, half of them through torch.onnx's dynamo exporter and half TorchScript: what
# the default test run compiles for ascend; triton gets the other export of each family, so that every export
# (and every hand-built graph, see zoo_params) runs on some target other than cpu (tests/test_zoo.py runs all
# of them on cpu).  -m slow adds the rest.
ASCEND_EXPORTS = frozenset({"mixtral_dynamo", "qwen2moe_torchscript", "qwen3moe_dynamo", "dbrx_torchscript",
                            "granite_dynamo", "deepseekv2_torchscript", "deepseekv3_dynamo", "switch_torchscript",
                            "gptoss_dynamo", "llama4_torchscript", "mixtralfused_torchscript",
                            "mixtraldense_dynamo"})


# Entries whose Triton build makes the calls of other default entries (checked 2026-12-07 on model_triton.py:
# rt.moe_route / rt.moe_experts_combine with mixtral_torchscript's arguments -- onnx_unrolled_qwen2: qwen2moe_dynamo's
# route (norm none) without its shared expert --, the router a matmul or gemm as elsewhere): on triton only with
# -m slow, so the two mixtral exports among them run on cpu only by default (test_zoo.py recognises every entry).
TRITON_SAME_CALLS = frozenset({"mixtralfused_dynamo", "mixtraldense_torchscript", "onnx_unrolled_mixtral_scatter_add",
                               "onnx_gathered_bmm_mixtral", "onnx_unrolled_qwen2"})


def zoo_params(target):
    """pytest parameters (entry names) of every ZOO entry for ``target`` ("ascend" or "triton"): by default
    one export per family (see ASCEND_EXPORTS) and every other hand-built graph (ascend the even ones,
    triton the odd ones: after recognition they are the same moe.* ops as the exports), the rest marked slow;
    on triton also TRITON_SAME_CALLS."""
    import pytest
    assert target in ("ascend", "triton")
    graphs = [e.name for e in ZOO if e.exporter is None]
    for e in ZOO:
        if e.exporter is None:
            default = graphs.index(e.name) % 2 == (0 if target == "ascend" else 1)
        else:
            default = (e.name in ASCEND_EXPORTS) == (target == "ascend")
        if target == "triton" and e.name in TRITON_SAME_CALLS:
            default = False
        yield pytest.param(e.name, marks=[] if default else [pytest.mark.slow])
