"""Survey of every MoE architecture of the pinned ``transformers`` release through moec (issue 16).

The architectures are enumerated from the library, not listed by hand: every model type of
``CONFIG_MAPPING`` whose modeling code mentions experts is built from a tiny random config (2 layers,
hidden 32, 4 experts, top-2) and searched at run time for its decoder layers' sparse-expert blocks (a
module with an ``experts`` child and a router: a ``gate`` / ``router`` child or a linear layer scoring
the experts).  Each block is then taken through every path:

  torch.export   moec's ``import_torch`` (torch.export + moec's ATen front end), canonicalize, recognize-moe
  dynamo         ``torch.onnx.export(..., dynamo=True)``, moec's ONNX importer, canonicalize, recognize-moe
  torchscript    ``torch.onnx.export(..., dynamo=False)``, the same

for every ``config._experts_implementation`` the architecture supports (``eager``, ``batched_mm``,
``grouped_mm`` where its experts class uses ``@use_experts_implementation``; one implementation, "-",
for older ``nn.ModuleList`` experts), in f32 and bf16 (as ``from_pretrained(..., dtype=torch.bfloat16)``
loads it: what ``_keep_in_fp32_modules_strict`` names stays f32), with dynamic and static batch / sequence dims
(static: f32 only; bf16 and static where that path and implementation work in f32 with dynamic dims),
input [batch, seq, hidden].  Each cell records: recognised (family, routing) and
exact (the recognised module against the torch block at another batch / sequence size), or the
failure: the first error line, or recognize-moe's own reason from its recognition trace
(``moec inspect --explain``).  Then each architecture's 2-layer CausalLM (batched_mm, f32): how many of
its sparse blocks are recognised on the torch.export path (of the blocks that run on its text input).
The TorchScript export traces an example that hits every expert (example_input).  ``moec.compile`` (C build + verification)
runs for a representative few.

Usage::

    python tests/hf_survey.py                      # the whole survey -> docs/real_models.md (+ .json)
    python tests/hf_survey.py --arch mixtral -v    # one architecture, printed
    python tests/hf_survey.py --arch phimoe --path dynamo --impl batched_mm --dtype f32 --dims dynamic -v
    python tests/hf_survey.py --list               # the architectures found and how each is built
    python tests/hf_survey.py --tier 3 --dtype bf16 --missing   # fill in part of the matrix, merged into the .json
    python tests/hf_survey.py --only mixtral --tier f32          # redo some modules' cells (the rest kept)
    python tests/hf_survey.py --render             # docs/real_models.md from the .json
    python tests/hf_survey.py --tables             # tests/test_hf_models.py's expectation tables from the .json
    python tests/hf_survey.py --failures F.md      # the failing cells with the command reproducing each

Each architecture runs in its own subprocess (a crash or a hang costs one row).  ONNX exports are
cached under ``$MOEC_SURVEY_CACHE`` (default ``~/.cache/moec/hf_survey``): they depend on torch and
transformers only, so a rerun after a moec change redoes the imports and recognition, not the exports.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("MOEC_SURVEY_ROOT") or os.path.dirname(HERE)  # (a copy of this script can survey the repo)

D = 32  # hidden size of every tiny config
TINY = dict(hidden_size=D, intermediate_size=64, moe_intermediate_size=48, shared_expert_intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
            num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, vocab_size=128, n_group=2,
            topk_group=1, first_k_dense_replace=0, mlp_only_layers=[], decoder_sparse_step=1,
            max_position_embeddings=64, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=8, n_shared_experts=1)

# Per-model-type additions to TINY where the generic shrinking does not make a 2-layer model whose every
# layer has the sparse block (other names for the same sizes, layer-type patterns, nested sub-configs).
# Each is the config's own field, read from its configuration_*.py.
_MAMBA = dict(mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=16, mamba_n_groups=1)
_INDEXER = dict(index_topk=4, index_head_dim=8, index_n_heads=2)
EXTRA: dict = {
    "afmoe": dict(num_dense_layers=0, num_shared_experts=1),
    "bamba": dict(_MAMBA),
    # (clip_qkv: the released DBRX configs clip q/k/v at 8; the config's default None makes its attention call
    # clamp(min=None, max=None), which torch refuses)
    "dbrx": dict(d_model=D, n_heads=4, n_layers=2, max_seq_len=64,
                 attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=48, moe_num_experts=4, moe_top_k=2)),
    "deepseek_v4": dict(mlp_layer_types=["moe", "moe"], o_groups=2, **_INDEXER),
    "doge": dict(is_moe=True, num_experts=16, num_experts_per_tok=2),
    "diffusion_gemma_text": dict(top_k_experts=2),  # (None by default: torch.topk(k=None) fails)
    "dots3_note_text": dict(num_key_value_heads=4, **_INDEXER),
    "ernie4_5_moe": dict(moe_layer_start_index=0, moe_num_experts=4, moe_k=2, moe_num_shared_experts=1),
    "ernie4_5_vl_moe_text": dict(moe_intermediate_size=[48, 48], moe_num_experts=4, moe_k=2,
                                 moe_num_shared_experts=1,
                                 rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[1, 1, 2])),
    "gemma4_text": dict(enable_moe_block=True, top_k_experts=2, vocab_size_per_layer_input=128,
                        hidden_size_per_layer_input=8),
    "glm5_next_text": dict(num_key_value_heads=4, linear_head_dim=8, linear_num_heads=4, index_kpool=4,
                           qk_rope_head_dim=0, qk_nope_head_dim=8, **_INDEXER),
    "glm4v_moe_text": dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[1, 1, 2]),
                           partial_rotary_factor=1.0),
    "granitemoehybrid": dict(_MAMBA),
    "hy_v3": dict(num_shared_experts=1),
    "hy_v4_vl_text": dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 1, 1]),
                          **_INDEXER),
    "jamba": dict(expert_layer_period=1, expert_layer_offset=0, attn_layer_period=2, attn_layer_offset=1,
                  use_mamba_kernels=False),
    "kolibri1_1": dict(head_dim=16, index_num_heads=2, index_topk=4, mlp_only_intermediate_size=64),
    "laguna": dict(),
    "lfm2_moe": dict(num_dense_layers=0, layer_types=["full_attention", "full_attention"]),
    # (a LongCat-Flash layer has two attention sublayers and one MoE: num_hidden_layers is 2 x num_layers)
    "longcat_flash": dict(num_layers=2, num_hidden_layers=4, moe_topk=2, ffn_hidden_size=64,
                          expert_ffn_hidden_size=48, zero_expert_num=2),
    "mistral4": dict(head_dim=16),  # rotary dim = head_dim x partial_rotary_factor 0.5 = qk_rope_head_dim 8
    # (encoder-decoder: 2 encoder and 2 decoder layers, every one sparse, as the 2-layer models of the rest)
    "nllb-moe": dict(decoder_layers=2, encoder_sparse_step=1, decoder_sparse_step=1),
    "nemotron_h": dict(layers_block_type=["moe", "moe"], mamba_num_heads=4, mamba_head_dim=8, n_groups=1,
                       chunk_size=16, moe_shared_expert_intermediate_size=48, use_mamba_kernels=False),
    # (expert_capacity: switch-base-8's 64 is capacity factor 1 at its 512-token sequences over 8 experts; at the
    # survey's 5- and 7-token sequences over 4 experts that factor gives 2, so the capacity binds as in the real
    # model: with 64 it never binds at these sizes and the layer is indistinguishable from one without capacity)
    # (num_layers itself: the attribute map sets num_hidden_layers after __post_init__ derived the sparse steps)
    "switch_transformers": dict(num_layers=2, num_decoder_layers=2, num_sparse_encoder_layers=2,
                                num_sparse_decoder_layers=2, expert_capacity=2),
    "step3p5": dict(sliding_window=4),  # (its model builds the sliding-window mask whatever the layer types)
    "zaya": dict(num_experts_per_tok=1),
}

PATHS = ("torch.export", "dynamo", "torchscript")
IMPLS = ("eager", "batched_mm", "grouped_mm")
DTYPES = ("f32", "bf16")
# moec.compile (C build + verification against the module) for a representative few (slow)
COMPILE_FEW = ("mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss",
               "doge", "nllb-moe")  # (the last two: not MoE layers, recognize-moe leaves them alone: a plain graph)


# -- discovery -------------------------------------------------------------------------------------

def candidates() -> dict:
    """{modeling module name: [model types]} of every model type whose modeling code mentions experts."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name
    td = os.path.join(os.path.dirname(transformers.__file__), "models")
    out: dict = {}
    for mt in CONFIG_MAPPING_NAMES:
        mod = model_type_to_module_name(mt)
        d = os.path.join(td, mod)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if f.startswith("modeling_") and f.endswith(".py") and "experts" in open(os.path.join(d, f)).read():
                out.setdefault(mod, []).append(mt)
                break
    return out


_SKIP_SUFFIX = ("_vision", "_audio", "_encoder", "_vision_model", "_vision_encoder", "_sam_vision_model",
                "_audio_encoder", "_code_predictor", "_mm_model")


def text_types(mts) -> list:
    """The model types of one modeling module to try, text models first (a multimodal model's MoE is
    in its text decoder; its vision / audio towers are not decoders)."""
    keep = [mt for mt in mts if not mt.endswith(_SKIP_SUFFIX)]
    return sorted(keep, key=lambda mt: (not mt.endswith("_text"), "talker" in mt, mt))


