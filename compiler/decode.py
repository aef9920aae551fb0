"""Greedy decoding with a KV cache (issue 17 item 4): ``moec.generate(...)`` and ``moec generate``.

A transformers CausalLM is compiled as one *step* function (``KVStep``)::

    step(input_ids [B, T] int64, pos [1] int64, k_0, v_0, ..., k_{L-1}, v_{L-1}) -> (logits [B, T, V],
                                                                                    new_kv [L, 2, B, Hkv, T, D])

or, built with ``greedy=True`` (what ``generate`` compiles unless the logits are kept), ``(tokens [B] int64,
new_kv, last_logits [B, V])``: the last position's greedy token chosen inside the step by ``moec.argmax`` (ties:
the lowest index), so the loop feeds back 8 bytes a token and never takes the vocabulary's logits through numpy;
the last position's logits stay an output (the step computes them anyway) because they are what verification
checks: quantised weights legitimately move a near-tie's token, so the tokens are judged as the argmax of moec's
own logits and the logits against the model (compiler/verify.py, ``argmax_outputs``).

The cache is preallocated once, at a fixed capacity M, and owned by the caller (``Generator``):
``k_l`` and ``v_l`` are [B, Hkv, M, D], rows (one layout for keys and values, the one ``moec.kv_append``
writes and ``moec.kv_attention`` reads; the score matmul takes the keys through a view's transpose,
``q @ k_l^T``, which the fused ``moec.kv_step_attention`` reads as rows: a one-query-row decode streams
each key row as one contiguous dot product).  Positions ``< pos`` hold the context.  The step reads the
cache in place (the C target takes inputs by pointer, and only reshapes, which are views, touch them)
and returns only the keys/values of its T new tokens; the caller writes those at ``pos`` -- O(T)
bytes per step, never a copy of the whole cache.

Attention over the cache is the model's own math split in two: scores against the cache (positions
``j < pos``, and inside the sliding window where the model has one) and against the T new keys
(causal), one softmax over both, then ``p_cache @ V_cache + p_new @ V_new``.  Grouped-query attention
reshapes the queries ([B, Hkv, G*T, D]) instead of repeating the cache.  It is registered as a
transformers attention implementation (``moec_kv``) for the duration of the step's forward, so the
model's projections, rotary embedding, norms and MoE blocks run their own code.

The same step exports to ONNX (``export_onnx``) for onnxruntime or for moec's ONNX path, and runs
eagerly in torch; ``Generator`` drives any of them with the same loop.

transformers' own contract (what users export: ``past_key_values.N.key/value`` in, ``present.N.key/value``
out, see ``export_hf_kv``) is driven by ``PastKVGenerator``, the present -> past pairs read from the graph
(``kv_binding``).  There present_N = Concat(past_N, new_N) inside the graph: fed back as is, every step
copies the whole cache (as onnxruntime does).  ``compile_past_kv_inplace`` builds the export with the
kv-cache-inplace pass instead (passes/kv_cache_inplace.py): the Concat becomes ``moec.kv_append`` into a
buffer of fixed capacity, the recognised attention reading it ``moec.kv_attention`` over its valid rows,
and ``InplaceKVGenerator`` owns the buffers and passes the position: only the new rows are written per
step.  ``generate`` uses it where the pass can rewrite every present (``kv_inplace``).

**The cache's element type** (``kv_cache``, ``KV_CACHE_TYPES``) is a property of the step: "f32", or "f16"
(half the bytes per position: what llama.cpp and vLLM keep by default).  With "f16" the step's ``k_l`` /
``v_l`` inputs are f16 and the attention reads them widened (``.to(f32)`` in the step's own math, which
recognize-decoder folds into ``moec.kv_step_attention``'s f16 cache operands: the C kernel reads the f16
rows in place, no widened copy); the step returns the new keys/values rounded to f16 (nearest even, a cast at
the step's end: numpy's conversion of 4K values cost the loop ~50 us a token), and the ``Generator`` copies them
at ``pos``.  The one new error is that rounding of
the stored keys and values (relative 2^-11 per element; its effect on an attention output is bounded in
tests/test_kv_f16.py).  ``generate`` on moec's cpu, triton and ascend targets defaults to "f16"
(``default_kv_cache``: every target whose kernels read a half cache in place, tests/test_kv_f16_targets.py); the
torch and onnxruntime engines keep the model's f32, as transformers' eager cache does.
"""
from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from moec.errors import UserInputError

ATTN_NAME = "moec_kv"
KV_CACHE_TYPES = {"f32": np.float32, "f16": np.float16}  # the cache element types a step can keep
_CTX: List[dict] = []  # the running step's cache inputs (a stack: the attention function reads the top)


# ---- the step module ------------------------------------------------------------------------------
def _attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention of T new queries over the cache (read in place) and the T new keys; see module doc."""
    import torch
    ctx = _CTX[-1]
    layer = module.layer_idx
    kc, vc, pos = ctx["k"][layer], ctx["v"][layer], ctx["pos"]  # [B,Hkv,M,D] both, [1]
    if kc.dtype != query.dtype:  # (a half-precision cache: read widened, the one cast of the cache as it lies)
        kc, vc = kc.to(query.dtype), vc.to(query.dtype)
    ctx["new"][layer] = (key, value)
    b, hq, t, d = query.shape
    hkv = key.shape[1]
    g = hq // hkv
    m = kc.shape[2]
    q = query.contiguous().reshape(b, hkv, g * t, d)
    # the cache enters 3-D batched matmuls as it lies (reshapes are views, the keys' transpose too in
    # torch; a 4-D matmul would be exported as expand + bmm, and an expand is a copy)
    s_past = torch.bmm(q.reshape(b * hkv, g * t, d), kc.reshape(b * hkv, m, d).transpose(1, 2)).reshape(
        b, hkv, g, t, m) * scaling
    s_new = torch.matmul(q, key.transpose(2, 3)).reshape(b, hkv, g, t, t) * scaling      # [B,Hkv,G,T,T]
    qpos = pos + torch.arange(t, device=query.device)                                    # [T]
    j = torch.arange(m, device=query.device)
    ok_past = j.unsqueeze(0) < pos                                                       # [1,M]
    i = torch.arange(t, device=query.device)
    ok_new = i.unsqueeze(0) <= i.unsqueeze(1)                                            # [T,T]
    window = kwargs.get("sliding_window")
    if window:  # (None or 0: no window)
        ok_past = ok_past & (qpos.unsqueeze(1) - j.unsqueeze(0) < window)
        ok_new = ok_new & (i.unsqueeze(1) - i.unsqueeze(0) < window)
    low = torch.finfo(s_past.dtype).min
    s_past = torch.where(ok_past, s_past, low).float()
    s_new = torch.where(ok_new, s_new, low).float()
    # one softmax over both key sets, without concatenating them (the cache part stays [.., M])
    mx = torch.maximum(s_past.amax(-1, keepdim=True), s_new.amax(-1, keepdim=True))
    e_past, e_new = torch.exp(s_past - mx), torch.exp(s_new - mx)
    denom = e_past.sum(-1, keepdim=True) + e_new.sum(-1, keepdim=True)
    p_past, p_new = (e_past / denom).to(query.dtype), (e_new / denom).to(query.dtype)
    # (the new part keeps [.., G, T, T] and broadcasts the new values over G: a reshape of a T x T
    # tensor makes torch.export guard on T)
    out = (torch.bmm(p_past.reshape(b * hkv, g * t, m), vc.reshape(b * hkv, m, d)).reshape(b, hkv, g, t, d)
           + torch.matmul(p_new, value.unsqueeze(2)))                                  # [B,Hkv,G,T,D]
    out = out.reshape(b, hq, t, d).transpose(1, 2)
    return out, None


class _StepCache:
    """What the model sees as its cache: keeps the keys/values of the new tokens (the attention
    function reads the real cache); the model's own update() contract returns them unchanged."""

    is_compileable = False

    def __init__(self, n_layers: int):
        self.layers = [None] * n_layers

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def _register():
    from transformers import AttentionInterface
    AttentionInterface.register(ATTN_NAME, _attention)


