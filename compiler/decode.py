"""Greedy decoding with a KV cache (issue 17 item 4): ``moec.generate(...)`` and ``moec generate``.

A transformers CausalLM is compiled as one *step* function (``KVStep``)::

    step(input_ids [B, T] int64, pos [1] int64, k_0, v_0, ..., k_{L-1}, v_{L-1}) -> (logits [B, T, V],
                                                                                    new_kv [L, 2, B, Hkv, T, D])

The cache is preallocated once, at a fixed capacity M, and owned by the caller (``Generator``):
``k_l`` is [B, Hkv, D, M] (keys stored transposed, so the score matmul ``q @ k_l`` reads it as it lies,
no transpose), ``v_l`` is [B, Hkv, M, D].  Positions ``< pos`` hold the context.  The step reads the
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
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from moec.errors import UserInputError

ATTN_NAME = "moec_kv"
_CTX: List[dict] = []  # the running step's cache inputs (a stack: the attention function reads the top)


# ---- the step module ------------------------------------------------------------------------------
def _attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention of T new queries over the cache (read in place) and the T new keys; see module doc."""
    import torch
    ctx = _CTX[-1]
    layer = module.layer_idx
    kc, vc, pos = ctx["k"][layer], ctx["v"][layer], ctx["pos"]  # [B,Hkv,D,M], [B,Hkv,M,D], [1]
    ctx["new"][layer] = (key, value)
    b, hq, t, d = query.shape
    hkv = key.shape[1]
    g = hq // hkv
    m = kc.shape[-1]
    q = query.contiguous().reshape(b, hkv, g * t, d)
    # the cache enters 3-D batched matmuls as it lies (reshapes are views; a 4-D matmul would be
    # exported as expand + bmm, and an expand is a copy)
    s_past = torch.bmm(q.reshape(b * hkv, g * t, d), kc.reshape(b * hkv, d, m)).reshape(b, hkv, g, t, m) * scaling
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
            return logits, new

    _STEP_CLASSES["base"] = _KVStepBase
    return _KVStepBase


def KVStep(model):  # noqa: N802 - a class per layer count (torch.export wants named arguments)
    """One decoding step of ``model`` over an external cache (see the module doc): a module whose
    forward takes ``input_ids, pos, k_0, v_0, ..., k_{L-1}, v_{L-1}``."""
    n = cache_geometry(model)["layers"]
    cls = _STEP_CLASSES.get(n)
    if cls is None:
        names = input_names(n)[2:]
        ns: dict = {}
        exec(f"def forward(self, input_ids, pos, {', '.join(names)}):\n"
             f"    return self._step(input_ids, pos, ({', '.join(names)},))\n", ns)
        cls = _STEP_CLASSES[n] = type(f"KVStep{n}", (_step_base(),), {"forward": ns["forward"]})
    return cls(model)


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

    @property
    def decode_tokens_per_s(self) -> float:
        if not self.decode_ms:
            return float("nan")
        rows = self.tokens.shape[0]
        return rows * len(self.decode_ms) / (sum(self.decode_ms) / 1000.0)


class Generator:
    """Greedy decoding of a step function (``step(input_ids, pos, k_0, v_0, ...) -> (logits, new_kv)``,
    numpy in and out) over a cache this object owns: ``k`` [L, B, Hkv, D, M] and ``v``
    [L, B, Hkv, M, D], allocated once; each call reads it in place and gets only the new tokens'
    keys/values back, written here at the current position."""

    def __init__(self, step: Callable, layers: int, kv_heads: int, head_dim: int, max_len: int, batch: int = 1,
                 dtype=np.float32):
        self.step = step
        self.max_len = int(max_len)
        self.k = np.zeros((layers, batch, kv_heads, head_dim, self.max_len), dtype)
        self.v = np.zeros((layers, batch, kv_heads, self.max_len, head_dim), dtype)
        self.pos = 0
        self._cache_args = [a for l in range(layers) for a in (self.k[l], self.v[l])]  # views, no copies

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
        logits, new = self.step(ids, np.array([self.pos], np.int64), *self._cache_args)
        new = np.asarray(new)
        p = self.pos
        self.k[:, :, :, :, p:p + t] = new[:, 0].transpose(0, 1, 2, 4, 3)
        self.v[:, :, :, p:p + t, :] = new[:, 1]
        self.pos += t
        return np.asarray(logits)

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
        kept = [logits] if keep_logits else []
        toks = [logits[:, -1].argmax(-1)]
        decode_ms = []
        for _ in range(steps - 1):
            t0 = time.perf_counter()
            logits = self(toks[-1][:, None])
            decode_ms.append((time.perf_counter() - t0) * 1e3)
            if keep_logits:
                kept.append(logits)
            toks.append(logits[:, -1].argmax(-1))
        return GenerateResult(np.stack(toks, 1), prefill_ms, decode_ms, kept)


# ---- step functions: moec, onnxruntime, torch -----------------------------------------------------
def step_inputs(geo: dict, max_len: int, tokens: int, batch: int = 1, pos: int = 0) -> tuple:
    """Example inputs of the step (torch tensors): ids [B, tokens], pos, zero caches of capacity max_len."""
    import torch
    ids = torch.randint(3, max(4, min(geo["vocab"], 100)), (batch, tokens), generator=torch.Generator().manual_seed(0))
    cache = []
    for _ in range(geo["layers"]):
        cache.append(torch.zeros(batch, geo["kv_heads"], geo["head_dim"], max_len))
        cache.append(torch.zeros(batch, geo["kv_heads"], max_len, geo["head_dim"]))
    return (ids, torch.tensor([pos]), *cache)