def tiny_config(mt: str, impl: str = "batched_mm"):
    """The tiny random config of model type ``mt``: TINY and EXTRA[mt] over the defaults; token ids
    that do not fit the tiny vocabulary are moved into it."""
    from transformers import AutoConfig
    import dataclasses
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    kw = dict(TINY)
    cls = CONFIG_MAPPING[mt]
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if "mlp_layer_types" in fields:  # every layer's MLP the sparse block
        kw["mlp_layer_types"] = ["sparse"] * TINY["num_hidden_layers"]
    if "kv_lora_rank" in fields:  # multi-head latent attention: as many key/value heads as query heads
        kw["num_key_value_heads"] = TINY["num_attention_heads"]
    kw.update(EXTRA.get(mt, {}))
    kw = {k: (v(mt) if callable(v) else v) for k, v in kw.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = AutoConfig.for_model(mt, **kw)
    for sub in _configs(cfg):
        for k in ("pad_token_id", "bos_token_id", "eos_token_id"):
            v = getattr(sub, k, None)
            if isinstance(v, int) and v >= kw["vocab_size"]:
                setattr(sub, k, {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}[k])
            elif isinstance(v, list) and any(isinstance(i, int) and i >= kw["vocab_size"] for i in v):
                setattr(sub, k, [2])
        sub._experts_implementation = impl
    cfg._experts_implementation = impl
    return cfg


def _configs(cfg):
    yield cfg
    for k in getattr(cfg, "sub_configs", {}) or {}:
        sub = getattr(cfg, k, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield sub


def model_class(cfg):
    """The CausalLM class of ``cfg`` (else its base model): the auto mappings, else the modeling
    module's own classes declaring this config class."""
    import importlib
    import inspect
    from transformers.models.auto import modeling_auto as ma
    for mapping in (ma.MODEL_FOR_CAUSAL_LM_MAPPING, ma.MODEL_MAPPING):
        try:
            return mapping[type(cfg)]
        except KeyError:
            pass
    mod = importlib.import_module(type(cfg).__module__.replace(".configuration_", ".modeling_"))
    from transformers import PreTrainedModel
    own = [c for _, c in inspect.getmembers(mod, inspect.isclass)
           if issubclass(c, PreTrainedModel) and getattr(c, "config_class", None) is type(cfg)]
    for suffix in ("ForCausalLM", "TextModel", "Model"):
        for c in own:
            if c.__name__.endswith(suffix):
                return c
    raise ValueError(f"no model class for {type(cfg).__name__}")


def build_model(mt: str, impl: str = "batched_mm", dtype: str = "f32", seed: int = 0):
    """A tiny random ``mt`` model (CausalLM where there is one) with N(0, 0.2) sparse-block weights."""
    import torch
    cfg = tiny_config(mt, impl)
    cls = model_class(cfg)
    with torch.device("meta"):  # size check first: a config the shrinking missed must not allocate GBs
        n = sum(p.numel() for p in cls(cfg).parameters())
    if n > 20_000_000:
        raise ValueError(f"the tiny config still has {n / 1e6:.0f}M parameters (a size field not shrunk)")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(cfg)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for blk in sparse_blocks(model):
            for p in blk.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    if dtype == "bf16":
        keep_f32(model)
    return model


def keep_f32(model) -> list:
    """What ``from_pretrained(..., dtype=torch.bfloat16)`` keeps in f32, back in f32 after ``model.to(bf16)``
    (which casts everything): the parameters and buffers whose state-dict name matches one of the model's
    ``_keep_in_fp32_modules_strict`` globs (transformers' dtype plan: ``*`` any text, searched in the name;
    the routers of DeepSeek-V3-like models, Inkling2's, ...).  The names kept."""
    import torch
    pats = [re.compile(p.replace("*", ".*")) for p in sorted(getattr(model, "_keep_in_fp32_modules_strict", None) or ())]
    kept = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and any(p.search(name) for p in pats):
            t.data = t.data.to(torch.float32)
            kept.append(name)
    return kept


def sparse_blocks(model) -> list:
    """The sparse-expert blocks of ``model``: modules with a router (a ``gate`` / ``router`` /
    ``router_gate`` child, or a child whose class is a router / gating / top-k module, or a linear layer
    scoring the experts) and experts (an ``experts`` child, stacked weights or an nn.ModuleList; a child
    whose class holds experts, as JetMoE's parallel experts; an embedding table of experts, as Doge's
    retrieval experts); nothing inside an attention module (JetMoE's mixture of attention heads is not an
    FFN)."""
    import torch
    out = []
    attn = []
    for name, m in model.named_modules():
        if "Attention" in type(m).__name__ and not type(m).__name__.endswith("DecoderLayer"):
            # (an attention module; not a decoder layer named after its attention, as Jamba's
            # JambaAttentionDecoderLayer, whose feed-forward is a sparse block too)
            attn.append(name + ".")
            continue
        if any(name.startswith(a) for a in attn) or any(name.startswith(n + ".") for n, _ in out):
            continue
        kids = dict(m.named_children())
        experts = isinstance(getattr(m, "experts", None), torch.nn.Module) or any(
            "Experts" in type(c).__name__ for c in kids.values()) or (
            "router_gate" in kids and any(isinstance(c, torch.nn.Embedding) for c in kids.values()))
        if not experts:
            continue
        router = any(k in kids for k in ("gate", "router", "gating", "router_gate", "w_gate")) or any(
            any(w in type(c).__name__ for w in ("Router", "Gating", "TopK", "Gate")) for c in kids.values()) or any(
            isinstance(c, torch.nn.Linear) for k, c in kids.items() if k != "experts")
        if router:
            out.append((name, m))
    return [m for _, m in out]


def inline_block(block) -> bool:
    """A decoder layer that is itself the sparse block (its router and experts are its own children,
    beside attention): it cannot be called on hidden states alone, only the whole model shows it."""
    return any("Attention" in type(c).__name__ for c in block.children())


def experts_impls(block) -> tuple:
    """The experts implementations a block supports: transformers' three where its experts class
    dispatches on ``config._experts_implementation`` (``@use_experts_implementation``), else "-"."""
    ex = getattr(block, "experts", None)
    if ex is None:
        return ("-",)
    fwd = type(ex).forward
    if getattr(fwd, "__wrapped__", None) is not None and hasattr(type(block.experts), "_apply_gate"):
        return IMPLS
    return ("-",)


# -- one cell -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    """The error's first informative line: torch.onnx's wrapped errors give their exception summary
    (and the user code line that raised it), not their 'step 1/3' banner."""
    if isinstance(e, _CachedError):
        return str(e)
    s = _ANSI.sub("", str(e)).strip()
    lines = [ln.strip() for ln in s.splitlines() if ln.strip()]
    name = type(e).__name__
    if "## Exception summary" in s:
        i = next(i for i, ln in enumerate(lines) if ln.startswith("## Exception summary"))
        first = lines[i + 1] if i + 1 < len(lines) else ""
        m = re.match(r"<class '([\w.]+)'>: (.*)", first)
        if m:
            name, first = m.group(1).rsplit(".", 1)[-1], m.group(2)
        where = ""
        if "The following call raised this error:" in s:
            j = next(i for i, ln in enumerate(lines) if ln.startswith("The following call raised this error:"))
            fm = re.search(r'File "([^"]+)", line (\d+)', lines[j + 1]) if j + 1 < len(lines) else None
            if fm and j + 2 < len(lines):
                where = f" (at {os.path.basename(fm.group(1))}:{fm.group(2)}: `{lines[j + 2]}`)"
        return f"{name}: {first}{where}"[:400]
    line = lines[0] if lines else ""
    return f"{name}: {line}"[:400]


def _recognise(m):
    """The pipeline's own first two stages (canonicalize, recognize-moe), as ``moec compile`` runs them."""
    from moec.passes.base import run_to_fixed_point
    from moec.passes.pipeline import stages
    from moec.targets import target_for
    st = dict(stages(target_for("cpu")))
    run_to_fixed_point(m, st["canonicalize"])
    run_to_fixed_point(m, st["recognize-moe"])
    return [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]


def _why_not(m) -> str:
    """recognize-moe's own reason (its recognition trace, as ``moec inspect --explain`` prints it)."""
    from moec.passes.recognition_trace import recognition_of
    recs = [r for r in recognition_of(m) if not r.get("recognised") and r.get("step") != "absorbed"]
    if not recs:
        sel = [o for o in m.main.ops if o.name in ("moec.topk", "moec.argmax")]
        return "no top-k / arg-max left in the graph" if not sel else "not recognised (no trace record)"
    # (a group-limited router's group top-k says only that the layer's own record decides: prefer that one)
    r = next((r for r in recs if r.get("step") != "group selection"), recs[0])
    return f"{r.get('step')}: {r.get('reason')}"[:400]


def _out0(y):
    import torch
    while isinstance(y, (tuple, list)):
        y = y[0]
    if not isinstance(y, torch.Tensor) and hasattr(y, "to_tuple"):
        y = y.to_tuple()[0]
    return y


class _CachedError(Exception):
    """An export failure read back from the cache (its first line as the survey recorded it)."""


def _wrap_first(block):
    """The block returning only its first output (several blocks also return router logits)."""
    import torch

    class First(torch.nn.Module):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, x):
            return _out0(self.b(x))
    return First(block).eval()


@contextlib.contextmanager
def _quiet():
    """torch's exporters print graphs and progress on stdout / stderr: keep the survey's output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _cache_dir() -> str:
    d = os.environ.get("MOEC_SURVEY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "moec", "hf_survey")
    os.makedirs(d, exist_ok=True)
    return d


def _export_key(mt, impl, dtype, dims, exporter, cfg_json) -> str:
    import torch
    import transformers
    h = hashlib.sha256(f"{torch.__version__}|{transformers.__version__}|{mt}|{impl}|{dtype}|{dims}|{exporter}|"
                       f"{cfg_json}".encode()).hexdigest()[:20]
    return os.path.join(_cache_dir(), f"{mt}-{impl}-{dtype}-{dims}-{exporter}-{h}")


def _onnx_export(block, x, path, dynamo: bool, dynamic: bool):
    """torch.onnx export of the block (first output) at input [batch, seq, hidden]; an export failure
    is cached as ``path.err``."""
    import torch
    if os.path.exists(path + ".onnx"):
        return path + ".onnx"
    if os.path.exists(path + ".err"):
        raise _CachedError(open(path + ".err").read().split("\n\n")[0])
    if dynamo:
        kw = dict(dynamic_shapes=({0: "B", 1: "S"},) if dynamic else None)
    else:
        kw = dict(dynamic_axes={"x": {0: "B", 1: "S"}} if dynamic else None, opset_version=18)
    tmp = path + f".tmp{os.getpid()}.onnx"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(_wrap_first(block), (x,), tmp, input_names=["x"], dynamo=dynamo, **kw)
        import onnx
        onnx.save(onnx.load(tmp), path + ".onnx")  # external data (if any) folded into one file
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        with open(path + ".err", "w") as fh:
            fh.write(msg + "\n\n" + _ANSI.sub("", str(e))[:20000])
        raise _CachedError(msg) from None
    finally:
        for p in (tmp, tmp + ".data"):
            if os.path.exists(p):
                os.remove(p)
    return path + ".onnx"


def _tol(dtype):
    """(rtol, atol) of an f32 cell: moec's f32 tolerance (moec.tolerances.TOLERANCES)."""
    from moec.tolerances import TOLERANCES
    return TOLERANCES["f32"].rtol, TOLERANCES["f32"].atol


def _exact(m, block, dtype, dynamic, x0, info=None, onnx_path=None):
    """Error of the recognised module against the torch block, on an input of another batch / sequence
    size when dims are dynamic (the example's shape when static), scaled so that <= 1 is exact.  f32: moec's
    f32 criterion (moec.tolerances.f32_check): max |got-ref| / (atol + rtol |ref|) against the block run in
    float64 on the same weights and input, within max(1, 2 x the torch f32 block's own such error); ``info``
    gets both (``err_vs_f64``, ``torch_err_vs_f64``).  bf16: moec's half-precision criterion
    (moec.tolerances.half_precision_check, what moec.compile's verification applies): per token, moec's
    relative error against the same block run in f32 on the same bf16 weights and input, within
    max(floor, c x the torch bf16 block's own error); ``info`` (a dict) gets both errors (``err_vs_f32``:
    moec's, ``torch_err_vs_f32``: the torch bf16 block's; per-token max) and ``bf16_check`` (the whole
    result: means, maxima, allowed values).  ``onnx_path`` (an ONNX path's export): the graph moec compiled is
    the export, so its own bf16 run (_onnx_half_run) is a second faithful run beside torch's, the worst of the
    two per token counting (as moec.compile's verification counts the model's own runs); ``info`` gets its
    error (``onnx_err_vs_f32``) and how it was run (``onnx_oracle``)."""
    import copy
    import numpy as np
    import torch
    from moec.frontend.torch_import import tensor_to_numpy
    from moec.ir.interpreter import run as ir_run
    shape = (1, 7, D) if dynamic else tuple(x0.shape)
    xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(x0.dtype)
    own = how = None
    if dtype == "bf16" and onnx_path:
        own, how = _onnx_half_run(onnx_path, xs)
        for s in (16, 64, 128) if own is None and dynamic else ():
            # (a TorchScript trace of the eager experts' loop runs only where every expert it traced is hit)
            x2 = torch.randn(1, s, D, generator=torch.Generator().manual_seed(3)).to(x0.dtype)
            own2, how2 = _onnx_half_run(onnx_path, x2)
            if own2 is not None:
                own, xs, how = own2, x2, f"{how2}, at [1, {s}, {D}] (at {list(shape)} the export does not run: {how[:120]})"
                break
    with torch.no_grad():
        want = tensor_to_numpy(_out0(block(xs))).astype(np.float64)
    got = np.asarray(list(ir_run(m, [tensor_to_numpy(xs)]).values())[0]).astype(np.float64)
    if got.shape != want.shape:
        return float("inf")
    if dtype == "bf16":
        from moec.tolerances import half_precision_check
        with torch.no_grad():  # (the block in f32 on the same bf16-rounded weights and input: the math)
            ref = tensor_to_numpy(_out0(copy.deepcopy(block).float()(xs.float()))).astype(np.float64)
        hc = half_precision_check([got], [want], [ref], "bf16", others=[[own]] if own is not None else ())
        if info is not None:
            info.update(err_vs_f32=hc.get("moec_token_rel_err", {}).get("max"),
                        torch_err_vs_f32=hc.get("eager_token_rel_err", {}).get("max"),
                        bf16_check={k: v for k, v in hc.items() if k not in ("ok", "err", "failure")})
            if onnx_path:  # (the torch block's own error alone, then the export's: which of the two set the bound)
                info["torch_err_vs_f32"] = half_precision_check([want], [want], [ref], "bf16").get(
                    "moec_token_rel_err", {}).get("max")
                info["onnx_oracle"] = how
                if own is not None:
                    info["onnx_err_vs_f32"] = half_precision_check([own], [want], [ref], "bf16").get(
                        "moec_token_rel_err", {}).get("max")
        return float(hc["err"])
    try:  # (f32: moec's f32 criterion, moec.tolerances.f32_check: against the block in float64)
        from moec.tolerances import f32_check
        ref = tensor_to_numpy(float64_reference(block, xs)).astype(np.float64)
    except Exception as e:  # noqa: BLE001  (a block that cannot run in float64: against its f32 output)
        if info is not None:
            info["f64_error"] = _first_line(e)[:200]
        rtol, atol = _tol(dtype)
        return float(np.max(np.abs(got - want) / (atol + rtol * np.abs(want))))
    fc = f32_check([got], [want], [ref])
    if info is not None:
        info.update(err_vs_f64=fc.get("moec_err"), torch_err_vs_f64=fc.get("own_err"))
    return float(fc["err"])


def _onnx_half_run(path, xs):
    """(output, how): the exported graph's own bf16 run on ``xs`` -- onnxruntime on the export; where onnxruntime
    has no bf16 kernel for one of its ops, onnxruntime on moec.verify.half_rounded_model (each op in f32, its
    result rounded to bf16 where the graph stores it).  The ONNX paths' oracle: the exporters write a bf16 linear
    as MatMul and Add, each rounded (torch's addmm rounds once), the TorchScript one GELU as five rounded ops with
    sqrt(2) in bf16, so the graph's own bf16 run is not torch's.  (None, why) where neither runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from moec.frontend.torch_import import tensor_to_numpy
    from moec.verify import half_rounded_model
    x = tensor_to_numpy(xs)
    proto = onnx.load(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0]).astype(np.float64), "onnxruntime"
    except Exception as e:  # noqa: BLE001  (no bf16 kernel on onnxruntime's CPU provider)
        why = _first_line(e)[:200]
    r = half_rounded_model(proto)
    if r is None:
        return None, f"onnxruntime failed ({why}); no rounded f32 copy"
    try:
        s = ort.InferenceSession(r.SerializeToString(), so, providers=["CPUExecutionProvider"])
        y = s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]
    except Exception as e:  # noqa: BLE001
        return None, f"onnxruntime failed ({why}), and on the rounded f32 copy ({_first_line(e)[:200]})"
    return np.asarray(y).astype(np.float64), "onnxruntime, each op in f32 rounded to bf16 (moec.verify.half_rounded_model)"


def float64_reference(block, xs):
    """The block's first output in float64 (a copy of it, on ``xs`` widened): the math an f32 run approximates, as
    moec.compile's f32 verification makes it (moec.verify.Float64Analogue: grouped_mm experts, which have no float64
    kernel in torch, run as transformers' batched_mm, the same function)."""
    from moec.verify import Float64Analogue
    return _out0(Float64Analogue(block)(xs))


def _import_as_compile(module, args, dynamic_dims, cell=None):
    """The module imported as ``moec.compile(module)`` imports it (its default experts implementation choice:
    moec.hf_experts; torch.export and moec's ATen front end, or, where torch.export stops on the module's own
    data-dependent code, moec's trace front end, moec.frontend.torch_trace): ``cell`` gets ``traced`` then."""
    try:
        from moec.hf_experts import AUTO
    except ImportError:  # (a moec before the "auto" choice: import_torch's own default)
        from moec.frontend.torch_import import import_torch
        return import_torch(module, args, dynamic_dims=dynamic_dims)
    try:
        from moec.jit_api import _import
    except ImportError:  # (a moec before the trace front end)
        from moec.hf_experts import import_module
        return import_module(module, args, dynamic_dims, AUTO)
    m, traced = _import(module, args, dynamic_dims, AUTO)
    if traced and cell is not None:
        cell["traced"] = {k: traced.get(k) for k in ("frontend", "dims", "traced_at", "torch_export_stopped")}
        if traced.get("dims") == "static" and dynamic_dims:
            cell["note"] = "traced at the example's static shape (torch.export stopped; the trace is static)"
    return m


EXAMPLE_SHAPES = ((2, 5), (4, 16), (4, 64), (8, 128))


def experts_hit(block, x):
    """(experts the block's eager router sends ``x``'s tokens to, E), read at the experts module's
    ``forward(hidden_states, top_k_index, top_k_weights)`` (or Switch's dispatch mask: _hit_ids); None where the
    block has no such experts module."""
    import torch
    ex = getattr(block, "experts", None)
    E = getattr(ex, "num_experts", None)
    if not isinstance(ex, torch.nn.Module) or not isinstance(E, int):
        return None
    seen = []

    def pre(_mod, args, kwargs):
        idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
        if isinstance(idx, torch.Tensor):
            seen.append(_hit_ids(idx.detach(), E))
    h = ex.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            block(x)
    except Exception:  # noqa: BLE001
        return None
    finally:
        h.remove()
    if not seen:
        return None
    ids = torch.cat(seen)
    return int(torch.unique(ids[(ids >= 0) & (ids < E)]).numel()), E


def _hit_ids(sel, E):
    """The expert ids an experts module's second argument selects: top-k ids [tokens, k], or a one-hot dispatch
    mask [tokens, 1, E] (Switch Transformers' router: a token over the capacity selects none)."""
    if sel.dim() == 3 and sel.shape[-1] == E:  # (the columns with a nonzero entry)
        return sel.reshape(-1, E).ne(0).any(0).nonzero().reshape(-1)
    return sel.reshape(-1)


def example_input(block, tdt, path):
    """The example input an export traces, [batch, seq, D] seeded.  A TorchScript trace records the eager
    experts' loop over the experts its example hits and drops the rest: for that path the smallest of
    EXAMPLE_SHAPES whose tokens the block's eager router sends to every expert (checked: experts_hit)."""
    import torch
    x = None
    for b, s in EXAMPLE_SHAPES if path == "torchscript" else EXAMPLE_SHAPES[:1]:
        x = torch.randn(b, s, D, generator=torch.Generator().manual_seed(2)).to(tdt)
        hit = experts_hit(block, x) if path == "torchscript" else None
        if hit is None or hit[0] >= hit[1]:
            break
    return x


# -- why a block is left alone: measured on the torch block itself -----------------------------------------

def token_dependence(block, T: int = 4, trials: int = 8) -> dict:
    """{j: [t, ...]}: the other tokens whose output changes when token j of a seeded [1, T] input is replaced by
    another random token (``trials`` times); empty for a per-token layer (every MoE layer moe.route expresses)."""
    import torch
    dt = next((p.dtype for p in block.parameters() if p.is_floating_point()), torch.float32)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, T, D, generator=g).to(dt)
    with torch.no_grad():
        y0 = _out0(block(x)).float()
        tol = 1e-5 * float(y0.abs().max()) + 1e-6
        out = {}
        for j in range(T):
            seen = set()
            for _ in range(trials):
                x2 = x.clone()
                x2[0, j] = (3 * torch.randn(D, generator=g)).to(dt)
                d = (_out0(block(x2)).float() - y0).abs().amax(-1)[0]
                seen |= {t for t in range(T) if t != j and float(d[t]) > tol}
            if seen:
                out[j] = sorted(seen)
    return out