def _lm_of(model):
    if not hasattr(model, "config") or not hasattr(model, "forward"):
        raise UserInputError("generate needs a transformers CausalLM (a module with a config)")
    return model


def cache_geometry(model) -> dict:
    """Layers, key/value heads and head size of a transformers CausalLM's attention."""
    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    n_layers = cfg.num_hidden_layers
    hq = cfg.num_attention_heads
    hkv = getattr(cfg, "num_key_value_heads", None) or hq
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    return {"layers": n_layers, "kv_heads": hkv, "head_dim": d, "vocab": cfg.vocab_size}


_STEP_CLASSES: dict = {}


def _step_base():
    """The step module's base class (made on first use: importing this file does not import torch)."""
    if "base" in _STEP_CLASSES:
        return _STEP_CLASSES["base"]
    import torch

    class _KVStepBase(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = _lm_of(model)
            self.geo = cache_geometry(model)

        def _step(self, input_ids, pos, cache):
            n = self.geo["layers"]
            _register()
            old = self.model.config._attn_implementation
            ctx = {"k": cache[0::2], "v": cache[1::2], "pos": pos, "new": [None] * n}
            _CTX.append(ctx)
            _set_attn(self.model, ATTN_NAME)
            try:
                t = input_ids.shape[1]
                position_ids = (pos + torch.arange(t, device=input_ids.device)).unsqueeze(0)
                out = self.model(input_ids=input_ids, position_ids=position_ids, cache=_StepCache(n),
                                 use_cache=True)
            finally:
                _set_attn(self.model, old)
                _CTX.pop()
            logits = out.logits if hasattr(out, "logits") else out[0]
            new = torch.stack([torch.stack(list(kv), 0) for kv in ctx["new"]], 0)  # [L,2,B,Hkv,T,D]
            if getattr(self, "kv_cache", "f32") == "f16":  # (rounded as the cache stores them: the caller copies)
                new = new.to(torch.float16)
            if getattr(self, "greedy", False):  # the greedy token of the last position (and its logits: verified)
                last = logits[:, -1]
                return last.argmax(-1), new, last
            return logits, new

    _STEP_CLASSES["base"] = _KVStepBase
    return _KVStepBase


def check_kv_cache(kv_cache: str) -> str:
    """``kv_cache`` checked against ``KV_CACHE_TYPES`` (UserInputError: one line)."""
    if kv_cache not in KV_CACHE_TYPES:
        raise UserInputError(f"kv_cache={kv_cache!r}: choose {' or '.join(KV_CACHE_TYPES)}")
    return kv_cache


def check_cache_size(layers: int, kv_heads: int, head_dim: int, max_len: int, batch: int, kv_cache: str) -> int:
    """The bytes of a cache (K and V, every layer) of capacity ``max_len`` (Python integers: no overflow);
    UserInputError (one line) when max_len < 1 or the cache is larger than this machine's memory."""
    if int(max_len) < 1:
        raise UserInputError(f"max_len={max_len}: the cache holds at least one position")
    size = 2 * int(layers) * int(batch) * int(kv_heads) * int(max_len) * int(head_dim) \
        * np.dtype(KV_CACHE_TYPES[check_kv_cache(kv_cache)]).itemsize
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # (no sysconf: numpy's own allocation check decides)
        mem = None
    if mem and size > mem:
        raise UserInputError(f"a {kv_cache} KV cache of {max_len} positions needs {size / 2**30:.1f} GiB, more than "
                             f"this machine's {mem / 2**30:.1f} GiB (a smaller max_len)")
    return size


def default_kv_cache(engine: str = "moec", target: str = "cpu") -> str:
    """The cache type a step gets when none is asked for: "f16" on a moec target whose kernels read a half
    cache in place (its description lists moec.kv_step_attention among its fused decoder ops: cpu, triton,
    ascend; as llama.cpp / vLLM: half the bytes a decode step reads per position), "f32" elsewhere (torch /
    onnxruntime: the model's type, as transformers' eager cache; a target without that kernel)."""
    return "f16" if engine == "moec" and "moec.kv_step_attention" in _fused_ops(target) else "f32"


def _fused_ops(target: str) -> tuple:
    """The decoder ops the target's kernels fuse (its description; none for an unknown target: the compile says so)."""
    from moec.targets import target_for
    try:
        return tuple(target_for(target).fused_decoder_ops)
    except UserInputError:
        return ()


def KVStep(model, kv_cache: str = "f32", greedy: bool = False):  # noqa: N802 - a class per layer count (torch.export wants named arguments)
    """One decoding step of ``model`` over an external cache (see the module doc): a module whose
    forward takes ``input_ids, pos, k_0, v_0, ..., k_{L-1}, v_{L-1}``.  ``kv_cache`` ("f32" / "f16") is
    the element type the step's cache inputs are meant to have (``step_inputs``); the step reads either and
    returns the new keys/values in that type.  ``greedy``: the first output is the greedy token of the last
    position ([B] int64, ``argmax`` of its logits: the lowest index among ties, ``moec.argmax``'s scan) instead
    of the logits [B, T, V], and a third output the last position's logits [B, V] (see the module doc)."""
    n = cache_geometry(model)["layers"]
    cls = _STEP_CLASSES.get(n)
    if cls is None:
        names = input_names(n)[2:]
        ns: dict = {}
        exec(f"def forward(self, input_ids, pos, {', '.join(names)}):\n"
             f"    return self._step(input_ids, pos, ({', '.join(names)},))\n", ns)
        cls = _STEP_CLASSES[n] = type(f"KVStep{n}", (_step_base(),), {"forward": ns["forward"]})
    step = cls(model)
    step.kv_cache = check_kv_cache(kv_cache)
    step.greedy = bool(greedy)
    return step


def _set_attn(model, name: str) -> None:
    """Point every config of ``model`` at the attention implementation ``name`` (configs are shared by
    the submodules, but sub-configs of composite models are separate objects)."""
    seen = set()
    for mod in model.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and id(cfg) not in seen:
            seen.add(id(cfg))
            cfg._attn_implementation = name


# ---- the loop -------------------------------------------------------------------------------------
@dataclass
class GenerateResult:
    """``tokens``: the N new token ids per batch row ([B, N]); ``logits``: each call's logits (the
    prefill's [B, T, V], then one [B, 1, V] per decode step) when asked for; timings of the calls."""
    tokens: np.ndarray
    prefill_ms: float
    decode_ms: List[float]
    logits: List[np.ndarray] = field(default_factory=list)
    kv_cache: Optional[str] = None  # the cache's element type ("f32" / "f16")

    @property
    def decode_tokens_per_s(self) -> float:
        if not self.decode_ms:
            return float("nan")
        rows = self.tokens.shape[0]
        return rows * len(self.decode_ms) / (sum(self.decode_ms) / 1000.0)


class Generator:
    """Greedy decoding of a step function (``step(input_ids, pos, k_0, v_0, ...) -> (logits, new_kv)``,
    numpy in and out) over a cache this object owns: ``k`` and ``v`` [L, B, Hkv, M, D] (rows), allocated
    once; each call reads it in place and gets only the new tokens' keys/values back, written here at the
    current position (T rows per layer, no transposition)."""

    def __init__(self, step: Callable, layers: int, kv_heads: int, head_dim: int, max_len: int, batch: int = 1,
                 dtype=np.float32):
        """``dtype``: the cache's element type (np.float32, or np.float16 / "f16": the new rows rounded to
        nearest even as they are written)."""
        self.step = step
        self.max_len = int(max_len)
        dtype = KV_CACHE_TYPES[check_kv_cache(dtype)] if isinstance(dtype, str) else np.dtype(dtype).type
        if dtype not in KV_CACHE_TYPES.values():
            raise UserInputError(f"a cache of {np.dtype(dtype).name}: choose float32 or float16")
        check_cache_size(layers, kv_heads, head_dim, self.max_len, batch, _kv_name(np.dtype(dtype)))
        self.k = np.zeros((layers, batch, kv_heads, self.max_len, head_dim), dtype)
        self.v = np.zeros((layers, batch, kv_heads, self.max_len, head_dim), dtype)
        self.pos = 0
        self._cache_args = [a for l in range(layers) for a in (self.k[l], self.v[l])]  # views, no copies
        self._pos = np.zeros(1, np.int64)  # (the step's pos input, refilled per call)

    def reset(self) -> None:
        self.pos = 0  # (positions >= pos are never read: no need to clear them)

    def __call__(self, input_ids) -> np.ndarray:
        ids = np.ascontiguousarray(np.asarray(input_ids, dtype=np.int64))
        if ids.ndim != 2 or ids.shape[0] != self.k.shape[1] or ids.shape[1] < 1:
            raise UserInputError(f"input_ids of shape {list(ids.shape)}: expected [{self.k.shape[1]}, tokens]")
        t = ids.shape[1]
        if self.pos + t > self.max_len:
            raise UserInputError(f"the cache holds {self.max_len} positions: {self.pos} used, {t} more do not fit "
                                 "(a larger max_len)")
        self._pos[0] = self.pos
        out = self.step(ids, self._pos, *self._cache_args)
        logits, new = out[0], out[1]  # (a greedy step's third output, its last logits, is for verification)
        new = np.asarray(new)  # (in the cache's type from an f16 step: a plain copy below)
        p = self.pos
        self.k[:, :, :, p:p + t, :] = new[:, 0]
        self.v[:, :, :, p:p + t, :] = new[:, 1]
        self.pos += t
        return np.asarray(logits)

    @staticmethod
    def next_tokens(out: np.ndarray) -> np.ndarray:
        """The greedy tokens [B] of a call's first output: a greedy step's token ids as they are, or the
        argmax of logits [B, T, V] at the last position (numpy's: the lowest index among ties)."""
        if out.dtype.kind in "iu":
            return out.reshape(-1)
        return out[:, -1].argmax(-1)

    def generate(self, prompt_ids, steps: int, keep_logits: bool = False) -> GenerateResult:
        """The prompt (prefill), then ``steps`` new tokens by greedy choice (``steps - 1`` decode calls:
        the last token chosen is not fed back)."""
        if steps < 1:
            raise UserInputError(f"steps={steps}: at least 1")
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        if prompt.ndim == 1:
            prompt = prompt[None, :]
        self.reset()
        t0 = time.perf_counter()
        logits = self(prompt)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        if keep_logits and logits.dtype.kind in "iu":
            raise UserInputError("keep_logits: this step returns greedy token ids, not logits (greedy=False)")
        kept = [logits] if keep_logits else []
        nxt = self.next_tokens
        toks = [nxt(logits)]
        decode_ms = []
        # (the cyclic garbage collector off for the loop, as timeit does: its passes over every object of a process
        # holding torch / transformers were ~1% of a decode step's samples; the loop makes no cycles)
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(steps - 1):
                t0 = time.perf_counter()
                logits = self(toks[-1][:, None])
                decode_ms.append((time.perf_counter() - t0) * 1e3)
                if keep_logits:
                    kept.append(logits)
                toks.append(nxt(logits))
        finally:
            if gc_was:
                gc.enable()
        return GenerateResult(np.stack(toks, 1), prefill_ms, decode_ms, kept, _kv_name(self.cache_dtype()))

    def cache_dtype(self) -> np.dtype:
        """The element type of the cache this object keeps."""
        return self.k.dtype


# ---- step functions: moec, onnxruntime, torch -----------------------------------------------------
def step_inputs(geo: dict, max_len: int, tokens: int, batch: int = 1, pos: int = 0, kv_cache: str = "f32") -> tuple:
    """Example inputs of the step (torch tensors): ids [B, tokens], pos, zero caches of capacity max_len and
    element type ``kv_cache``."""
    import torch
    dt = {"f32": torch.float32, "f16": torch.float16}[check_kv_cache(kv_cache)]
    ids = torch.randint(3, max(4, min(geo["vocab"], 100)), (batch, tokens), generator=torch.Generator().manual_seed(0))
    cache = []
    for _ in range(geo["layers"]):
        cache += [torch.zeros(batch, geo["kv_heads"], max_len, geo["head_dim"], dtype=dt) for _kv in "kv"]  # rows
    return (ids, torch.tensor([pos]), *cache)


def input_names(layers: int) -> List[str]:
    return ["input_ids", "pos"] + [f"{kv}_{l}" for l in range(layers) for kv in ("k", "v")]


def compile_step(model, max_len: int, *, target: str = "cpu", weights: str = "f32", verify: bool = True,
                 cache: bool = True, kv_cache: Optional[str] = None, greedy: bool = False, **kw):
    """``moec.compile`` of ``KVStep(model)``: tokens dynamic, the cache capacity ``max_len`` fixed, the cache's
    element type ``kv_cache`` ("f32" / "f16"; default ``default_kv_cache("moec", target)``).  The result's
    ``stats.report["kv_cache"]`` says which.  ``greedy``: the step returns the last position's greedy token
    ids [B] (``moec.argmax`` inside the step) instead of the logits."""
    from moec.jit_api import compile as moec_compile
    kv = check_kv_cache(kv_cache or default_kv_cache("moec", target))
    geo = cache_geometry(model)
    ex = step_inputs(geo, max_len, 4, kv_cache=kv)
    dims = {0: {1: "T"}, **{i: {} for i in range(1, len(ex))}}
    cm = moec_compile(KVStep(model, kv, greedy).eval(), ex, target=target, weights=weights, verify=verify, cache=cache,
                      dynamic_dims=dims, **kw)
    cm.stats.report = dict(cm.stats.report, kv_cache=kv)
    return cm


def artifact_kv_cache(manifest: dict) -> str:
    """The cache type ("f32" / "f16") of a compiled step, from its manifest's k_0 input (UserInputError if the
    artifact is not a step or keeps another type)."""
    from moec.ir.parser import parse_type
    ins = {i["name"]: i["type"] for i in manifest.get("inputs", [])}
    if "k_0" not in ins:
        raise UserInputError("not a KV-cache step (no k_0 input)")
    return _kv_name(np.dtype(parse_type(ins["k_0"]).dtype.np))


def _kv_name(dt) -> str:
    for name, npt in KV_CACHE_TYPES.items():
        if np.dtype(npt) == dt:
            return name
    raise UserInputError(f"a KV-cache step whose cache is {np.dtype(dt).name}: moec keeps f32 or f16 caches")


def export_onnx(model, path: str, max_len: int, dynamo: bool = True, kv_cache: str = "f32") -> str:
    """The step of ``model`` as an ONNX file (inputs ``input_ids``, ``pos``, ``k_l``/``v_l`` of element type
    ``kv_cache``; outputs ``logits``, ``new_kv``), tokens dynamic, with either torch.onnx exporter."""
    import warnings
    import torch
    geo = cache_geometry(model)
    ex = step_inputs(geo, max_len, 4, kv_cache=kv_cache)
    names = input_names(geo["layers"])
    step = KVStep(model, kv_cache).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            t = torch.export.Dim("T", min=1, max=max_len)
            shapes = ({1: t},) + (None,) * (len(ex) - 1)
            torch.onnx.export(step, ex, path, input_names=names, output_names=["logits", "new_kv"], dynamo=True,
                              dynamic_shapes=shapes, optimize=True, verbose=False)
        else:
            torch.onnx.export(step, ex, path, input_names=names, output_names=["logits", "new_kv"], dynamo=False,
                              dynamic_axes={"input_ids": {1: "T"}, "logits": {1: "T"}, "new_kv": {4: "T"}},
                              opset_version=17)
    return path


def onnx_geometry(path: str) -> dict:
    """The cache geometry of a step exported by ``export_onnx`` (from its input shapes)."""
    from moec.frontend.onnx_load import load_onnx
    m = load_onnx(path)
    ins = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
           for i in m.graph.input}
    elem = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    n = 0
    while f"k_{n}" in ins and f"v_{n}" in ins:
        n += 1
    if not n or "input_ids" not in ins or "pos" not in ins:
        raise UserInputError(f"{os.path.basename(path)} is not a KV-cache step (inputs input_ids, pos, k_0, v_0, ...; "
                             "made by moec.generate.export_onnx)")
    b, hkv, m, d = ins["k_0"]
    if None in (b, hkv, d, m) or ins["v_0"] != [b, hkv, m, d]:
        raise UserInputError(f"{os.path.basename(path)}: the cache inputs need fixed shapes, k_0 and v_0 both "
                             f"[batch, kv heads, capacity, head size] (got {ins['k_0']} and {ins['v_0']})")
    from onnx import helper
    if elem["k_0"] != elem["v_0"]:
        raise UserInputError(f"{os.path.basename(path)}: k_0 and v_0 differ in element type")
    kv = _kv_name(np.dtype(helper.tensor_dtype_to_np_dtype(elem["k_0"])))
    return {"layers": n, "kv_heads": hkv, "head_dim": d, "max_len": m, "batch": b, "kv_cache": kv}