def input_names(layers: int) -> List[str]:
    return ["input_ids", "pos"] + [f"{kv}_{l}" for l in range(layers) for kv in ("k", "v")]


def compile_step(model, max_len: int, *, target: str = "cpu", weights: str = "f32", verify: bool = True,
                 cache: bool = True, **kw):
    """``moec.compile`` of ``KVStep(model)``: tokens dynamic, the cache capacity ``max_len`` fixed."""
    from moec.jit_api import compile as moec_compile
    geo = cache_geometry(model)
    ex = step_inputs(geo, max_len, 4)
    dims = {0: {1: "T"}, **{i: {} for i in range(1, len(ex))}}
    return moec_compile(KVStep(model).eval(), ex, target=target, weights=weights, verify=verify, cache=cache,
                        dynamic_dims=dims, **kw)


def export_onnx(model, path: str, max_len: int, dynamo: bool = True) -> str:
    """The step of ``model`` as an ONNX file (inputs ``input_ids``, ``pos``, ``k_l``/``v_l``; outputs
    ``logits``, ``new_kv``), tokens dynamic, with either torch.onnx exporter."""
    import warnings
    import torch
    geo = cache_geometry(model)
    ex = step_inputs(geo, max_len, 4)
    names = input_names(geo["layers"])
    step = KVStep(model).eval()
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
    n = 0
    while f"k_{n}" in ins and f"v_{n}" in ins:
        n += 1
    if not n or "input_ids" not in ins or "pos" not in ins:
        raise UserInputError(f"{os.path.basename(path)} is not a KV-cache step (inputs input_ids, pos, k_0, v_0, ...; "
                             "made by moec.generate.export_onnx)")
    b, hkv, d, m = ins["k_0"]
    if None in (b, hkv, d, m):
        raise UserInputError(f"{os.path.basename(path)}: the cache inputs need fixed shapes")
    return {"layers": n, "kv_heads": hkv, "head_dim": d, "max_len": m, "batch": b}


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
             keep_logits: bool = False, cache: bool = True) -> GenerateResult:
    """Greedy decoding with a KV cache: the prompt in one call (prefill), then ``steps`` new tokens.

    ``model``: a transformers CausalLM (``torch.nn.Module``), or the path of a step exported by
    ``export_onnx``.  ``engine``: "moec" (compiled for ``target`` with ``weights``), "onnxruntime"
    (an ONNX step; a module is exported first with torch.onnx's dynamo exporter) or "torch" (the
    step in eager PyTorch; modules only).  ``max_len``: the cache capacity (default: prompt + steps;
    an ONNX step has its own).  Returns a :class:`GenerateResult` (tokens [B, steps], prefill ms,
    decode ms per step, ``decode_tokens_per_s``)."""
    if engine not in ENGINES:
        raise UserInputError(f"engine={engine!r}: choose {', '.join(ENGINES)}")
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
        geo = onnx_geometry(os.fspath(model))
        if max_len is not None and max_len != geo["max_len"]:
            raise UserInputError(f"max_len={max_len}: the ONNX step's cache holds {geo['max_len']} positions")
        max_len = geo["max_len"]
        batch = geo["batch"]
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
        if engine == "moec":
            step = moec_step(compile_step(model, max_len, target=target, weights=weights, verify=verify, cache=cache),
                             threads)
        elif engine == "torch":
            step = torch_step(model)
        else:
            import tempfile
            d = tempfile.mkdtemp(prefix="moec_step_")
            step = ort_step(export_onnx(model, os.path.join(d, "step.onnx"), max_len), threads)
    if need > max_len:
        raise UserInputError(f"prompt ({prompt.shape[1]}) + steps ({steps}) = {need} positions; the cache holds "
                             f"{max_len}")
    if prompt.shape[0] != batch:
        raise UserInputError(f"prompt batch {prompt.shape[0]}: the step was built for batch {batch}")
    gen = Generator(step, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len, batch)
    return gen.generate(prompt, steps, keep_logits=keep_logits)


# ---- the command: moec generate -------------------------------------------------------------------
def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="greedy decoding with a KV cache: prefill a prompt, then N steps; "
                                        "prints the tokens, prefill ms and decode tokens/s")
    g.add_argument("model", metavar="MODEL",
                   help="a transformers CausalLM checkpoint folder (config.json), or a KV-cache step .onnx "
                        "(moec.generate.export_onnx)")
    g.add_argument("--prompt-ids", required=True, metavar="1,2,3", help="the prompt's token ids, comma-separated")
    g.add_argument("--steps", type=int, required=True, help="new tokens to generate")
    g.add_argument("--engine", choices=ENGINES, default="moec", help="who runs the step (default moec)")
    g.add_argument("--max-len", type=int, default=None, help="cache capacity (default prompt + steps)")
    g.add_argument("--target", default="cpu", help="moec target (default cpu)")
    g.add_argument("--weights", default="f32", help="moec weight storage (as moec compile)")
    g.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    g.add_argument("--no-verify", action="store_true", help="skip moec's verification of the compiled step")
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
    r = generate(model, ids, a.steps, max_len=a.max_len, engine=a.engine, target=a.target, weights=a.weights,
                 verify=not a.no_verify, threads=a.threads)
    print("tokens: " + ",".join(str(int(t)) for t in r.tokens[0]))
    print(f"prefill: {len(ids)} tokens in {r.prefill_ms:.2f} ms")
    if r.decode_ms:
        print(f"decode: {len(r.decode_ms)} steps, {r.decode_tokens_per_s:.1f} tokens/s "
              f"(median {float(np.median(r.decode_ms)):.3f} ms per token)")
    return 0