def experts_run(block, x):
    """Per token of ``x`` [batch, seq, D], the indices of the expert modules (the children of ``block.experts``) whose
    input rows include that token's row; None where the experts are not separate modules (with weights)."""
    import torch
    ex = getattr(block, "experts", None)
    kids = [c for c in ex.children() if next(c.parameters(), None) is not None] if isinstance(
        ex, torch.nn.Module) else []  # (not NLLB-MoE's token dropout)
    if len(kids) < 2:
        return None
    rows = x.reshape(-1, x.shape[-1])
    ran = [set() for _ in range(rows.shape[0])]
    hooks = []
    for e, kid in enumerate(kids):
        def pre(_m, args, e=e):
            a = args[0].reshape(-1, rows.shape[-1]) if args and isinstance(args[0], torch.Tensor) else None
            if a is not None:
                for t in range(rows.shape[0]):
                    if bool((a == rows[t]).all(-1).any()):
                        ran[t].add(e)
        hooks.append(kid.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            block(x)
    finally:
        for h in hooks:
            h.remove()
    return [sorted(r) for r in ran]


def _doge_keys_from(t: int, T: int) -> set:
    """The tokens whose router logits choose token t's experts in DogeCDMoE: ``router_logits.view(2, T, -1)`` of the
    [T, 2 n_keys] logits makes row t of its first half the (t % 2) half of token t // 2's logits, and row t of its
    second half the ((T + t) % 2) half of token (T + t) // 2's."""
    return {t // 2, (T + t) // 2}


def _nllb_two_fixed_experts(block, x) -> float:
    """max |block(x) - (1 - moe_token_dropout) (w1 expert_1(x) + w2 expert_0(x))| / max |block(x)|, w1 >= w2 the
    router's top-2 softmax probabilities renormalised to sum 1: NLLB-MoE's block in transformers 5.25 is that, whatever
    experts its router ranks first."""
    import torch
    with torch.no_grad():
        y = _out0(block(x)).reshape(-1, D)
        h = x.reshape(-1, D)
        p = torch.softmax(block.router.classifier(h.to(block.router.dtype)), -1)
        top = p.topk(2, -1).values
        w = top / top.sum(-1, keepdim=True)
        keep = 1 - block.experts.moe_token_dropout
        ref = keep * (w[:, :1] * block.experts["expert_1"](h) + w[:, 1:] * block.experts["expert_0"](h))
    return float((y - ref).abs().max() / y.abs().max())


def diagnose(block) -> str:
    """What is missing for a block recognize-moe leaves alone, where measuring the torch block shows that it is not a
    per-token MoE layer (its tokens' outputs depend on other tokens, or every token runs the same experts): the
    measurement, with the cause in transformers' code where the block is one whose cause is known and the measurement
    confirms it; "" where neither holds (the reason's own "what is missing" then stands)."""
    import torch
    T = 4
    dep = token_dependence(block, T)
    if dep:
        meas = "; ".join(f"{j} -> {v}" for j, v in dep.items())
        if type(block).__name__ == "DogeCDMoE" and dep == {
                j: sorted(t for t in range(T) if t != j and j in _doge_keys_from(t, T)) for j in range(T)
                if any(t != j and j in _doge_keys_from(t, T) for t in range(T))}:
            return ("not a per-token MoE layer, so recognize-moe leaves it alone (moe.route routes each token by its own "
                    "scores): DogeCDMoE's `router_logits.view(2, bsz * seq_len, -1)` splits the [T, 2 sqrt(E)] router "
                    "logits across tokens, so token t's experts are chosen by the logits of tokens floor(t/2) and "
                    "floor((T+t)/2) (T = batch x seq; transformers keeps it for the checkpoints' outputs); measured at "
                    f"T = {T}, replacing token j changes the other tokens' outputs j -> [t]: {meas}, as that predicts; "
                    "moec.compile builds it as a plain graph (the moec.compile table)")
        return (f"not a per-token layer, so recognize-moe leaves it alone: a token's output depends on other tokens "
                f"(measured at T = {T}, replacing token j changes the outputs of tokens j -> [t]: {meas})")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)).to(
        next((p.dtype for p in block.parameters() if p.is_floating_point()), torch.float32))
    ran = experts_run(block, x)
    n = sum(next(c.parameters(), None) is not None for c in block.experts.children()) if ran is not None else 0
    if ran and all(r == ran[0] for r in ran) and len(ran[0]) < n:
        same = ", ".join(f"expert_{e}" for e in ran[0])
        if type(block).__name__ == "NllbMoeSparseMLP" and ran[0] == [0, 1]:
            err = _nllb_two_fixed_experts(block, x)
            if err < 1e-5:
                return ("not an MoE layer in this transformers, so recognize-moe leaves it alone: NllbMoeExperts "
                        "applies one_hot to the router's top-1 mask, which is one-hot already, so the expert run is the "
                        "mask's value: every token runs expert_1 weighted by its top-1 probability and expert_0 weighted "
                        "by the rest (its top-2 probability), whatever experts the router ranks first; measured on "
                        f"[2, 5]: every token ran {same} and no other of the {n}, and the block equals "
                        f"(1 - moe_token_dropout) (w1 expert_1 + w2 expert_0) to {err:.1g} of its largest output; "
                        "moec.compile builds it as a plain graph (the moec.compile table)")
        return (f"every token runs the same experts ({same} of {n}; measured on [2, 5]), so the router does not "
                "choose the expert FFN per token: not an MoE layer")
    return ""