def _is_kvstep(path: str) -> bool:
    """Whether an ONNX file has the step contract of ``export_onnx`` (inputs input_ids, pos, k_0, v_0, ...)."""
    from moec.frontend.onnx_load import load_onnx
    names = {i.name for i in load_onnx(path).graph.input}
    return {"input_ids", "pos", "k_0", "v_0"} <= names


def ort_step(path: str, threads: int = 2) -> Callable:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def step(*xs):
        return sess.run(None, dict(zip(names, xs)))
    return step


def moec_step(compiled, threads: int = 2) -> Callable:
    art = compiled.artifact
    lib = getattr(art, "lib", None)
    if hasattr(lib, "nthreads"):  # (the C target's library: threads per call)
        lib.nthreads = threads

    def step(*xs):
        return art(list(xs))
    return step


def torch_step(model) -> Callable:
    import torch
    step_mod = KVStep(model).eval()

    def step(*xs):
        with torch.no_grad():
            lg, new = step_mod(*[torch.from_numpy(x) for x in xs])
        return lg.numpy(), new.numpy()
    return step


def hf_decode(model, prompt_ids, steps: int):
    """transformers' own loop with its DynamicCache (torch eager): (tokens [B, N], prefill ms, decode ms list)."""
    import torch
    ids = torch.as_tensor(np.asarray(prompt_ids, np.int64))
    ids = ids[None] if ids.ndim == 1 else ids
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        prefill = (time.perf_counter() - t0) * 1e3
        past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        toks = [out.logits[:, -1].argmax(-1)]
        dec = []
        for _ in range(steps - 1):
            t0 = time.perf_counter()
            out = model(input_ids=toks[-1][:, None], cache=past, use_cache=True)
            dec.append((time.perf_counter() - t0) * 1e3)
            past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            toks.append(out.logits[:, -1].argmax(-1))
    return torch.stack(toks, 1).numpy(), prefill, dec


