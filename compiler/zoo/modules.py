"""PyTorch MoE modules written from shared/design/moe-routing.md (not from transformers).

Each forward takes x [T, D] and returns y [T, D].  Experts run in a Python loop over experts,
the way Hugging Face modules are written, so exporters unroll them.  Routing runs in f32 and its
weights are cast to the activations' type before they scale expert outputs (as Hugging Face does),
so every module also runs in bf16 / f16 (``module.to(torch.bfloat16)``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PlainFFN(nn.Module):
    def __init__(self, d, f, act="relu"):
        super().__init__()
        self.wi = nn.Linear(d, f, bias=False)
        self.wo = nn.Linear(f, d, bias=False)
        self.act = act

    def forward(self, x):
        h = self.wi(x)
        h = F.relu(h) if self.act == "relu" else F.gelu(h)
        return self.wo(h)


def _loop_combine(x, experts, w, ids):
    """out[t] = sum_j w[t, j] * E_{ids[t, j]}(x[t]) as an unrolled per-expert loop."""
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        tok, slot = torch.where(ids == e)
        y = expert(x[tok]) * w[tok, slot].unsqueeze(-1)
        out = out.index_add(0, tok, y)
    return out


class Mixtral(nn.Module):
    family = "mixtral"

    def __init__(self, d=64, f=96, e=8, k=2):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(d, f) for _ in range(e)])

    def route(self, x):
        p = F.softmax(self.gate(x), dim=-1, dtype=torch.float)
        w, ids = torch.topk(p, self.k, dim=-1)
        return w / w.sum(dim=-1, keepdim=True), ids

    def forward(self, x):
        w, ids = self.route(x)
        return _loop_combine(x, self.experts, w.to(x.dtype), ids)


class Qwen3Moe(Mixtral):
    """Qwen3-MoE / OLMoE: softmax, top-k, norm_topk_prob=True."""
    family = "qwen3-moe/olmoe"

    def __init__(self, d=64, f=48, e=16, k=4):
        super().__init__(d, f, e, k)


class Qwen2Moe(nn.Module):
    """softmax, top-k, no renormalisation, plus a shared expert with a sigmoid gate."""
    family = "qwen2-moe"

    def __init__(self, d=64, f=48, e=8, k=2, fs=96):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(d, f) for _ in range(e)])
        self.shared_expert = SwiGLU(d, fs)
        self.shared_expert_gate = nn.Linear(d, 1, bias=False)

    def forward(self, x):
        p = F.softmax(self.gate(x), dim=-1, dtype=torch.float)
        w, ids = torch.topk(p, self.k, dim=-1)
        y = _loop_combine(x, self.experts, w.to(x.dtype), ids)
        return y + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)


class Dbrx(Mixtral):
    """softmax, top-k, w / ||w||_1."""
    family = "dbrx"

    def __init__(self, d=64, f=48, e=8, k=4):
        super().__init__(d, f, e, k)

    def route(self, x):
        p = F.softmax(self.gate(x), dim=-1, dtype=torch.float)
        w, ids = torch.topk(p, self.k, dim=-1)
        return w / torch.norm(w, p=1, dim=-1, keepdim=True), ids


class Granite(Mixtral):
    """top-k of raw logits, softmax over the k."""
    family = "granite-moe"

    def __init__(self, d=64, f=48, e=8, k=2):
        super().__init__(d, f, e, k)

    def route(self, x):
        v, ids = torch.topk(self.gate(x), self.k, dim=-1)
        return F.softmax(v, dim=-1, dtype=torch.float), ids


class DeepSeekV2(nn.Module):
    """softmax, group-limited (max group score), top-k, routed scaling, shared experts."""
    family = "deepseek-v2"

    def __init__(self, d=64, f=32, e=16, k=4, n_group=4, topk_group=2, scale=2.5, n_shared=2):
        super().__init__()
        self.k, self.g, self.tg, self.scale = k, n_group, topk_group, scale
        self.gate = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(d, f) for _ in range(e)])
        self.shared_experts = SwiGLU(d, f * n_shared)

    def select(self, s, c):
        T, E = c.shape
        gs = self.group_scores(c.view(T, self.g, E // self.g))
        gidx = torch.topk(gs, self.tg, dim=-1)[1]
        gmask = torch.zeros_like(gs).scatter(1, gidx, 1.0)
        mask = gmask.unsqueeze(-1).expand(T, self.g, E // self.g).reshape(T, E)
        c = c.masked_fill(mask == 0, float("-inf"))
        ids = torch.topk(c, self.k, dim=-1)[1]
        return torch.gather(s, 1, ids), ids

    def group_scores(self, cg):
        return cg.max(dim=-1).values

    def weights(self, w):
        return w * self.scale

    def scores(self, logits):
        return F.softmax(logits, dim=-1, dtype=torch.float)

    def forward(self, x):
        s = self.scores(self.gate(x))
        w, ids = self.select(s, self.corrected(s))
        y = _loop_combine(x, self.experts, self.weights(w).to(x.dtype), ids)
        return y + self.shared_experts(x)

    def corrected(self, s):
        return s


class DeepSeekV3(DeepSeekV2):
    """sigmoid scores, correction bias for selection only, top-2-sum group score, renorm, scaling."""
    family = "deepseek-v3"

    def __init__(self, **kw):
        super().__init__(**kw)
        e = len(self.experts)
        self.e_score_correction_bias = nn.Parameter(torch.randn(e) * 0.1)

    def scores(self, logits):
        return torch.sigmoid(logits.float())

    def corrected(self, s):
        return s + self.e_score_correction_bias

    def group_scores(self, cg):
        return torch.topk(cg, 2, dim=-1)[0].sum(dim=-1)

    def weights(self, w):
        return w / (w.sum(dim=-1, keepdim=True) + 1e-20) * self.scale


class Switch(nn.Module):
    """top-1 with capacity C: tokens over capacity pass through unchanged, else p[e] * E_e(x)."""
    family = "switch"

    def __init__(self, d=64, f=96, e=8, capacity=2):
        super().__init__()
        self.capacity = capacity
        self.router = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([PlainFFN(d, f, "relu") for _ in range(e)])

    def forward(self, x):
        p = F.softmax(self.router(x), dim=-1, dtype=torch.float)
        w, e = torch.max(p, dim=-1)
        onehot = F.one_hot(e, p.shape[-1])
        pos = torch.cumsum(onehot, dim=0) * onehot
        keep = pos.sum(-1) <= self.capacity
        ids = torch.where(keep, e, torch.full_like(e, -1)).unsqueeze(-1)
        y = _loop_combine(x, self.experts, w.unsqueeze(-1).to(x.dtype), ids)
        return torch.where(keep.unsqueeze(-1), y, x)


class GptOss(nn.Module):
    """router with bias, softmax after top-k, interleaved gate/up [E, 2F, D] with biases,
    clamped SwiGLU, down projection with bias."""
    family = "gpt-oss"

    def __init__(self, d=64, f=32, e=8, k=2):
        super().__init__()
        self.k = k
        self.router = nn.Linear(d, e, bias=True)
        self.gate_up_proj = nn.Parameter(torch.randn(e, 2 * f, d) / d ** 0.5)
        self.gate_up_bias = nn.Parameter(torch.randn(e, 2 * f) * 0.1)
        self.down_proj = nn.Parameter(torch.randn(e, d, f) / f ** 0.5)
        self.down_bias = nn.Parameter(torch.randn(e, d) * 0.1)

    def expert(self, e, x):
        gu = F.linear(x, self.gate_up_proj[e], self.gate_up_bias[e])
        g, u = gu[..., 0::2], gu[..., 1::2]
        g = g.clamp(max=7.0)
        u = u.clamp(min=-7.0, max=7.0)
        h = (u + 1) * g * torch.sigmoid(1.702 * g)
        return F.linear(h, self.down_proj[e], self.down_bias[e])

    def forward(self, x):
        v, ids = torch.topk(self.router(x), self.k, dim=-1)
        w = F.softmax(v, dim=-1, dtype=torch.float).to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(self.gate_up_proj.shape[0]):
            tok, slot = torch.where(ids == e)
            out = out.index_add(0, tok, self.expert(e, x[tok]) * w[tok, slot].unsqueeze(-1))
        return out


class Llama4(nn.Module):
    """top-1 of raw logits, w = sigmoid(v) scales the expert INPUT, plus a shared expert."""
    family = "llama-4"

    def __init__(self, d=64, f=48, e=8):
        super().__init__()
        self.router = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([SwiGLU(d, f) for _ in range(e)])
        self.shared_expert = SwiGLU(d, f)

    def forward(self, x):
        v, ids = torch.topk(self.router(x), 1, dim=-1)
        w = torch.sigmoid(v.float()).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(ids == e)
            out = out.index_add(0, tok, expert(x[tok] * w[tok, slot].unsqueeze(-1)))
        return out + self.shared_expert(x)


class MixtralFused(nn.Module):
    """Mixtral routing with transformers-5 style fused expert tensors gate_up [E, 2F, D],
    down [E, D, F], indexed per expert inside the loop."""
    family = "mixtral"

    def __init__(self, d=64, f=96, e=8, k=2):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(d, e, bias=False)
        self.gate_up_proj = nn.Parameter(torch.randn(e, 2 * f, d) / d ** 0.5)
        self.down_proj = nn.Parameter(torch.randn(e, d, f) / f ** 0.5)

    def forward(self, x):
        p = F.softmax(self.gate(x), dim=-1, dtype=torch.float)
        w, ids = torch.topk(p, self.k, dim=-1)
        w = (w / w.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(self.gate_up_proj.shape[0]):
            tok, slot = torch.where(ids == e)
            g, u = F.linear(x[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(g) * u, self.down_proj[e])
            out = out.index_add(0, tok, y * w[tok, slot].unsqueeze(-1))
        return out


class MixtralDense(Mixtral):
    """Dense all-experts formulation: every expert on every token, times a [T, E] mask."""
    family = "mixtral"

    def forward(self, x):
        w, ids = self.route(x)
        mask = torch.zeros(x.shape[0], len(self.experts), dtype=w.dtype, device=x.device).scatter(1, ids, w)
        mask = mask.to(x.dtype)
        ys = torch.stack([ex(x) for ex in self.experts], dim=1)  # [T, E, D]
        return (ys * mask.unsqueeze(-1)).sum(dim=1)


ALL = [Mixtral, Qwen2Moe, Qwen3Moe, Dbrx, Granite, DeepSeekV2, DeepSeekV3, Switch, GptOss, Llama4, MixtralFused,
       MixtralDense]