def run_cell(mt, block, impl, dtype, dims, path, cfg_json) -> dict:
    """One cell: import the block through ``path``, recognise, check.  Never raises."""
    import torch
    dynamic = dims == "dynamic"
    tdt = torch.bfloat16 if dtype == "bf16" else torch.float32
    x = example_input(block, tdt, path)
    if tuple(x.shape[:2]) != EXAMPLE_SHAPES[0]:  # (the export's cache key: its example's shape)
        cfg_json += "|example:" + "x".join(map(str, x.shape[:2]))
    cell = {"arch": mt, "impl": impl, "dtype": dtype, "dims": dims, "path": path}
    f32 = [n for n, t in block.state_dict().items() if t.is_floating_point() and t.dtype == torch.float32]
    if dtype == "bf16" and f32:  # (kept in f32 as from_pretrained does: keep_f32; part of the export's cache key)
        cell["f32_kept"] = f32
        cfg_json += "|f32:" + ",".join(f32)
    t0 = time.time()
    try:
        stage = "export"
        if path == "torch.export":
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                m = _import_as_compile(_wrap_first(block), (x,), {0: {0: "B", 1: "S"}} if dynamic else {}, cell)
            swapped = m.attrs.get("moec.experts_implementation")
            if swapped:  # moec.compile's front end exported transformers' experts as another implementation
                cell["exported_as"] = json.loads(swapped).get("exported_as")
            fell = [str(i.message) for i in w if "could not be exported with a dynamic" in str(i.message)]
            if fell and dynamic:
                why = re.search(r"dynamic token dimension \((.*)\); compiling", fell[0])
                cell["note"] = "torch.export specialised the dims (static): " + (why.group(1) if why else fell[0])[:250]
        else:
            import onnx
            from moec.frontend.onnx_import import import_model
            p = _onnx_export(block, x, _export_key(mt, impl, dtype, dims, path, cfg_json), path == "dynamo", dynamic)
            stage = "import"
            m = import_model(onnx.load(p))
        stage = "recognise"
        layers = _recognise(m)
        if not layers:
            cell.update(status="no", stage="recognise", reason=_why_not(m))
            try:
                why = diagnose(block)
            except Exception as e:  # noqa: BLE001  (the measurement itself failed: the reason's own text stands)
                why, cell["diagnose_error"] = "", _first_line(e)
            if why:  # (measured on the torch block: what is missing is not a form recognize-moe could learn)
                cell["missing"] = why
        else:
            la = layers[0]
            cell.update(status="recognised", family=la.get("family"), routing=la.get("routing"),
                        E=la.get("E"), k=la.get("k"), n_layers=len(layers))
            try:
                info: dict = {}
                err = _exact(m, block, dtype, dynamic and "note" not in cell, x, info,
                             onnx_path=None if path == "torch.export" else p)
                cell.update(info)
                cell["err"] = err
                cell["exact"] = bool(err <= 1.0)
            except Exception as e:  # noqa: BLE001
                cell.update(exact=False, check_error=_first_line(e))
    except Exception as e:  # noqa: BLE001
        cell.update(status="no", stage=stage, reason=_first_line(e))
    cell["seconds"] = round(time.time() - t0, 2)
    cell["at"] = time.strftime("%H:%M", time.gmtime())
    return cell


def compile_cell(mt, block) -> dict:
    """moec.compile (torch.export, C build, verification against the block) at f32, batched_mm."""
    import torch
    import moec
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    cell = {"arch": mt, "path": "moec.compile", "impl": "batched_mm", "dtype": "f32", "dims": "dynamic"}
    t0 = time.time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = moec.compile(_wrap_first(block), (x,), dynamic_dims={0: {0: "B", 1: "S"}}, cache=False)
        fams = [la["family"] for la in cm.stats.report.get("moe_layers", [])]
        rep = cm.stats.report
        cell.update(status="recognised" if fams else "plain", family=fams[0] if fams else None,
                    verified=rep.get("verified"), criterion=rep.get("criterion"), verification=cm.stats.verification,
                    **({"f32_vs_float64": rep["f32_vs_float64"]} if rep.get("f32_vs_float64") else {}))
    except Exception as e:  # noqa: BLE001
        cell.update(status="no", stage="compile", reason=_first_line(e))
    cell["seconds"] = round(time.time() - t0, 2)
    return cell


def causal_lm_cell(mt) -> dict:
    """The 2-layer model (CausalLM where there is one) on the torch.export path, input_ids [batch, seq]:
    how many of its sparse blocks are recognised, of those whose forward runs on this input (forward hooks
    during the eager run; the others, e.g. experts behind a branch a text input never takes, are listed in
    ``blocks_not_run`` and not counted)."""
    import torch
    cell = {"arch": mt, "path": "causal_lm", "impl": "batched_mm", "dtype": "f32", "dims": "dynamic"}
    t0 = time.time()
    try:
        model = build_model(mt, "batched_mm", "f32")
        blocks = sparse_blocks(model)
        names = {id(m): n for n, m in model.named_modules()}
        n_blocks = len(blocks)
        cell["blocks"] = n_blocks
        cell["model"] = type(model).__name__
        ran = set()  # (the blocks whose forward runs on this input: a block behind a branch the input never
        #             takes, as ernie4_5_vl's vision experts on a text input, is not in the exported graph)
        hooks = [b.register_forward_hook(lambda mod, _a, _o: ran.add(id(mod))) for b in blocks]

        class Logits(torch.nn.Module):
            def __init__(self, mdl):
                super().__init__()
                self.m = mdl

            def forward(self, ids):
                if getattr(self.m.config, "is_encoder_decoder", False):
                    # (Switch, NLLB-MoE: the decoder reads ids too; the encoder's attention mask given, as a
                    # tokenizer gives it: under torch.export Switch's encoder does not make its own)
                    return _out0(self.m(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=ids,
                                        use_cache=False))
                return _out0(self.m(input_ids=ids, use_cache=False))

        ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(5))
        try:
            with torch.no_grad():
                Logits(model).eval()(ids)
        except Exception as e:  # noqa: BLE001
            cell.update(status="no", stage="causal_lm",
                        reason=f"the tiny model fails in torch itself (survey config): {_first_line(e)}"[:400])
            cell["seconds"] = round(time.time() - t0, 2)
            return cell
        finally:
            for h in hooks:
                h.remove()
        idle = [names.get(id(b), "?") for b in blocks if id(b) not in ran]
        if idle:
            cell["blocks_not_run"] = idle
            n_blocks -= len(idle)
            cell["blocks"] = n_blocks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = _import_as_compile(Logits(model).eval(), (ids,), {0: {0: "B", 1: "S"}})
        layers = _recognise(m)
        cell["recognised"] = len(layers)
        cell["families"] = sorted({la.get("family") for la in layers})
        cell["status"] = "recognised" if layers and len(layers) == n_blocks else "no"
        if len(layers) < n_blocks:
            cell["reason"] = _why_not(m)
    except Exception as e:  # noqa: BLE001
        cell.update(status="no", stage="causal_lm", reason=_first_line(e))
    cell["seconds"] = round(time.time() - t0, 2)
    return cell