ENGINES = ("moec", "onnxruntime", "torch")


def generate(model, prompt_ids, steps: int, *, max_len: Optional[int] = None, engine: str = "moec",
             target: str = "cpu", weights: str = "f32", verify: bool = True, threads: int = 2,
             keep_logits: bool = False, cache: bool = True, kv_inplace: Optional[bool] = None,
             kv_cache: Optional[str] = None, greedy_step: Optional[bool] = None) -> GenerateResult:
    """Greedy decoding with a KV cache: the prompt in one call (prefill), then ``steps`` new tokens.

    ``model``: a transformers CausalLM (``torch.nn.Module``), or the path of a step exported by
    ``export_onnx``.  ``engine``: "moec" (compiled for ``target`` with ``weights``), "onnxruntime"
    (an ONNX step; a module is exported first with torch.onnx's dynamo exporter) or "torch" (the
    step in eager PyTorch; modules only).  ``max_len``: the cache capacity (default: prompt + steps;
    an ONNX step has its own).  Returns a :class:`GenerateResult` (tokens [B, steps], prefill ms,
    decode ms per step, ``decode_tokens_per_s``).  ``kv_inplace`` (a past_key_values export on moec):
    True builds it with the kv-cache-inplace pass (the cache stays in buffers of ``max_len`` rows, only the
    new rows written per step; UserInputError where the pass cannot rewrite every present), False feeds
    the presents back (a copy of the whole cache per step), None (default) the first where it can.
    ``kv_cache``: the cache's element type, "f32" or "f16" (see the module doc); default
    ``default_kv_cache(engine, target)`` for a module (f16 on moec's C target), the file's own type for an
    ONNX step, f32 for a past_key_values export (the only type its loop keeps: asking for another is an
    error).  ``greedy_step`` (a module on moec): True compiles the step with the greedy choice inside it
    (``compile_step(greedy=True)``: it returns token ids, the 32000-odd logits never cross into numpy), False
    returns the logits and the loop takes their argmax; None (default) is ``not keep_logits``.  Both give the
    same tokens (ties: the lowest index) unless a logit is NaN (the step's argmax: a NaN never wins past
    index 0, as llama.cpp's greedy sampler; numpy's: the first NaN wins)."""
    if engine not in ENGINES:
        raise UserInputError(f"engine={engine!r}: choose {', '.join(ENGINES)}")
    if kv_cache is not None:
        check_kv_cache(kv_cache)
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    if prompt.ndim == 1:
        prompt = prompt[None, :]
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise UserInputError("prompt_ids: a non-empty list of token ids (or [batch, tokens])")
    is_path = isinstance(model, (str, os.PathLike))
    need = prompt.shape[1] + steps
    if is_path:
        if engine == "torch":
            raise UserInputError("engine='torch' needs the module, not an ONNX file")
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise UserInputError(f"{path}: no such ONNX file")
        if not _is_kvstep(path):  # transformers' own contract: past_key_values in, present out
            if kv_cache not in (None, "f32") and (engine != "moec" or kv_inplace is False):
                raise UserInputError(f"kv_cache={kv_cache!r}: a past_key_values export keeps its f32 cache (a half "
                                     "one only in moec's in-place build)")
            b = kv_binding(path)
            max_len = need if max_len is None else int(max_len)
            if need > max_len:
                raise UserInputError(f"prompt ({prompt.shape[1]}) + steps ({steps}) = {need} positions; the cache "
                                     f"holds {max_len}")
            if b["batch"] not in (None, prompt.shape[0]):
                raise UserInputError(f"prompt batch {prompt.shape[0]}: the export was built for batch {b['batch']}")
            if engine == "onnxruntime":
                step = _feed_step_ort(path, threads)
            else:
                half = kv_cache == "f16"
                if half and "moec.attention" not in _fused_ops(target):  # (the in-place pass rewrites moec.attention)
                    raise UserInputError(f"kv_cache='f16' for a past_key_values export needs moec's in-place cache build, "
                                         f"which reads the cache through moec.attention: the {target} target keeps "
                                         "attention decomposed (use --target cpu, or a checkpoint / KV-cache step: f16 "
                                         f"on {target})")
                if kv_inplace or half or (kv_inplace is None and target == "cpu"):  # the cache kept in place
                    # (passes/kv_cache_inplace.py; its ops have C kernels only)
                    try:
                        art, _ = compile_past_kv_inplace(path, b, max_len, target=target, weights=weights,
                                                         verify=verify, threads=threads, kv_cache=kv_cache or "f32")
                    except UserInputError as e:
                        if kv_inplace or half or "cannot be kept in place" not in str(e):
                            raise
                        art = None  # (auto: the pass could not rewrite every present -- the copying loop)
                    if art is not None:
                        return InplaceKVGenerator(art, b, max_len, prompt.shape[0], threads,
                                                  KV_CACHE_TYPES[kv_cache or "f32"]).generate(
                            prompt, steps, keep_logits=keep_logits)
                step = _feed_step_moec(compile_past_kv(path, b, target=target, weights=weights, verify=verify,
                                                       cache=cache, threads=threads), b, threads)
            return PastKVGenerator(step, b, max_len, prompt.shape[0]).generate(prompt, steps, keep_logits=keep_logits)
        geo = onnx_geometry(path)
        if max_len is not None and max_len != geo["max_len"]:
            raise UserInputError(f"max_len={max_len}: the ONNX step's cache holds {geo['max_len']} positions")
        max_len = geo["max_len"]
        batch = geo["batch"]
        if kv_cache is not None and kv_cache != geo["kv_cache"]:
            raise UserInputError(f"kv_cache={kv_cache!r}: the ONNX step's cache inputs are {geo['kv_cache']} "
                                 "(export it with that kv_cache)")
        kv = geo["kv_cache"]
        if engine == "onnxruntime":
            step = ort_step(os.fspath(model), threads)
        else:
            from moec.jit_api import compile as moec_compile
            step = moec_step(moec_compile(os.fspath(model), target=target, weights=weights, verify=verify,
                                          cache=cache), threads)
    else:
        if not hasattr(model, "config"):
            raise UserInputError("generate: model is a transformers CausalLM module or an ONNX step file")
        geo = cache_geometry(model)
        max_len = need if max_len is None else int(max_len)
        batch = prompt.shape[0]
        kv = kv_cache or default_kv_cache(engine, target)
        check_cache_size(geo["layers"], geo["kv_heads"], geo["head_dim"], max_len, batch, kv)  # (before a compile)
        if engine == "moec":
            greedy = (not keep_logits) if greedy_step is None else bool(greedy_step)
            if greedy and keep_logits:
                raise UserInputError("greedy_step=True returns token ids only: keep_logits needs greedy_step=False")
            step = moec_step(compile_step(model, max_len, target=target, weights=weights, verify=verify, cache=cache,
                                          kv_cache=kv, greedy=greedy), threads)
        elif engine == "torch":
            step = torch_step(model)
        else:
            import tempfile
            d = tempfile.mkdtemp(prefix="moec_step_")
            step = ort_step(export_onnx(model, os.path.join(d, "step.onnx"), max_len, kv_cache=kv), threads)
    if need > max_len:
        raise UserInputError(f"prompt ({prompt.shape[1]}) + steps ({steps}) = {need} positions; the cache holds "
                             f"{max_len}")
    if prompt.shape[0] != batch:
        raise UserInputError(f"prompt batch {prompt.shape[0]}: the step was built for batch {batch}")
    gen = Generator(step, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len, batch, kv)
    return gen.generate(prompt, steps, keep_logits=keep_logits)