def _moec_rev() -> str:
    """The moec commit surveyed (+ "dirty": uncommitted changes in the working tree)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "?"


def _works(c) -> bool:
    return c is not None and c.get("status") == "recognised" and bool(c.get("exact"))


def survey_arch(mt, paths=PATHS, impls=None, dtypes=DTYPES, dims_list=("dynamic", "static"), want=None,
                causal=True, verbose=False, prev=None, missing=False, gate=False) -> dict:
    """Every cell of one model type.  ``prev``: this model type's cells of an earlier run; ``missing``: only
    the cells ``prev`` lacks; ``gate``: a bf16 or static-dims cell only where its path and experts
    implementation work in f32 with dynamic dims (recognised and exact, in ``prev`` or in this run): where
    that cell fails already, the table gives its reason (``render``)."""
    import torch
    torch.set_num_threads(1)
    res = {"arch": mt, "cells": [], "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "moec": _moec_rev()}
    t0 = time.time()
    try:
        model = build_model(mt, "batched_mm", "f32")
    except Exception as e:  # noqa: BLE001
        res.update(built=False, reason=_first_line(e))
        return res
    blocks = sparse_blocks(model)
    res["model"] = type(model).__name__
    res["n_blocks"] = len(blocks)
    res["n_layers"] = getattr(model.config, "num_hidden_layers", None)
    if not blocks:
        res.update(built=True, reason="no sparse-expert block in the built model")
        return res
    res["built"] = True
    res["block"] = type(blocks[0]).__name__
    ex = getattr(blocks[0], "experts", None)
    res["experts"] = type(ex).__name__ if ex is not None else "(no experts module)"
    supported = experts_impls(blocks[0])
    res["impls"] = list(supported)
    cfg_json = model.config.to_json_string()
    if inline_block(blocks[0]):
        res["inline"] = True
        impls = []  # (the 2-layer model only)
    known = {_key(c): c for c in prev or []}

    def wanted(path, impl, dtype, dims) -> bool:
        if dims == "static" and dtype != "f32":
            return False
        if want is not None and not want(path, impl, dtype, dims):
            return False
        if missing and (path, impl, dtype, dims) in known:
            return False
        if gate and (dtype, dims) != ("f32", "dynamic"):
            return _works(known.get((path, impl, "f32", "dynamic")))
        return True

    for impl in supported if impls is None else [i for i in impls if i in supported]:
        for dtype in dtypes:
            todo = [(dims, path) for dims in dims_list for path in paths if wanted(path, impl, dtype, dims)]
            if not todo:
                continue
            mdl = build_model(mt, "batched_mm" if impl == "-" else impl, dtype)
            blk = sparse_blocks(mdl)[0].eval()
            for dims, path in todo:
                if not wanted(path, impl, dtype, dims):  # (a static cell whose dynamic one failed just now)
                    continue
                with _quiet():
                    c = run_cell(mt, blk, impl, dtype, dims, path, cfg_json)
                c["moec"] = res["moec"]
                res["cells"].append(c)
                known[_key(c)] = c
                if verbose:
                    print(json.dumps(c), flush=True)
    if causal:
        blk_ok = [c for c in known.values() if c["path"] == "torch.export" and c["dtype"] == "f32"
                  and c["impl"] in ("batched_mm", "-") and c["dims"] == "dynamic"]  # (this run's or ``prev``'s)
        if res.get("inline") or not blk_ok or blk_ok[0].get("status") == "recognised" or len(paths) == 0:
            c = causal_lm_cell(mt)
        else:  # (saves the survey's time: the model's layers are that block)
            c = {"arch": mt, "path": "causal_lm", "impl": "batched_mm", "dtype": "f32", "dims": "dynamic",
                 "status": "skipped", "reason": "not run: its block is not recognised on the torch.export path"}
        c["moec"] = res["moec"]
        res["cells"].append(c)
        if verbose:
            print(json.dumps(c), flush=True)
    if mt in COMPILE_FEW and causal and "torch.export" in paths:
        mdl = build_model(mt, "batched_mm", "f32")
        c = compile_cell(mt, sparse_blocks(mdl)[0].eval())
        res["cells"].append(c)
        if verbose:
            print(json.dumps(c), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def architectures() -> list:
    """[(row name, model type to build, modeling module)] for every candidate module: the first of
    its text model types that builds and has a sparse block (else the first tried, with its error)."""
    out = []
    for mod, mts in sorted(candidates().items()):
        out.append((mod, text_types(mts)))
    return out


# -- transformers 4.x fixtures (tests/fixtures/hf4x, made by its make_fixtures.py in a 4.x venv) ------------

FIXTURES_4X = os.path.join(HERE, "fixtures", "hf4x")


def survey_fixtures() -> list:
    """Each committed 4.x export: imported, recognised, and compared with what the 4.x module computed
    (reference_outputs.npz) at every recorded size; each recorded export failure as a cell too."""
    import gzip
    import numpy as np
    import onnx
    from moec.frontend.onnx_import import import_model
    from moec.ir.interpreter import run as ir_run
    man_path = os.path.join(FIXTURES_4X, "manifest.json")
    if not os.path.exists(man_path):
        return []
    man = json.load(open(man_path))
    refs = np.load(os.path.join(FIXTURES_4X, "reference_outputs.npz"))
    out = []
    for name, fx in sorted(man["fixtures"].items()):
        cell = {"fixture": name, "arch": fx["arch"], "kind": fx["kind"], "exporter": fx["exporter"],
                "transformers": man["versions"].get("transformers")}
        try:
            with gzip.open(os.path.join(FIXTURES_4X, name + ".onnx.gz"), "rb") as fh:
                m = import_model(onnx.load_from_string(fh.read()))
            layers = _recognise(m)
            if not layers:
                cell.update(status="no", reason=_why_not(m))
            else:
                cell.update(status="recognised", family=layers[0].get("family"), n_layers=len(layers))
                inp = "input_ids" if fx["kind"] == "causal_lm" else "x"
                outn = "logits" if fx["kind"] == "causal_lm" else "y"
                worst = 0.0
                for key in refs.files:
                    if key.startswith(fx["reference"] + f"/{inp}_"):
                        tag = key.rsplit("_", 1)[1]
                        got = np.asarray(list(ir_run(m, [refs[key]]).values())[0], np.float64)
                        want = refs[f"{fx['reference']}/{outn}_{tag}"].astype(np.float64)
                        worst = max(worst, float(np.max(np.abs(got - want) / (1e-5 + 1e-4 * np.abs(want)))))
                cell.update(err=worst, exact=worst <= 1.0)
        except Exception as e:  # noqa: BLE001
            cell.update(status="no", reason=_first_line(e))
        out.append(cell)
    for name, why in sorted(man.get("failed", {}).items()):
        ref, exporter = name.rsplit("_", 1)  # (the architecture as the fixture of the same reference made with the
        made = next((fx for fx in man["fixtures"].values() if fx.get("reference") == ref), {})  # other exporter says)
        out.append({"fixture": name, "arch": made.get("arch", ref), "kind": made.get("kind"), "exporter": exporter,
                    "status": "no export",
                    "reason": "4.x export failed: " + why.split(" <- ")[-1][:300]})
    return out


# -- the whole survey ------------------------------------------------------------------------------

def _workers(mts, timeout, extra_args=()) -> dict:
    """Survey several model types in one subprocess (torch / transformers / moec import once: about a
    minute on a loaded machine); {model type: result}.  Those a crash or the timeout left without a
    result are run again one by one."""
    cmd = [sys.executable, os.path.abspath(__file__), "--arch", ",".join(mts), "--json", *extra_args]
    out, t0 = {}, time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * len(mts), cwd=ROOT)
        stdout, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = f"timed out after {timeout * len(mts)} s", None
    for ln in stdout.splitlines():
        if ln.startswith("{\"arch\""):
            r = json.loads(ln)
            out[r["arch"]] = r
    missing = [mt for mt in mts if mt not in out]
    if missing and len(mts) > 1:
        for mt in missing:
            out.update(_workers([mt], timeout, extra_args))
    elif missing:
        tail = (err.strip().splitlines() or ["(no output)"])[-1] if rc is not None else err
        out[missing[0]] = {"arch": missing[0], "built": None, "cells": [], "seconds": round(time.time() - t0, 1),
                           "reason": f"survey process failed (exit {rc}): {tail[:300]}"}
    return out


def _key(c) -> tuple:
    return (c["path"], c.get("impl"), c.get("dtype"), c.get("dims"))


def survey_all(out_json, timeout, only=None, extra_args=(), batch=6) -> list:
    """Survey every architecture (or ``only`` these modeling modules), one subprocess each; cells of
    an earlier run that this run does not redo are kept (so the matrix can be run in tiers)."""
    results = []
    prev = {}
    if os.path.exists(out_json):
        try:
            prev = {r["module"]: r for r in json.load(open(out_json))["results"]}
        except Exception:  # noqa: BLE001
            prev = {}
    todo = []
    for mod, mts in architectures():
        if only and mod not in only:
            continue
        old = prev.get(mod)
        if "lm" in extra_args and old is not None and old.get("n_blocks") and not old.get("inline") and \
                old.get("arch") not in COMPILE_FEW:
            blk = [c for c in old.get("cells", []) if c["path"] == "torch.export" and c["dtype"] == "f32"
                   and c["impl"] in ("batched_mm", "-") and c["dims"] == "dynamic"]
            if blk and blk[0].get("status") != "recognised":  # (the model's layers are that block)
                old["cells"] = [c for c in old["cells"] if c["path"] != "causal_lm"] + [
                    {"arch": old["arch"], "path": "causal_lm", "impl": "batched_mm", "dtype": "f32",
                     "dims": "dynamic", "status": "skipped",
                     "reason": "not run: its block is not recognised on the torch.export path"}]
                continue
        order = list(mts)
        if old is not None and old.get("arch") in order:  # the model type that worked last time first
            order.remove(old["arch"])
            order.insert(0, old["arch"])
        todo.append((mod, order))
    done = {}
    for i in range(0, len(todo), batch):
        part = todo[i:i + batch]
        got = _workers([order[0] for _, order in part], timeout, extra_args)
        for mod, order in part:
            tried = [got[order[0]]]
            for mt in order[1:]:  # (its first model type has no sparse block: the module's others)
                if tried[-1].get("built") and tried[-1].get("n_blocks"):
                    break
                tried.append(_workers([mt], timeout, extra_args)[mt])
            res = next((r for r in tried if r.get("built") and r.get("n_blocks")), None)
            if res is None:  # none of its model types has a sparse block: the first one's reason
                res = next((r for r in tried if r.get("built") is not False), tried[0])
            old = prev.get(mod)
            if old is not None and old.get("arch") == res.get("arch"):
                now = {_key(c): c for c in res.get("cells", [])}

                def stale(c) -> bool:  # (a bf16 / static-dims cell run while its f32 dynamic cell worked, which this
                    #                   run found failing: the table gives that one's reason, "no, as f32")
                    f = now.get((c["path"], c.get("impl"), "f32", "dynamic"))
                    return (c.get("dtype"), c.get("dims")) != ("f32", "dynamic") and f is not None and not _works(f)
                res["cells"] = [c for c in old.get("cells", []) if _key(c) not in now and not stale(c)] + res.get(
                    "cells", [])
            res["module"] = mod
            res["tried"] = [t["arch"] for t in tried]
            done[mod] = res
            print(f"{mod:24s} {res['arch']:28s} {_summary(res)}  ({res.get('seconds', '?')} s)", flush=True)
        _save(out_json, [done.get(m) or prev[m] for m in sorted(set(prev) | set(done))])
    return [done.get(m) or prev[m] for m in sorted(set(prev) | set(done))]


def merge(out_json, other_json):
    """Cells of another survey JSON (a tier run with its own ``--out``) into ``out_json``: an
    architecture's cells of the same key are replaced."""
    d = json.load(open(out_json))
    o = json.load(open(other_json))
    by = {r["module"]: r for r in d["results"]}
    for r in o["results"]:
        mine = by.get(r["module"])
        if mine is None or mine.get("arch") != r.get("arch"):
            if mine is None or not mine.get("n_blocks"):
                by[r["module"]] = r
            continue
        keys = {_key(c) for c in r.get("cells", [])}
        cells = [c for c in mine.get("cells", []) if _key(c) not in keys] + r.get("cells", [])
        if r.get("at", "") >= mine.get("at", ""):
            mine.update({k: v for k, v in r.items() if k != "cells"})
        mine["cells"] = cells
    _save(out_json, [by[m] for m in sorted(by)])


def _save(out_json, results, fixtures=None):
    import torch
    import transformers
    tmp = out_json + ".tmp"
    if fixtures is None and os.path.exists(out_json):
        try:
            fixtures = json.load(open(out_json)).get("fixtures_4x")
        except Exception:  # noqa: BLE001
            fixtures = None
    with open(tmp, "w") as fh:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results,
                   "fixtures_4x": fixtures or []}, fh, indent=0)
    os.replace(tmp, out_json)


def _summary(res) -> str:
    if not res.get("built"):
        return f"not built: {res.get('reason')}"
    if not res.get("n_blocks"):
        return res.get("reason", "")
    cells = [c for c in res["cells"] if c["path"] in PATHS]
    ok = sum(c["status"] == "recognised" for c in cells)
    return f"{ok}/{len(cells)} cells recognised"


def _tier1(path, impl, dtype, dims) -> bool:
    """The first tier (cheapest): f32, dynamic dims, moec's torch.export path of the batched experts
    (or the only experts) and the TorchScript export of every implementation (the dynamo exports are
    slow: tier 2)."""
    return dtype == "f32" and dims == "dynamic" and (path == "torchscript" or (
        path == "torch.export" and impl in ("batched_mm", "-")))


def _tier2(path, impl, dtype, dims) -> bool:
    """f32, dynamic dims: the rest but the dynamo exports of eager / grouped_mm experts (slow to fail:
    torch.onnx tries every torch.export strategy)."""
    return dtype == "f32" and dims == "dynamic" and not _tier1(path, impl, dtype, dims) and not (
        path == "dynamo" and impl in ("eager", "grouped_mm"))


TIERS = {"1": dict(want=_tier1, causal=False),
         "lm": dict(want=lambda *c: False, causal=True),  # the 2-layer models (and moec.compile of a few)
         "2": dict(want=_tier2, causal=False),
         # bf16, static dims (where the path works in f32), the dynamo exports of eager / grouped_mm
         "3": dict(want=lambda *c: not _tier1(*c) and not _tier2(*c), causal=False, gate=True),
         # tier 3's cells of batched_mm (or the only experts) on every path and of eager on the TorchScript export
         # (moec's torch.export path exports eager / grouped_mm experts as the same batched_mm graph: cheaper first)
         "3a": dict(want=lambda p, i, dt, dims: (dt, dims) != ("f32", "dynamic") and (
             i in ("batched_mm", "-") or (p, i) == ("torchscript", "eager")), causal=False, gate=True),
         # every f32 cell with dynamic dims (tiers 1 and 2 and the dynamo exports of eager / grouped_mm)
         "f32": dict(want=lambda p, i, dt, dims: dt == "f32" and dims == "dynamic", causal=False)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", help="one model type (default: the whole survey)")
    ap.add_argument("--path", choices=PATHS + ("causal_lm",), action="append",
                    help="causal_lm: only the 2-layer model (batched_mm, f32)")
    ap.add_argument("--impl", choices=IMPLS + ("-",), action="append")
    ap.add_argument("--dtype", choices=DTYPES, action="append")
    ap.add_argument("--dims", choices=("dynamic", "static"), action="append")
    ap.add_argument("--tier", choices=list(TIERS), help="1: torch.export of batched_mm and TorchScript export, "
                    "f32, dynamic dims; lm: the 2-layer models; 2: the rest of f32 with dynamic dims; 3: bf16, "
                    "static dims (where the path works in f32) and the dynamo exports of eager / grouped_mm "
                    "(default: all, in that order); 3a: tier 3's cells of batched_mm and of the TorchScript "
                    "export of eager; f32: every f32 cell with dynamic dims")
    ap.add_argument("--causal", choices=("yes", "no"), default=None, help="the 2-layer CausalLM cell")
    ap.add_argument("--json", action="store_true", help="(worker) print the result as one JSON line")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the candidate modules and their model types")
    ap.add_argument("--only", nargs="*", help="whole survey: only these modeling modules (the rest kept)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per architecture")
    ap.add_argument("--batch", type=int, default=6, help="architectures per worker process (one at a time; "
                    "each imports torch, transformers and moec once)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "real_models.json"))
    ap.add_argument("--render", action="store_true", help="only write docs/real_models.md from the .json")
    ap.add_argument("--failures", metavar="MD", help="write the failing cells with reproducer commands to MD")
    ap.add_argument("--fixtures", action="store_true", help="only (re)survey the committed 4.x fixtures")
    ap.add_argument("--merge", metavar="JSON", help="merge the cells of another survey JSON into --out")
    ap.add_argument("--missing", action="store_true", help="only the cells --out does not have yet (with --tier, "
                    "--only, --path, ...: fill in part of the matrix, merged into --out)")
    ap.add_argument("--tables", action="store_true", help="rewrite the expectation tables of "
                    "tests/test_hf_models.py from --out")
    a = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    warnings.simplefilter("ignore")
    try:
        import transformers
        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    if a.list:
        for mod, mts in architectures():
            print(mod, mts)
        return 0
    if a.arch and "," in a.arch:  # (a worker for several architectures: one JSON line each)
        for mt in a.arch.split(","):
            sub = [x for x in (argv if argv is not None else sys.argv[1:])]
            sub[sub.index("--arch") + 1] = mt
            try:
                with _quiet():
                    main(sub)
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"arch": mt, "built": None, "reason": f"survey failed: {_first_line(e)}",
                                  "cells": []}), flush=True)
        return 0
    if a.arch:
        tier = TIERS.get(a.tier) or {}
        if a.path == ["causal_lm"]:
            a.path, a.causal, a.impl = list(), "yes", []
        prev = None
        if os.path.exists(a.out):
            prev = next((r.get("cells", []) for r in json.load(open(a.out))["results"] if r.get("arch") == a.arch),
                        None)
        res = survey_arch(a.arch, paths=tuple(PATHS if a.path is None else a.path), impls=a.impl,
                          dtypes=tuple(a.dtype or tier.get("dtypes") or DTYPES),
                          dims_list=tuple(a.dims or tier.get("dims") or ("dynamic", "static")),
                          want=tier.get("want"),
                          causal=(a.causal == "yes") if a.causal else tier.get("causal", True),
                          verbose=a.verbose, prev=prev, missing=a.missing, gate=tier.get("gate", False))
        print(json.dumps(res) if a.json else json.dumps(res, indent=1), file=sys.__stdout__, flush=True)
        return 0
    if a.merge:
        merge(a.out, a.merge)
        render(a.out, os.path.join(os.path.dirname(a.out), "real_models.md"))
        return 0
    if a.failures:
        write_failures(a.out, a.failures)
        return 0
    if a.tables:
        changed = write_tables(a.out)
        print(f"{os.path.relpath(TEST_FILE, ROOT)}: " + (", ".join(changed) + " rewritten" if changed else "unchanged"))
        return 0
    if a.fixtures or not (a.render or a.tier or a.only):
        with _quiet():
            fx = survey_fixtures()
        _save(a.out, json.load(open(a.out))["results"] if os.path.exists(a.out) else [], fx)
        if a.fixtures:
            render(a.out, os.path.join(os.path.dirname(a.out), "real_models.md"))
            return 0
    if not a.render:
        for t in ([a.tier] if a.tier else list(TIERS)):
            extra = ["--tier", t, "--out", a.out] + (["--missing"] if a.missing else [])
            for k in ("path", "impl", "dtype", "dims"):
                for v in getattr(a, k) or ():
                    extra += [f"--{k}", v]
            survey_all(a.out, a.timeout, only=a.only, extra_args=extra, batch=a.batch)
    render(a.out, os.path.join(os.path.dirname(a.out), "real_models.md"))
    return 0