# ---- transformers' own cache contract: past_key_values in, present out ------------------------------
# What users export: the model called with ``past_key_values`` (a DynamicCache built from the past
# tensors) and returning the present keys/values, with inputs ``input_ids``, ``attention_mask``
# ([B, past + T]), ``position_ids`` and ``past_key_values.N.key/value`` ([B, Hkv, P, D]) and outputs
# ``logits`` and ``present.N.key/value`` ([B, Hkv, P + T, D]); present_N = Concat(past_N, new_N) on the
# sequence axis.  ``kv_binding`` finds the present -> past pairs in the graph itself (the Concat whose
# first operand is the past input), so the names only need to identify input_ids / attention_mask /
# position_ids.


def _past_module(model):
    """``model`` as a module of ``(input_ids, attention_mask, position_ids, *past)`` -> ``(logits,
    present_0_key, present_0_value, ...)`` through transformers' DynamicCache (the model's own code)."""
    import torch
    from transformers import DynamicCache
    n = cache_geometry(model)["layers"]

    class _PastKV(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            c = DynamicCache(config=self.model.config)
            for l in range(n):
                c.update(past[2 * l], past[2 * l + 1], l)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=c, use_cache=True)
            pk = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
            res = [out.logits]
            for l in range(n):
                res += [pk.layers[l].keys, pk.layers[l].values]
            return tuple(res)

    return _PastKV(model).eval()


def hf_kv_names(layers: int):
    """(input names, output names) of the past_key_values contract (optimum's spelling)."""
    ins = ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{l}.{kv}" for l in range(layers)
                                                              for kv in ("key", "value")]
    outs = ["logits"] + [f"present.{l}.{kv}" for l in range(layers) for kv in ("key", "value")]
    return ins, outs


def export_hf_kv(model, path: str, dynamo: bool = True) -> str:
    """``model`` called with transformers' DynamicCache, exported to ONNX with either torch.onnx exporter
    (tokens, past length and mask length dynamic; eager attention: sdpa's ``is_causal`` is a Python bool
    of the token count that torch.export cannot keep symbolic)."""
    import warnings
    import torch
    geo = cache_geometry(model)
    n, hkv, d = geo["layers"], geo["kv_heads"], geo["head_dim"]
    p, t = 3, 2  # (not 0 or 1: torch.export would specialise them)
    ex = (torch.tensor([[7, 8]]), torch.ones(1, p + t, dtype=torch.int64), torch.tensor([[p, p + 1]])) + tuple(
        torch.randn(1, hkv, p, d, generator=torch.Generator().manual_seed(i)) for i in range(2 * n))
    ins, outs = hf_kv_names(n)
    old = model.config._attn_implementation
    _set_attn(model, "eager")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            w = _past_module(model)
            if dynamo:
                tt, pp, ss = (torch.export.Dim(x, min=1, max=8192) for x in ("T", "P", "S"))
                shapes = ({1: tt}, {1: ss}, {1: tt}, tuple({2: pp} for _ in range(2 * n)))
                torch.onnx.export(w, ex, path, input_names=ins, output_names=outs, dynamo=True,
                                  dynamic_shapes=shapes, optimize=True, verbose=False)
            else:
                axes = {"input_ids": {1: "T"}, "attention_mask": {1: "S"}, "position_ids": {1: "T"},
                        "logits": {1: "T"}}
                axes.update({x: {2: "P"} for x in ins[3:]})
                axes.update({x: {2: "S"} for x in outs[1:]})
                torch.onnx.export(w, ex, path, input_names=ins, output_names=outs, dynamo=False,
                                  dynamic_axes=axes, opset_version=17)
    finally:
        _set_attn(model, old)
    return path


def kv_binding(path: str) -> dict:
    """The past_key_values contract of an ONNX graph, read from the graph: ``pairs`` [(present output,
    past input, sequence axis)] where the output is a Concat (through Identity) whose first operand is
    the input, ``logits`` (the first other output), the roles ``input_ids`` / ``attention_mask`` /
    ``position_ids`` (by name) and the cache geometry from the past inputs' shapes."""
    from moec.frontend.onnx_load import load_onnx
    m = load_onnx(path)
    g = m.graph
    name = os.path.basename(path)
    inits = {i.name for i in g.initializer}
    ins = {i.name: i for i in g.input if i.name not in inits}
    prod = {o: nd for nd in g.node for o in nd.output}

    def source(v):  # through Identity nodes and one-operand Concats (TorchScript writes those)
        while v in prod and (prod[v].op_type == "Identity" or (prod[v].op_type == "Concat" and len(prod[v].input) == 1)):
            v = prod[v].input[0]
        return v

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    pairs, others = [], []
    for o in g.output:
        nd = prod.get(source(o.name))
        if nd is not None and nd.op_type == "Concat" and len(nd.input) == 2 and source(nd.input[0]) in ins:
            past = source(nd.input[0])
            rank = len(dims(ins[past]))
            axis = next((a.i for a in nd.attribute if a.name == "axis"), 0)
            pairs.append((o.name, past, axis % rank if rank else axis))
        else:
            others.append(o.name)
    if not pairs:
        raise UserInputError(f"{name}: no output is a past input concatenated with new keys/values (present = "
                             "Concat(past_key_values.N, new)): not a past_key_values export")
    roles = {}
    for role in ("input_ids", "attention_mask", "position_ids"):
        hit = [k for k in ins if k == role or k.endswith(role)]
        if role == "input_ids" and not hit:
            raise UserInputError(f"{name}: no input_ids input (inputs: {', '.join(ins)})")
        roles[role] = hit[0] if hit else None
    known = {p for _, p, _ in pairs} | {v for v in roles.values() if v}
    extra = [k for k in ins if k not in known]
    if extra:
        raise UserInputError(f"{name}: inputs this loop cannot feed: {', '.join(extra)}")
    shp = dims(ins[pairs[0][1]])
    if len(shp) != 4 or pairs[0][2] != 2 or None in (shp[1], shp[3]):
        raise UserInputError(f"{name}: past inputs [batch, kv heads, past, head size] with fixed heads and size "
                             f"expected, got {shp} (sequence axis {pairs[0][2]})")
    return {"pairs": pairs, "logits": others[0] if others else None, "roles": roles,
            "inputs": list(ins), "outputs": [o.name for o in g.output], "layers": len(pairs) // 2,
            "kv_heads": shp[1], "head_dim": shp[3], "batch": shp[0]}