def write_failures(out_json, out_md):
    """The failing cells, one line each with the smallest command that reproduces it (for whoever fixes
    recognition)."""
    d = json.load(open(out_json))
    L = [f"# Survey failures (transformers {d.get('transformers')}, {d.get('date')})", "",
         "Generated by `python tests/hf_survey.py --failures`.  One line per architecture x path x experts impl "
         "x dtype x dims that is not recognised-and-exact: the first failure reason and the command that "
         "reproduces it (prints the cell as JSON; add nothing else).", ""]
    for r in sorted(d["results"], key=lambda r: r["module"]):
        if not r.get("built") or not r.get("n_blocks"):
            L.append(f"- **{r['module']}** (`{r['arch']}`): not surveyed: {r.get('reason')}")
            continue
        bad = [c for c in r["cells"] if not (c.get("status") == "recognised" and c.get("exact", True))
               and c.get("status") != "skipped"]
        if not bad:
            continue
        by = {_key(c): c for c in r["cells"]}
        L += ["", f"## {r['module']} (`{r['arch']}`, {r.get('block')}, experts {r.get('experts')})", ""]
        for c in bad:
            why = c.get("reason") or c.get("check_error") or f"recognised as {c.get('family')} but not exact"
            if c.get("status") == "recognised" and not c.get("check_error"):
                why = f"recognised as {c.get('family')} but differs from torch (scaled error {c.get('err', float('nan')):.3g})"
            f32 = by.get((c["path"], c.get("impl"), "f32", "dynamic"))
            if c.get("dtype") == "bf16" and _works(f32):
                why = _BF16 + why
            what = cell_missing(c, why)
            why = why + (f" (missing: {what})" if what else "")
            if c["path"] in PATHS:
                cmd = (f"python tests/hf_survey.py --arch {r['arch']} --path {c['path']} --impl {c['impl']} "
                       f"--dtype {c['dtype']} --dims {c['dims']} -v")
            else:
                cmd = f"python tests/hf_survey.py --arch {r['arch']} --path causal_lm -v"
            L.append(f"- {c['path']} / {c['impl']} / {c['dtype']} / {c['dims']}: {why[:700]}  \n  `{cmd}`")
    with open(out_md, "w") as fh:
        fh.write("\n".join(L) + "\n")


# -- the test expectations (tests/test_hf_models.py) -----------------------------------------------

TEST_FILE = os.path.join(HERE, "test_hf_models.py")
_ROUTING_KEYS = ("scoring", "norm", "post", "k", "n_group", "topk_group", "group_score", "scale", "capacity")


def _cell(r, path, impl, dtype="f32", dims="dynamic"):
    """The cell of ``impl`` (the only experts, "-", for batched_mm where the block has no implementations)."""
    mine = impl if impl in r.get("impls", []) else ("-" if impl == "batched_mm" else None)
    return next((c for c in r.get("cells", []) if _key(c) == (path, mine, dtype, dims)), None)


def _reason_pattern(why: str) -> str:
    """A regular expression for a failure reason that names no node, number or file line (those change with
    the trace): its leading words, escaped; anchored at the start where it is recognize-moe's own reason."""
    exc = re.match(r"^UnsupportedError: model '[^']*': ", why)
    if exc:
        why = why[exc.end():]
    m = re.match(r"[^'\"\[\]\d(]*", why)
    pre = m.group(0) if m else why[:40]
    if len(pre) < 25:
        pre = why[:60]
    if re.search(r"\w_$", pre.rstrip()):  # (a node name: may change with the trace)
        pre = pre.rstrip().rsplit(" ", 1)[0]
    return ("" if exc else "^") + re.escape(pre.rstrip()).replace("\\ ", " ")


def expectation_tables(out_json) -> dict:
    """The tables tests/test_hf_models.py checks, from the survey's cells (f32, dynamic dims):
    RECOGNISED {model type: (family, routing[, E])} and NOT_RECOGNISED {model type: reason pattern} on the
    torch.export path of batched_mm (or the only experts); BF16_RECOGNISED and STATIC_RECOGNISED: the
    recognised ones whose bf16 / static-dims cell of that path is recognised and exact too;
    LEGACY_EXPERTS (experts not dispatched on ``_experts_implementation``); CAUSAL_RECOGNISED (2-layer
    models with every sparse layer recognised); ONNX_RECOGNISED {exporter: model types} (batched_mm
    export recognised and exact, as the same family)."""
    d = json.load(open(out_json))
    rec, notrec, causal, legacy, bf16, static = {}, {}, [], [], [], []
    onnx = {"dynamo": [], "torchscript": []}
    for r in sorted(d["results"], key=lambda r: r["arch"]):
        if not r.get("built") or not r.get("n_blocks") or r.get("inline"):
            continue
        c = _cell(r, "torch.export", "batched_mm")
        if c is None:
            continue
        if r.get("impls") == ["-"]:
            legacy.append(r["arch"])
        if _works(c):
            rt = c.get("routing") or {}
            keep = {k: rt[k] for k in _ROUTING_KEYS if k in rt and (rt.get("n_group") or k not in (
                "n_group", "topk_group", "group_score"))}
            if not keep.get("capacity"):  # (0: no capacity)
                keep.pop("capacity", None)
            if keep.get("scale") in (None, 1.0):
                keep.pop("scale", None)
            else:
                keep["scale"] = float(f"{keep['scale']:.7g}")
            rec[r["arch"]] = (c["family"], keep, c.get("E"))
            lm = next((x for x in r["cells"] if x["path"] == "causal_lm"), None)
            if lm is not None and lm.get("status") == "recognised":
                causal.append(r["arch"])
            for e in onnx:
                oc = _cell(r, e, "batched_mm")
                if _works(oc) and oc.get("family") == c["family"]:
                    onnx[e].append(r["arch"])
            if _works(_cell(r, "torch.export", "batched_mm", "bf16")):
                bf16.append(r["arch"])
            if _works(_cell(r, "torch.export", "batched_mm", "f32", "static")):
                static.append(r["arch"])
        elif c.get("status") != "recognised":  # (recognised but not exact: in neither table, the docs say why)
            notrec[r["arch"]] = (_reason_pattern(c.get("reason") or ""), cell_missing(c, c.get("reason") or ""))
    return dict(RECOGNISED=rec, NOT_RECOGNISED=notrec, LEGACY_EXPERTS=legacy, CAUSAL_RECOGNISED=causal,
                BF16_RECOGNISED=bf16, STATIC_RECOGNISED=static, ONNX_RECOGNISED=onnx)


def _names(names, indent) -> list:
    """A tuple of names wrapped at 110 columns."""
    lines, cur = [], ""
    for n in names:
        item = json.dumps(n) + ", "
        if len(" " * indent + cur + item) > 110:
            lines.append(" " * indent + cur.rstrip())
            cur = ""
        cur += item
    if cur:
        lines.append(" " * indent + cur.rstrip())
    return lines


def _table_source(name, value) -> str:
    hdr = f"{name}: dict = " if isinstance(value, dict) else f"{name} = "
    if name == "RECOGNISED":
        body = [f"    {json.dumps(a)}: ({json.dumps(f)}, {json.dumps(k)}" + (f", {E}" if E not in (None, 4) else "") + "),"
                for a, (f, k, E) in value.items()]
        return hdr + "{\n" + "\n".join(body) + "\n}"
    if name == "NOT_RECOGNISED":
        body = []
        for a, (rx, what) in value.items():
            if what:
                import textwrap
                body += ["    # " + ln for ln in textwrap.wrap(what, 104)]
            body.append(f"    {json.dumps(a)}: {rx!r},")
        return hdr + "{\n" + "\n".join(body) + "\n}"
    if isinstance(value, dict):
        body = []
        for k, v in value.items():
            body += [f"    {json.dumps(k)}: ("] + _names(v, 8) + ["    ),"]
        return hdr + "{\n" + "\n".join(body) + "\n}"
    return hdr + "(\n" + "\n".join(_names(value, 4)) + "\n)"


def write_tables(out_json, test_file=TEST_FILE) -> list:
    """Rewrite the expectation tables (module-level assignments) of ``test_file`` from the survey's cells;
    the names whose table changed."""
    import ast
    src = open(test_file).read()
    lines = src.splitlines(keepends=True)
    tables = expectation_tables(out_json)
    spans = {}
    for node in ast.parse(src).body:
        tgt = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(tgt, ast.Name) and tgt.id in tables:
            spans[tgt.id] = (node.lineno - 1, node.end_lineno)
    missing = sorted(set(tables) - set(spans))
    if missing:
        raise SystemExit(f"{test_file} has no table {', '.join(missing)}")
    changed = []
    for name, (a, b) in sorted(spans.items(), key=lambda kv: -kv[1][0]):  # (bottom up: earlier spans stay valid)
        new = _table_source(name, tables[name]) + "\n"
        if "".join(lines[a:b]) != new:
            changed.append(name)
            lines[a:b] = [new]
    with open(test_file, "w") as fh:
        fh.write("".join(lines))
    return sorted(changed)


# -- the table -------------------------------------------------------------------------------------

# (pattern in a failure reason, what is missing), first match wins
_BF16 = "bf16 only (the f32 cell is recognised and exact): "
_SWAP = ("the router casts its own Linear inside forward (`self.classifier = self.classifier.to(self.dtype)`, Switch "
         "and NLLB-MoE): non-strict torch.export, which torch.onnx's dynamo exporter tries first, runs the module on "
         "fake parameters, and nn.Module._apply swaps a fake parameter for its converted copy "
         "(torch.utils.swap_tensors), which refuses a tensor torch.export holds a weak reference to; the exporter's "
         "strict torch.export gets past the cast and stops on the data-dependent loop over the experts hit, and these "
         "experts have no batched_mm. Working ways: `moec.compile(module)` (its trace front end, the torch.export "
         "column) or `torch.onnx.export(..., dynamo=False)` (the TorchScript column)")
MISSING = (
    ((_BF16 + "proof:", "layer output node_mul"),
     "recognize-moe: in bf16 the dynamo export sums the k slots in f32 (reshape, Cast, ReduceSum, Cast) and the "
     "layer-output walk (_output_chain) stops at the Cast, so the [T*k, D] product is proved against the [T, D] "
     "layer; a cast keeps the shape (/work/notes/bf16_recognize_moe.patch recognises every such cell but PhiMoE's, "
     "whose sparsemixer routing then still differs in bf16)"),
    (_BF16 + "proof:", "recognize-moe: no routing candidate reproduces the bf16 layer (PhiMoE's sparsemixer in bf16)"),
    (_BF16 + "layer output", "recognize-moe: the router reads a widened f32 copy of the bf16 tokens (`hidden.float()`) "
                             "and the layer merges in bf16, a type the merge-point search (_layer_output) does not "
                             "accept (/work/notes/bf16_recognize_moe.patch)"),
    (_BF16 + "recognised as", "bf16: moec's per-token error against the block in f32 exceeds what the bf16 criterion "
                              "allows (moec.tolerances.half_precision_check: max(2u, 2x the torch bf16 block's own "
                              "error -- on the ONNX paths the worse, per token, of that and the export's own bf16 "
                              "run) per token, mean max(u, 1.25x)): the numbers after it"),
    ("fails in torch itself", "a tiny config the survey should fix (not a moec limit)"),
    (("4.x export failed", "data-dependent"),
     "transformers 4.x has only the eager loop over the experts hit (`for expert_idx in expert_hit`), which is "
     "data-dependent: torch.export, the dynamo exporter's capture, cannot trace it, and 4.x has no batched_mm. Working "
     "ways: that release's TorchScript export (recognised: the fixture of the same block above), or transformers "
     "5.x's batched_mm"),
    ("data-dependent", "torch.export cannot trace transformers' loop over the experts that were hit "
                       "(`for expert_idx in expert_hit`); export with `batched_mm` (the same function; "
                       "`moec.compile(module)` does so itself: the torch.export column)"),
    ("grouped_mm_fallback", "torch.onnx (dynamo) has no ONNX function for transformers' `grouped_mm_fallback` "
                            "custom op; export with `batched_mm`"),
    ("Grouped matmul with offsets", "torch.onnx (dynamo) cannot translate a grouped matmul with offsets; "
                                    "export with `batched_mm`"),
    ("aten::histc", "the TorchScript exporter has no `aten::histc` (grouped_mm counts tokens per expert with "
                    "it); export with `batched_mm`"),
    ("aten::rms_norm", "the TorchScript exporter has no `aten::rms_norm` at opset 18 (Ergo's per-expert RMSNorm, "
                       "`F.rms_norm`; ONNX's RMSNormalization is opset 23, the TorchScript exporter stops at opset 20 "
                       "and has no symbolic for it). Working ways: the dynamo export or `moec.compile(module)` (both recognised: their "
                       "columns)"),
    ("(no reduction) writes twice",
     "the export is not the module's function, so there is no layer in it to recognise: LongCat-Flash's eager loop "
     "sends an identity slot through an expert FFN with weight 0, so a token can reach one FFN through two slots; "
     "the module's index_add_ sums both rows, the TorchScript exporter writes it as a ScatterElements without "
     "reduction, which keeps one (ONNX leaves repeated indices undefined; torch warns the model is then incorrect). "
     "Working ways: the batched_mm experts (both exporters: recognised) or `moec.compile(module)`"),
    ("Couldn't swap", _SWAP),
    ("Cannot swap", _SWAP),
    ("aten.log1p", "moec's PyTorch front end has no `aten.log1p` (an activation of this architecture)"),
    ("_local_scalar_dense", "the block reads a tensor value into Python (`.item()` / `.tolist()`) during "
                            "forward: moec's PyTorch front end cannot lower it"),
    ("is none of relu", "`moe.experts` has no activation of this form (recognize-moe knows relu, silu, gelu, "
                        "gelu_tanh, identity, swiglu, GPT-OSS's clamped swiglu)"),
    ("constant sizes", "the TorchScript exporter traced the block's `expert_size.tolist()` (how many tokens each "
                       "expert got on the example) into constant Split sizes: the ONNX graph computes the layer only "
                       "for that routing and is wrong for an input routed otherwise, so there is no MoE layer in it "
                       "to recognise. Working ways: the dynamo export (recognised) or `moec.compile(module)` (the "
                       "torch.export column: the sizes lowered as run-time values)"),
    ("onnx import", "moec's ONNX importer"),
    ("UnsupportedError", "moec's PyTorch front end"),
    ("experts:", "recognize-moe: the experts are not in a form it reads"),
    ("router:", "recognize-moe: the router is not in a form it reads (a scoring `moe.route` cannot express?)"),
    ("group selection", "recognize-moe: the group-limited selection is not in a form it reads"),
    ("proof:", "recognize-moe: no routing candidate reproduces the layer (a routing `moe.route` cannot express?)"),
    ("no top-k", "the block selects experts without a top-k / arg-max moec sees"),
)


_LEGACY_LOOP = ("these experts are an nn.ModuleList / ModuleDict looped over the experts hit (`for expert_idx in "
                "expert_hit`), not dispatched on `_experts_implementation`, so there is no batched_mm to export instead; "
                "torch.export, the dynamo exporter's capture, cannot trace the data-dependent loop. Working ways: "
                "`moec.compile(module)` (its trace front end: the torch.export column) or the TorchScript export")


def cell_missing(c, reason: str) -> str:
    """What is missing for a failing cell: what the cell measured (``missing``: diagnose), for older experts that
    the loop cannot be exported as batched_mm, else by the reason's text (MISSING)."""
    if c is not None and c.get("missing"):
        return c["missing"]
    if c is not None and c.get("impl") == "-" and "data-dependent" in reason and "4.x" not in reason:
        return _LEGACY_LOOP
    return _missing(reason)


def _missing(reason: str) -> str:
    for pat, what in MISSING:
        if all(p in reason for p in ((pat,) if isinstance(pat, str) else pat)):
            return what
    return ""


def _cell_text(c, reasons, f32=None) -> str:
    """A cell of the table; ``f32``: the cell of the same path and implementation in f32 with dynamic dims
    (a bf16 or static-dims cell is run only where that one is recognised and exact)."""
    if c is None and f32 is not None and not _works(f32):
        why = f32.get("reason") or f32.get("check_error") or (
            f"recognised as {f32.get('family')} but differs from torch" if f32.get("status") == "recognised" else "unknown")
        return f"no, as f32 [{_ref(reasons, why, cell_missing(f32, why))}]"
    if c is None:
        return "not run"
    only = "bf16 only (the f32 cell is recognised and exact): " if (
        c.get("dtype") == "bf16" and _works(f32) and not _works(c)) else ""
    if c.get("status") == "recognised":
        fam = c.get("family")
        if c.get("exact"):
            return f"**{fam}**" + (" (static)" if c.get("note") else "") + (
                f" (as {c['exported_as']})" if c.get("exported_as") else "") + (
                " (traced)" if c.get("traced") else "")
        why = c.get("check_error") or f"differs from torch (scaled error {c.get('err', float('nan')):.3g})"
        if c.get("err_vs_f32") is not None:  # (bf16: which of the two is nearer the same block in f32)
            why += (f"; per-token relative error against the block in f32 (max): moec {c['err_vs_f32']:.3g}, "
                    f"torch's bf16 block {c['torch_err_vs_f32']:.3g}" + (
                        f", the export's own bf16 run {c['onnx_err_vs_f32']:.3g}" if c.get("onnx_err_vs_f32") is not None
                        else ""))
        elif c.get("err_vs_f64") is not None:  # (f32: both against the same block in float64)
            why += (f"; against the block in float64, in f32 tolerance units: moec {c['err_vs_f64']:.3g}, "
                    f"torch's f32 block {c['torch_err_vs_f64']:.3g}")
        r = _ref(reasons, f"{only}recognised as {fam} but {why}")
        return f"{fam}, not exact [{r}]"
    why = only + (c.get("reason") or "unknown")
    return f"no [{_ref(reasons, why, cell_missing(c, why))}]"


def _norm(text: str) -> str:
    """A reason without its numbers and file locations: the same cause in two architectures is one Rn."""
    t = re.sub(r"modeling_\w+\.py:\d+", "modeling_*.py", text)
    t = re.sub(r"'[^']*'", "'*'", t)
    return re.sub(r"\d+", "N", t)


def _ref(reasons, text, missing=None) -> str:
    """The Rn of a reason (``missing``: what is missing where the cell measured it, ``diagnose``; else ``_missing``)."""
    key = (_norm(text), missing or "")
    if key not in reasons:
        reasons[key] = (f"R{len(reasons) + 1}", text, missing or _missing(text))
    return reasons[key][0]


def summary(d) -> list:
    """A few lines of counts (the README quotes them)."""
    res = d["results"]
    moe = [r for r in res if r.get("built") and r.get("n_blocks")]
    nob = [r["module"] for r in res if r.get("built") and not r.get("n_blocks")]
    unb = [r["module"] for r in res if not r.get("built")]

    def count(path, impl, dtype="f32", dims="dynamic"):
        ran = ok = 0
        for r in moe:
            mine = impl if impl in r.get("impls", []) else ("-" if impl == "batched_mm" else None)
            c = next((c for c in r["cells"] if _key(c) == (path, mine, dtype, dims)), None)
            if c is not None:
                ran += 1
                ok += c.get("status") == "recognised" and bool(c.get("exact"))
        return f"{ok} of {ran}"
    def cnt(path, impl, dtype, dims):
        ran = ok = 0
        for r in moe:
            if r.get("inline"):
                continue
            mine = impl if impl in r.get("impls", []) else ("-" if impl == "batched_mm" else None)
            c = next((c for c in r["cells"] if _key(c) == (path, mine, dtype, dims)), None)
            if c is not None:
                ran += 1
                ok += _works(c)
        return ok, ran
    grid = ["", "Recognised and exact of the cells run (blocks; batched_mm includes the older `-` experts):", "",
            "| path | experts impl | f32, dynamic dims | bf16, dynamic dims | f32, static dims |", "|---|---|---|---|---|"]
    for path in PATHS:
        for impl in IMPLS:
            row = []
            for dt, dims in (("f32", "dynamic"), ("bf16", "dynamic"), ("f32", "static")):
                ok, ran = cnt(path, impl, dt, dims)
                row.append(f"{ok} of {ran}" if ran else "-")
            grid.append(f"| {path} | {impl} | " + " | ".join(row) + " |")
    lms = [c for r in moe for c in r["cells"] if c["path"] == "causal_lm" and c.get("status") != "skipped"]
    lm_ok = sum(c.get("status") == "recognised" for c in lms)
    skipped = sorted(r["module"] for r in moe for c in r["cells"]
                     if c["path"] == "causal_lm" and c.get("status") == "skipped")
    fx = d.get("fixtures_4x") or []
    fx_made = [c for c in fx if c.get("status") != "no export"]
    inl = [r["module"] for r in moe if r.get("inline")]
    out = [f"- {len(res)} modeling modules mention experts; {len(moe)} build a model with sparse-expert blocks"
           + (f" ({', '.join(inl)}: router and experts inline in the decoder layer, the whole model only)"
              if inl else "")
           + (f"; no sparse block: {', '.join(nob)}" if nob else "") + (f"; not built: {', '.join(unb)}" if unb else ""),
           f"- recognised and exact, f32, dynamic dims: torch.export (`moec.compile`) {count('torch.export', 'batched_mm')}; "
           f"dynamo ONNX of batched_mm {count('dynamo', 'batched_mm')}; TorchScript ONNX of batched_mm "
           f"{count('torchscript', 'batched_mm')}, of eager {count('torchscript', 'eager')}, of grouped_mm "
           f"{count('torchscript', 'grouped_mm')}",
           f"- 2-layer models with every sparse layer recognised: {lm_ok} of {len(lms)} run"
           + (f" (not run, their block not being recognised: {', '.join(skipped)})" if skipped else "")]
    if fx:
        out.append(f"- transformers 4.x fixtures recognised and exact: "
                   f"{sum(c.get('status') == 'recognised' and bool(c.get('exact')) for c in fx_made)} of "
                   f"{len(fx_made)} exports ({len(fx) - len(fx_made)} exports 4.x itself could not make)")
    return out + grid