def _step_ids(input_ids, batch: int, pos: int, max_len: int):
    """(ids as int64 [batch, T], T) of one decode step, checked against the batch and the cache's room."""
    ids = np.ascontiguousarray(np.asarray(input_ids, dtype=np.int64))
    if ids.ndim != 2 or ids.shape[0] != batch or ids.shape[1] < 1:
        raise UserInputError(f"input_ids of shape {list(ids.shape)}: expected [{batch}, tokens]")
    t = ids.shape[1]
    if pos + t > max_len:
        raise UserInputError(f"the cache holds {max_len} positions: {pos} used, {t} more do not fit "
                             "(a larger max_len)")
    return ids, t


def _step_feed(roles: dict, ids: np.ndarray, pos: int) -> dict:
    """input_ids, and where the export has them an attention_mask of ones over past + new and position_ids
    pos + arange(T), by the export's input names (``roles``)."""
    b, t = ids.shape
    feed = {roles["input_ids"]: ids}
    if roles["attention_mask"]:
        feed[roles["attention_mask"]] = np.ones((b, pos + t), np.int64)
    if roles["position_ids"]:
        feed[roles["position_ids"]] = np.broadcast_to(np.arange(pos, pos + t, dtype=np.int64), (b, t)).copy()
    return feed


class PastKVGenerator(Generator):
    """Greedy decoding of a past_key_values export (``kv_binding``): ``step(feed dict) -> outputs`` in the
    graph's output order; each call feeds the previous call's present tensors as the past ones (by the
    graph's own pairing), ``attention_mask`` ones over past + new, ``position_ids`` past + arange(T)."""

    def __init__(self, step: Callable, binding: dict, max_len: int, batch: int = 1, dtype=np.float32):
        self.step, self.b, self.max_len, self.batch = step, binding, int(max_len), batch
        self._dtype = dtype
        self.out_index = {n: i for i, n in enumerate(binding["outputs"])}
        self.reset()

    def cache_dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    def reset(self) -> None:
        b = self.b
        self.pos = 0
        self.past = {p: np.zeros((self.batch, b["kv_heads"], 0, b["head_dim"]), self._dtype) for _, p, _ in b["pairs"]}

    def __call__(self, input_ids) -> np.ndarray:
        p = self.pos
        ids, t = _step_ids(input_ids, self.batch, p, self.max_len)
        feed = {**self.past, **_step_feed(self.b["roles"], ids, p)}
        outs = self.step(feed)
        for present, past, _ in self.b["pairs"]:
            self.past[past] = np.asarray(outs[self.out_index[present]])
        self.pos += t
        return np.asarray(outs[self.out_index[self.b["logits"]]])


def _feed_step_ort(path: str, threads: int) -> Callable:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def _feed_step_moec(compiled, binding: dict, threads: int) -> Callable:
    step = moec_step(compiled, threads)
    names = binding["inputs"]
    return lambda feed: step(*[feed[n] for n in names])


def compile_past_kv(path: str, binding: dict, *, target: str = "cpu", weights: str = "f32", verify: bool = True,
                    cache: bool = True, threads: int = 2):
    """moec.compile of a past_key_values export.  Its dims are tied (mask length = past + tokens, positions
    below the mask length) by the model, not by the graph's types, so moec's generated inputs (each
    symbol drawn alone) do not fit it: verification runs on consistent inputs instead -- a prefill
    (empty past) and a decode step over a random past -- against onnxruntime."""
    from moec.jit_api import compile as moec_compile
    cm = moec_compile(path, target=target, weights=weights, verify=False, cache=cache)
    if verify:
        ref = _feed_step_ort(path, threads)
        got = _feed_step_moec(cm, binding, threads)
        rng = np.random.default_rng(0)
        sets = []
        for p, t in ((0, 5), (7, 1)):
            feed = {binding["roles"]["input_ids"]: rng.integers(3, 50, (binding["batch"] or 1, t))}
            gen = PastKVGenerator(lambda f: None, binding, p + t, binding["batch"] or 1)
            for _, past, _ in binding["pairs"]:
                feed[past] = rng.standard_normal((binding["batch"] or 1, binding["kv_heads"], p,
                                                  binding["head_dim"])).astype(np.float32)
            if binding["roles"]["attention_mask"]:
                feed[binding["roles"]["attention_mask"]] = np.ones((gen.batch, p + t), np.int64)
            if binding["roles"]["position_ids"]:
                feed[binding["roles"]["position_ids"]] = np.arange(p, p + t, dtype=np.int64)[None].repeat(gen.batch, 0)
            sets.append(feed)
        worst = 0.0
        tol = 1e-4 if weights == "f32" else 5e-2
        for feed in sets:
            for a, b in zip(got(feed), ref(feed)):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.shape != b.shape:
                    raise UserInputError(f"{os.path.basename(path)}: moec's output shape {list(a.shape)} differs "
                                         f"from onnxruntime's {list(b.shape)}")
                err = float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max()))) if a.size else 0.0
                worst = max(worst, err)
        if worst > tol:
            from moec.errors import VerificationError
            raise VerificationError(f"{os.path.basename(path)}: moec differs from onnxruntime by {worst:.3g} "
                                    f"(relative to max(1, |ref|); tolerance {tol}) on a prefill and a decode step")
        cm.kv_verify_err = worst
    return cm


class InplaceKVGenerator(Generator):
    """Greedy decoding of a past_key_values export compiled with the kv-cache-inplace pass
    (``compile_past_kv_inplace``): the caches are buffers of capacity ``max_len`` this object allocates
    once, passed by pointer in place of the past inputs; each call passes ``pos`` (the rows held) and the
    artifact writes only the new rows into them (``moec.kv_append``).  Nothing is copied back: the call
    returns the logits alone."""

    def __init__(self, artifact, binding: dict, max_len: int, batch: int = 1, threads: int = 2,
                 dtype=np.float32):
        self.art, self.b, self.max_len, self.batch = artifact, binding, int(max_len), batch
        lib = getattr(artifact, "lib", None)
        if hasattr(lib, "nthreads"):
            lib.nthreads = threads
        self.names = list(artifact.input_names)
        self.buffers = {p: np.zeros((batch, binding["kv_heads"], self.max_len, binding["head_dim"]), dtype)
                        for _, p, _ in binding["pairs"]}
        self.out_index = {n: i for i, n in enumerate(artifact.output_names)}
        self._pos = np.zeros(1, np.int64)
        self.reset()

    def cache_dtype(self) -> np.dtype:
        return next(iter(self.buffers.values())).dtype

    def reset(self) -> None:
        self.pos = 0  # (rows >= pos are never read: the attention masks them)

    def __call__(self, input_ids) -> np.ndarray:
        p = self.pos
        ids, t = _step_ids(input_ids, self.batch, p, self.max_len)
        self._pos[0] = p
        feed = {"pos": self._pos, **self.buffers, **_step_feed(self.b["roles"], ids, p)}
        outs = self.art([feed[n] for n in self.names])
        self.pos += t
        return np.asarray(outs[self.out_index[self.b["logits"]]])


def compile_past_kv_inplace(path: str, binding: dict, max_len: int, *, target: str = "cpu", weights: str = "f32",
                            verify: bool = True, threads: int = 2, outdir: Optional[str] = None,
                            kv_cache: str = "f32"):
    """moec's build of a past_key_values export with the kv-cache-inplace pass (passes/kv_cache_inplace.py)
    for a cache of ``max_len`` rows of element type ``kv_cache``: returns (artifact, the module after the
    passes).  UserInputError when the pass cannot rewrite every present (its reasons).  ``verify``: a prefill
    and two decode steps against onnxruntime on the export (logits, relative to max(1, |ref|), tolerance 1e-4
    for f32 weights and cache; an f16 cache adds its rounding: 2^-11, tests/test_kv_f16.py)."""
    import tempfile
    from moec.driver import CompileOptions, compile_onnx
    from moec.passes.kv_cache_inplace import KvCacheInplace
    from moec.targets import backend as target_backend
    kp = KvCacheInplace(pairs=[(o, p) for o, p, _ in binding["pairs"]], capacity=int(max_len),
                        cache_dtype="" if check_kv_cache(kv_cache) == "f32" else kv_cache)
    d = outdir or os.path.join(tempfile.mkdtemp(prefix="moec_kv_"), "a")
    res = compile_onnx(path, d, CompileOptions(target=target, verify=False, weights=weights, threads=threads,
                                               extra_passes=[kp]))
    if kp.refused or "pos" not in res.module.main.arg_names:
        raise UserInputError(f"{os.path.basename(path)}: the cache cannot be kept in place: "
                             + "; ".join(kp.refused or ["nothing to rewrite"]))
    art = target_backend(target).load(res.outdir, threads=threads)
    if verify:
        ref = PastKVGenerator(_feed_step_ort(path, threads), binding, max_len, binding["batch"] or 1)
        got = InplaceKVGenerator(art, binding, max_len, binding["batch"] or 1, threads, KV_CACHE_TYPES[kv_cache])
        ids = np.random.default_rng(0).integers(3, 50, (got.batch, min(5, max_len - 2)))
        worst = 0.0
        for x in (ids, ids[:, :1], ids[:, 1:2]):
            a, b = np.asarray(got(x), np.float64), np.asarray(ref(x), np.float64)
            worst = max(worst, float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max()))))
        tol = (1e-4 if weights == "f32" else 5e-2) + (2.0 ** -11 if kv_cache == "f16" else 0.0)
        if worst > tol:
            from moec.errors import VerificationError
            raise VerificationError(f"{os.path.basename(path)}: moec's in-place cache build differs from "
                                    f"onnxruntime by {worst:.3g} (tolerance {tol})")
        art.kv_verify_err = worst
    return art, res.module


def is_past_kv_export(path: str) -> bool:
    try:
        kv_binding(path)
        return True
    except UserInputError:
        return False


# ---- the command: moec generate -------------------------------------------------------------------
def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="greedy decoding with a KV cache: prefill a prompt, then N steps; "
                                        "prints the tokens, prefill ms and decode tokens/s")
    g.add_argument("model", metavar="MODEL",
                   help="a transformers CausalLM checkpoint folder (config.json), a KV-cache step .onnx "
                        "(moec.decode.export_onnx), or an ONNX export with past_key_values inputs and present "
                        "outputs (transformers' cache contract: moec.decode.export_hf_kv, optimum-style)")
    g.add_argument("--prompt-ids", required=True, metavar="1,2,3", help="the prompt's token ids, comma-separated")
    g.add_argument("--steps", type=int, required=True, help="new tokens to generate")
    g.add_argument("--engine", choices=ENGINES, default="moec", help="who runs the step (default moec)")
    g.add_argument("--max-len", type=int, default=None, help="cache capacity (default prompt + steps)")
    g.add_argument("--target", default="cpu", help="moec target (default cpu)")
    g.add_argument("--weights", default="f32", help="moec weight storage (as moec compile)")
    g.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    g.add_argument("--no-verify", action="store_true", help="skip moec's verification of the compiled step")
    g.add_argument("--kv-cache", default=None, metavar="f16|f32",
                   help="the KV cache's element type: f16 (half the bytes per position; the default on moec's cpu, "
                        "triton and ascend targets, as llama.cpp) or f32 (the default of the torch / onnxruntime "
                        "engines); an ONNX step keeps its inputs' type")
    g.set_defaults(run_generate=cmd_generate)


def _parse_ids(text: str) -> List[int]:
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UserInputError(f"--prompt-ids {text!r}: comma-separated integers, e.g. 1,2,3") from None
    if not ids or min(ids) < 0:
        raise UserInputError(f"--prompt-ids {text!r}: at least one non-negative token id")
    return ids


def load_causal_lm(folder: str):
    """A transformers CausalLM from a checkpoint folder, in eval mode."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserInputError(f"{folder}: not a transformers checkpoint folder (no config.json) nor an .onnx file")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserInputError("a checkpoint folder needs transformers (pip install transformers)") from None
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def cmd_generate(a) -> int:
    ids = _parse_ids(a.prompt_ids)
    if a.steps < 1:
        raise UserInputError(f"--steps {a.steps}: at least 1")
    path = a.model
    if os.path.isfile(path) and path.endswith(".onnx"):
        model = path
    elif os.path.isdir(path):
        model = load_causal_lm(path)
        vocab = cache_geometry(model)["vocab"]
        if max(ids) >= vocab:
            raise UserInputError(f"--prompt-ids: token id {max(ids)} is outside the vocabulary ({vocab})")
    else:
        raise UserInputError(f"{path}: no such .onnx file or checkpoint folder")
    if a.kv_cache is not None:
        check_kv_cache(a.kv_cache)
    r = generate(model, ids, a.steps, max_len=a.max_len, engine=a.engine, target=a.target, weights=a.weights,
                 verify=not a.no_verify, threads=a.threads, kv_cache=a.kv_cache)
    print("tokens: " + ",".join(str(int(t)) for t in r.tokens[0]))
    print(f"prefill: {len(ids)} tokens in {r.prefill_ms:.2f} ms")
    print(f"kv cache: {r.kv_cache}")
    if r.decode_ms:
        print(f"decode: {len(r.decode_ms)} steps, {r.decode_tokens_per_s:.1f} tokens/s "
              f"(median {float(np.median(r.decode_ms)):.3f} ms per token)")
    return 0