def render(out_json, out_md):
    """docs/real_models.md: the architecture x path x experts implementation x dtype table."""
    d = json.load(open(out_json))
    res = sorted(d["results"], key=lambda r: r["module"])
    reasons: dict = {}
    cols = [(p, dt, dims) for p in PATHS for dt, dims in (("f32", "dynamic"), ("bf16", "dynamic"), ("f32", "static"))]
    ats = sorted(c["at"] for r in res for c in r.get("cells", []) if c.get("at"))
    by_rev: dict = {}  # moec revision -> [cells, latest time]
    for r in res:
        for c in r.get("cells", []):
            rev = c.get("moec") or r.get("moec") or "?"
            e = by_rev.setdefault(rev, [0, ""])
            e[0] += 1
            e[1] = max(e[1], c.get("at") or "")
    revs = sorted(by_rev.items(), key=lambda kv: kv[1][1], reverse=True)
    L = ["# Real transformers MoE models through moec", "",
         "Generated by `python tests/hf_survey.py` (do not edit by hand): transformers "
         f"{d.get('transformers')}, torch {d.get('torch')}; cells measured "
         + (f"between {ats[0]} and {ats[-1]} UTC " if ats else "") + f"on {d.get('date', '')[:10]}, moec "
         + ", ".join(f"`{rev}` ({n} cells)" for rev, (n, _) in revs) + " (latest first; `+dirty`: with the other "
         "helpers' uncommitted changes of that moment in the working tree).", "",
         "Every model type of the pinned transformers whose modeling code mentions experts was built from a "
         "tiny random config (2 layers, hidden 32, 4 experts, top-2 unless the architecture fixes them; "
         "sparse-block weights N(0, 0.2)) and searched for its decoder layers' sparse-expert blocks.  Each "
         "block went through moec's PyTorch front end (`torch.export`, as `moec.compile(module)` does), "
         "`torch.onnx.export(..., dynamo=True)` and `torch.onnx.export(..., dynamo=False)` (TorchScript), then "
         "moec's canonicalize and recognize-moe stages, for every `config._experts_implementation` the block "
         "supports, f32 and bf16 (as `from_pretrained(..., dtype=torch.bfloat16)` loads it: what the model's "
         "`_keep_in_fp32_modules_strict` names, routers mostly, stays f32), dynamic batch / sequence dims (f32 also "
         "static), input [batch, seq, hidden].  The 2-layer model of an encoder-decoder (Switch Transformers, "
         "NLLB-MoE) has 2 encoder and 2 decoder layers, every one sparse, and runs with `decoder_input_ids` and the "
         "attention mask beside `input_ids`.",
         "",
         "A cell names the **family** recognised when the rewritten module equals the torch block on another "
         "batch / sequence size (f32: moec's f32 criterion, `moec.tolerances.f32_check`: the largest error against the "
         "same block run in float64 on the same weights and input, in units of the f32 tolerance (rtol 1e-4, atol "
         "1e-5), within max(1, 2x the torch f32 block's own such error), as `moec.compile` and `moec compile` now judge an "
         "f32 build that is beyond the plain f32 tolerance of its f32 oracle; bf16: moec's half-precision "
         "criterion, `moec.tolerances.half_precision_check`, as `moec.compile` verifies a bf16 module: per token, "
         "the relative error against the same block run in f32 on the same bf16 weights and input, mean within "
         "max(u, 1.25x) and max within max(2u, 2x) the torch bf16 block's own error (on the ONNX paths the worse, per "
         "token, of that and the export's own bf16 run: onnxruntime on the export, or where its CPU provider has no "
         "bf16 kernel on `moec.verify.half_rounded_model`, each op in f32 rounded where the graph stores bf16 -- the "
         "exporters write a bf16 linear as MatMul then Add, rounded twice, where torch's addmm rounds once), "
         "u = 2^-8; \"(static)\" where "
         "torch.export specialised the dims).  The TorchScript export traces an example input that the block's "
         "eager router sends to every expert (the trace keeps only the eager experts its example hits; the "
         "smallest of [2, 5], [4, 16], [4, 64], [8, 128] that hits all); otherwise `no [Rn]`, with the reason Rn below: the first error line, or recognize-moe's "
         "own reason (what `moec inspect --explain` prints) and what is missing (where recognize-moe leaves a block "
         "alone that is not a per-token MoE layer, measured on the torch block, `hf_survey.diagnose`: whether a "
         "token's output depends on other tokens, which expert modules run on each token).  `-`: older experts "
         "(`nn.ModuleList`, not dispatched on `_experts_implementation`).  `not run`: the survey did not reach "
         "this cell.  The torch.export path imports the block as `moec.compile(module)` does (its default "
         "`experts_implementation=\"auto\"`: batched_mm and grouped_mm as set, eager as batched_mm, a grouped_mm "
         "that is not recognised as batched_mm when that recognises more); \"(as batched_mm)\": exported so (the "
         "same function; `moec.compile` verifies against the module's own implementation); \"(traced)\": torch.export "
         "stopped on the module's own data-dependent code and `moec.compile`'s trace front end "
         "(`moec.frontend.torch_trace`) imported it.  Reproduce a cell: "
         "`python tests/hf_survey.py --arch MODEL_TYPE --path PATH --impl IMPL --dtype DTYPE --dims DIMS -v`.", "",
         "bf16 and static dims were run where the path and experts implementation work in f32 with dynamic dims "
         "(recognised and exact); elsewhere the cell says `no, as f32 [Rn]`: not run in that dtype / with those "
         "dims, because the f32 cell with dynamic dims already fails, for the reason Rn (an exporter that "
         "fails on that implementation, a block moec does not recognise).", ""]
    plain = [(r["module"], c) for r in res for c in r.get("cells", []) if c.get("path") in PATHS
             and c.get("dtype") == "f32" and c.get("status") == "recognised" and c.get("f64_error")]
    if plain:  # (f32 cells whose block cannot run in float64: judged by the plain f32 tolerance against torch)
        why = sorted({str(c["f64_error"]).splitlines()[0][:120] for _, c in plain})
        L += [f"{len(plain)} f32 cells were judged by the plain f32 tolerance against the torch block, because the block "
              "does not run in float64 (" + "; ".join(f"`{w}`" for w in why) + "): "
              + ", ".join(sorted({m for m, _ in plain})) + ".", ""]
    moe = [r for r in res if r.get("built") and r.get("n_blocks") and not r.get("inline")]
    not_run = []
    for r in moe:
        by = {_key(c): c for c in r["cells"]}
        for impl in r.get("impls", []):
            for p, dt, dims in cols:
                f32 = by.get((p, impl, "f32", "dynamic"))
                if by.get((p, impl, dt, dims)) is None and (f32 is None or _works(f32)):
                    not_run.append(f"{r['module']} {p} {impl} {dt}" + (" static" if dims == "static" else ""))
    if not_run:
        L += [f"Not every cell was run in the time this survey had: {len(not_run)} cells say `not run` (a full run: "
              "`python tests/hf_survey.py`; `--tier 3 --missing` fills in only those).", ""]
    L += ["## Summary", ""] + summary(d) + ["", "| architecture (model type) | block | experts impls | recognised cells | family | "
          "2-layer model: layers recognised |", "|---|---|---|---|---|---|"]
    for r in res:
        name = f"{r['module']} (`{r['arch']}`)" if r["arch"] != r["module"] else r["module"]
        if not r.get("built"):
            L.append(f"| {name} | not built | | | | {r.get('reason', '')[:200]} |")
            continue
        if not r.get("n_blocks"):
            L.append(f"| {name} | none | | | | {r.get('reason', '')} |")
            continue
        cells = [c for c in r["cells"] if c["path"] in PATHS]
        ok = [c for c in cells if c.get("status") == "recognised" and c.get("exact")]
        if r.get("inline"):
            lm = next((c for c in r["cells"] if c["path"] == "causal_lm"), {})
            fams = ", ".join(lm.get("families") or []) or "-"
            L.append(f"| {name} | {r.get('block')} (router and experts inline in the decoder layer: the whole "
                     f"model only) | {', '.join(r.get('impls', []))} | - | {fams} | "
                     f"{lm.get('recognised', 0)}/{lm.get('blocks', '?')}"
                     + ("" if lm.get("status") == "recognised" else f" [{_ref(reasons, lm.get('reason', ''))}]")
                     + " |")
            continue
        fams = sorted({c["family"] for c in ok})
        lm = next((c for c in r["cells"] if c["path"] == "causal_lm"), None)
        blk = next((c for c in cells if c["path"] == "torch.export" and c["impl"] in ("batched_mm", "-")
                    and c["dtype"] == "f32" and c["dims"] == "dynamic"), None)
        if (lm is None or lm.get("status") == "skipped") and blk is not None and blk.get("status") != "recognised":
            why = blk.get("reason") or ""
            lmt = f"not run: its block is not recognised [{_ref(reasons, why, cell_missing(blk, why))}]"
        elif lm is None:
            lmt = "not run"
        elif lm.get("status") == "skipped":
            lmt = "not run (block not recognised)"
        elif lm.get("stage") == "causal_lm":
            lmt = f"no [{_ref(reasons, lm.get('reason', ''))}]"
        else:
            lmt = f"{lm.get('recognised', 0)}/{lm.get('blocks')}" + (
                "" if lm.get("status") == "recognised" else f" [{_ref(reasons, lm.get('reason', ''))}]") + (
                f" (not run on a text input, so not counted: {', '.join(f'`{n}`' for n in lm['blocks_not_run'])})"
                if lm.get("blocks_not_run") else "")
        L.append(f"| {name} | {r.get('block')} | {', '.join(r.get('impls', []))} | {len(ok)}/{len(cells)} | "
                 f"{', '.join(fams) or '-'} | {lmt} |")
    L += ["", "## Every cell", "",
          "| architecture | experts impl | " + " | ".join(f"{p} {dt}" + (" static" if dims == "static" else "")
                                                 for p, dt, dims in cols) + " |",
          "|---|---|" + "---|" * len(cols)]
    for r in res:
        if not r.get("built") or not r.get("n_blocks") or r.get("inline"):
            continue
        by = {_key(c): c for c in r["cells"]}
        for impl in r.get("impls", []):
            row = [_cell_text(by.get((p, impl, dt, dims)), reasons,
                              None if (dt, dims) == ("f32", "dynamic") else by.get((p, impl, "f32", "dynamic")))
                   for p, dt, dims in cols]
            L.append(f"| {r['module']} | {impl} | " + " | ".join(row) + " |")
    comp = [c for r in res for c in r.get("cells", []) if c["path"] == "moec.compile"]
    if comp:
        L += ["", "## `moec.compile` (C build, verification against the torch block), batched_mm, f32", "",
              "| architecture | result |", "|---|---|"]
        for c in comp:
            f64 = c.get("f32_vs_float64")
            how = ("" if not c.get("criterion") else
                   f" by the f32 criterion against the block in float64 (moec {f64['moec_err']:.3g}, torch's own "
                   f"{f64['own_err']:.3g} f32 tolerance units)" if f64 else " at the plain f32 tolerance")
            res_ = (f"{c['family']}, verified{how}" if c.get("status") == "recognised" else
                    f"no MoE layer recognised (a plain graph), verified{how}")
            L.append(f"| {c['arch']} | " + (res_ if c.get("status") in ("recognised", "plain") and c.get("verified")
                                            else f"no [{_ref(reasons, c.get('reason') or 'not verified')}]") + " |")
    fx = d.get("fixtures_4x") or []
    if fx:
        L += ["", f"## transformers {fx[0].get('transformers', '4.x')} exports (tests/fixtures/hf4x)", "",
              "Made by tests/fixtures/hf4x/make_fixtures.py in a 4.x venv (the eager expert loop of that "
              "generation); compared with the outputs the 4.x module computed.", "",
              "| fixture | architecture | exporter | result |", "|---|---|---|---|"]
        for c in fx:
            if c.get("status") == "recognised":
                t = f"**{c['family']}**" + ("" if c.get("exact") else
                                            f", not exact [{_ref(reasons, 'differs from the 4.x module')}]")
                if c.get("kind") == "causal_lm":
                    t += f" ({c.get('n_layers')} layers)"
            else:
                t = f"no [{_ref(reasons, c.get('reason', ''))}]"
            L.append(f"| {c['fixture']} | {c['arch']} | {c['exporter']} | {t} |")
    L += ["", "## Reasons", "", "| | reason (first error line, or recognize-moe's reason) | what is missing |",
          "|---|---|---|"]
    for ref, text, what in sorted(reasons.values(), key=lambda rt: int(rt[0][1:])):
        t = text.replace("|", "\\|").replace("\n", " ")
        L.append(f"| {ref} | {t} | {what.replace('|', '/')} |")
    L.append("")
    with open(out_md, "w") as fh:
        fh.write("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
