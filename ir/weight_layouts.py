"""Expert and bf16 weight panels: the layouts the C target's kernels read (rt_moe_f32.c's tile_bf16 and tile),
stored in the weights file at compile time (codegen/c/gemm_pack.py) in place of the plain weight.

The IR, the op semantics and the interpreter see the logical weight; only the weights file holds this
layout, and its entry in model.weights.json says so (``layout``: kind, ``nr``, ``version``), so the IR's
weight store (ir/weights.py) unpacks it when an artifact's module is loaded and the CPU loader refuses a
version its kernels do not read.  This module is the layout's one definition on the Python side (packer
and inverse); the C side's constants are ``MOEC_PAIR_NR`` and ``MOEC_PAIR_LAYOUT_VERSION`` in rt_moe.h,
checked against these when the generated C is compiled, and its run-time packer (weights that are not in
the weights file) is ``pack_b_bf16``.

A weight ``w`` [..., N, K] (bf16; the reduction is K, one output column per row, as moec.linear_q's
weight and moe.experts' w_in / w_out) becomes [..., ceil(N/NR), ceil(K/2), NR, 2]: column panel b, pair
p, column j holds (w[b*NR + j, 2p], w[b*NR + j, 2p + 1]), i.e. one little-endian uint32 per (p, j) with
w[.., 2p] in the low half; zero past N and K.  Its size is the weight's exactly when N % NR == 0 and K is
even (then it can replace the weight's bytes)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

PAIR_NR = 32
PAIR_LAYOUT_VERSION = 1
PAIR_KIND = "bf16_pairs"


def pair_layout() -> dict:
    """The ``layout`` entry model.weights.json records for a weight stored as pair panels."""
    return {"kind": PAIR_KIND, "nr": PAIR_NR, "version": PAIR_LAYOUT_VERSION}


def pair_shape(shape: Sequence[int]) -> tuple:
    """The panels' shape for a weight of ``shape`` [..., N, K]."""
    *lead, N, K = (int(d) for d in shape)
    return (*lead, -(-N // PAIR_NR), (K + 1) // 2, PAIR_NR, 2)


def pack_bf16_pairs(w: np.ndarray) -> np.ndarray:
    """w [..., N, K] (any dtype, stored as the same values in the result's dtype) -> its pair panels."""
    w = np.asarray(w)
    *lead, N, K = w.shape
    shp = pair_shape(w.shape)
    padded = np.zeros((*lead, shp[-4] * PAIR_NR, shp[-3] * 2), w.dtype)
    padded[..., :N, :K] = w
    # [..., nb, NR, P, 2] -> [..., nb, P, NR, 2]
    t = padded.reshape(*lead, shp[-4], PAIR_NR, shp[-3], 2)
    return np.ascontiguousarray(np.swapaxes(t, -3, -2))


def unpack_bf16_pairs(flat: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The plain weight of ``shape`` from its pair panels (``flat``: the panels' elements, in order)."""
    *lead, N, K = (int(d) for d in shape)
    shp = pair_shape(shape)
    p = np.asarray(flat).reshape(shp)
    t = np.swapaxes(p, -3, -2).reshape(*lead, shp[-4] * PAIR_NR, shp[-3] * 2)
    return np.ascontiguousarray(t[..., :N, :K])


# f32 expert k-panels: the f32 expert kernels' panels (rt_moe_f32.c's pack_b / tile; MOEC_KPANEL_NR and
# MOEC_KPANEL_LAYOUT_VERSION in rt_moe.h).  A weight w [..., N, K] (moe.experts' w_in / w_out, f32) becomes
# [..., ceil(N/NR), K, NR]: column panel b, row k, column j holds w[b*NR + j, k], zero past N (the f32 GEMM's
# gemm_panels of the transposed matrix, per expert, at the experts' fixed width).  Its size is the weight's
# exactly when N % NR == 0.
KPANEL_NR = 32
KPANEL_LAYOUT_VERSION = 1
KPANEL_KIND = "f32_k_panels"


def kpanel_layout() -> dict:
    return {"kind": KPANEL_KIND, "nr": KPANEL_NR, "version": KPANEL_LAYOUT_VERSION}


def kpanel_shape(shape: Sequence[int]) -> tuple:
    *lead, N, K = (int(d) for d in shape)
    return (*lead, -(-N // KPANEL_NR), K, KPANEL_NR)


def pack_k_panels(w: np.ndarray) -> np.ndarray:
    """w [..., N, K] -> its k-panels (same dtype)."""
    w = np.asarray(w)
    *lead, N, K = w.shape
    shp = kpanel_shape(w.shape)
    padded = np.zeros((*lead, shp[-3] * KPANEL_NR, K), w.dtype)
    padded[..., :N, :] = w
    t = padded.reshape(*lead, shp[-3], KPANEL_NR, K)
    return np.ascontiguousarray(np.swapaxes(t, -2, -1))


def unpack_k_panels(flat: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    *lead, N, K = (int(d) for d in shape)
    shp = kpanel_shape(shape)
    t = np.swapaxes(np.asarray(flat).reshape(shp), -2, -1).reshape(*lead, shp[-3] * KPANEL_NR, K)
    return np.ascontiguousarray(t[..., :N, :])


# int8 panels of w8a8 (int8 weights, dynamic int8 activations: rt_moe_f32.c's pack_i8_panel / tile_i8;
# MOEC_I8PANEL_NR and MOEC_I8PANEL_LAYOUT_VERSION in rt_moe.h).  A weight w [..., N, K] int8 becomes
# [..., ceil(N/NR), P * NR * 4 + NR * 4] bytes, P = ceil(K/4): per column panel b, the codes of group p of four
# reduction steps for each column j (byte (p * NR + j) * 4 + i holds w[b*NR + j, 4p + i]; the vpdpbusd operand
# layout), then the NR columns' code sums as little-endian int32; zero past N and K.  Always larger than the
# weight (the sums): stored as the weight's entry, at the end of the file.
I8PANEL_NR = 32
I8PANEL_LAYOUT_VERSION = 1
I8PANEL_KIND = "i8_panels"


def i8panel_layout() -> dict:
    return {"kind": I8PANEL_KIND, "nr": I8PANEL_NR, "version": I8PANEL_LAYOUT_VERSION}


def pack_i8_panels(w: np.ndarray) -> np.ndarray:
    """w [..., N, K] int8 -> its panels, uint8 [..., ceil(N/NR), P * NR * 4 + NR * 4]."""
    w = np.asarray(w, np.int8)
    *lead, N, K = w.shape
    nb, P = -(-N // I8PANEL_NR), -(-K // 4)
    padded = np.zeros((*lead, nb * I8PANEL_NR, P * 4), np.int8)
    padded[..., :N, :K] = w
    codes = np.swapaxes(padded.reshape(*lead, nb, I8PANEL_NR, P, 4), -3, -2).reshape(*lead, nb, P * I8PANEL_NR * 4)
    sums = padded.astype("<i4").sum(-1, dtype="<i4").reshape(*lead, nb, I8PANEL_NR)
    return np.ascontiguousarray(np.concatenate([codes.view(np.uint8), sums.view(np.uint8).reshape(*lead, nb, -1)], -1))


def unpack_i8_panels(flat: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    *lead, N, K = (int(d) for d in shape)
    nb, P = -(-N // I8PANEL_NR), -(-K // 4)
    p = np.asarray(flat).view(np.int8).reshape(*lead, nb, P * I8PANEL_NR * 4 + I8PANEL_NR * 4)
    codes = p[..., :P * I8PANEL_NR * 4].reshape(*lead, nb, P, I8PANEL_NR, 4)
    t = np.swapaxes(codes, -3, -2).reshape(*lead, nb * I8PANEL_NR, P * 4)
    return np.ascontiguousarray(t[..., :N, :K])


# w4a8 (int4 weights, dynamic int8 activations: rt_moe_f32.c's tile_w4a8; MOEC_W4A8_NR and MOEC_W4A8_LAYOUT_VERSION
# in rt_moe.h).  Three entries, each the same size as the tensor it replaces when N % NR == 0 and the group G is a
# multiple of 4 (then each is written in place; no second copy of the weights, decode reads the same panels):
# - the nibbles, w [..., N, K/2] uint8 (two codes a byte, k even in the low nibble) -> [..., ceil(N/NR), K/G, G4/4, 64]
#   (G4 = G rounded up to 4): per column panel b, group g and step p, byte 4c + i holds k = gG + 4p + i of column
#   b*NR + c in its low nibble and of column b*NR + c + 16 in its high nibble (the vpdpbusd operand of two 16-lane
#   halves); zero past N and G.  The layout records the group (``group``): the inverse needs it.
# - the scales s [..., N, K/G] f32 and the zero points z (same shape, f32) -> group-major [..., ceil(N/NR), K/G, NR]
#   (zero past N): one group's NR column scales are one 128-byte load.
W4A8_NR = 32
W4A8_LAYOUT_VERSION = 1
W4A8_KIND = "w4a8_nibbles"
GMAJOR_KIND = "group_major"


def w4a8_layout(group: int) -> dict:
    return {"kind": W4A8_KIND, "nr": W4A8_NR, "version": W4A8_LAYOUT_VERSION, "group": int(group)}


def gmajor_layout() -> dict:
    return {"kind": GMAJOR_KIND, "nr": W4A8_NR, "version": W4A8_LAYOUT_VERSION}


def _nibbles(packed: np.ndarray) -> np.ndarray:
    p = np.asarray(packed, np.uint8)
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.uint8)
    out[..., 0::2], out[..., 1::2] = p & 15, p >> 4
    return out


# [..., nb, 2 halves, 16 columns, ng, P, 4] <-> [..., nb, ng, P, 2 halves, 16 columns, 4] (its own inverse)
_W4A8_PERM = (0, 3, 4, 1, 2, 5)


def _lead_axes(lead) -> tuple:
    return tuple(range(len(lead)))


def pack_w4a8_nibbles(w: np.ndarray, group: int) -> np.ndarray:
    """w [..., N, K/2] uint8 (int4 codes, two a byte) -> its panels uint8 [..., ceil(N/NR), K/G, G4/4, 64]."""
    n = _nibbles(w)
    *lead, N, K = n.shape
    G = int(group) or K
    ng, G4, nb = K // G, -(-G // 4) * 4, -(-N // W4A8_NR)
    padded = np.zeros((*lead, nb * W4A8_NR, ng, G4), np.uint8)
    padded[..., :N, :, :G] = n.reshape(*lead, N, ng, G)
    # [..., nb, 2 halves, 16 columns, ng, P, 4] -> [..., nb, ng, P, 16 columns, 4] per half
    t = padded.reshape(*lead, nb, 2, 16, ng, G4 // 4, 4).transpose(*_lead_axes(lead), *(len(lead) + a for a in _W4A8_PERM))
    return np.ascontiguousarray(t[..., 0, :, :] | (t[..., 1, :, :] << 4)).reshape(*lead, nb, ng, G4 // 4, 64)


def unpack_w4a8_nibbles(flat: np.ndarray, shape: Sequence[int], group: int) -> np.ndarray:
    *lead, N, Kh = (int(d) for d in shape)
    K = 2 * Kh
    G = int(group) or K
    ng, G4, nb = K // G, -(-G // 4) * 4, -(-N // W4A8_NR)
    p = np.asarray(flat).view(np.uint8).reshape(*lead, nb, ng, G4 // 4, 16, 4)
    t = np.stack([p & 15, p >> 4], -3).transpose(*_lead_axes(lead), *(len(lead) + a for a in _W4A8_PERM))  # [..., nb, 2, 16, ng, P, 4]
    n = t.reshape(*lead, nb * W4A8_NR, ng, G4)[..., :N, :, :G].reshape(*lead, N, K)
    return np.ascontiguousarray(n[..., 0::2] | (n[..., 1::2] << 4))


def pack_group_major(s: np.ndarray) -> np.ndarray:
    """s [..., N, ng] -> [..., ceil(N/NR), ng, NR] (same dtype, zero past N)."""
    s = np.asarray(s)
    *lead, N, ng = s.shape
    nb = -(-N // W4A8_NR)
    padded = np.zeros((*lead, nb * W4A8_NR, ng), s.dtype)
    padded[..., :N, :] = s
    return np.ascontiguousarray(np.swapaxes(padded.reshape(*lead, nb, W4A8_NR, ng), -2, -1))


def unpack_group_major(flat: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    *lead, N, ng = (int(d) for d in shape)
    nb = -(-N // W4A8_NR)
    t = np.swapaxes(np.asarray(flat).reshape(*lead, nb, ng, W4A8_NR), -2, -1).reshape(*lead, nb * W4A8_NR, ng)
    return np.ascontiguousarray(t[..., :N, :])


_VERSIONS = {PAIR_KIND: (PAIR_NR, PAIR_LAYOUT_VERSION), KPANEL_KIND: (KPANEL_NR, KPANEL_LAYOUT_VERSION),
             I8PANEL_KIND: (I8PANEL_NR, I8PANEL_LAYOUT_VERSION), W4A8_KIND: (W4A8_NR, W4A8_LAYOUT_VERSION),
             GMAJOR_KIND: (W4A8_NR, W4A8_LAYOUT_VERSION)}
_UNPACK = {PAIR_KIND: unpack_bf16_pairs, KPANEL_KIND: unpack_k_panels, I8PANEL_KIND: unpack_i8_panels,
           W4A8_KIND: lambda flat, shape, layout: unpack_w4a8_nibbles(flat, shape, layout.get("group", 0)),
           GMAJOR_KIND: unpack_group_major}
_WITH_LAYOUT = {W4A8_KIND}


def unpack(flat: np.ndarray, layout: dict, shape: Sequence[int]) -> np.ndarray:
    """The plain weight of ``shape`` from a layout of this module (checked first)."""
    check_layout(layout)
    if layout["kind"] in _WITH_LAYOUT:
        return _UNPACK[layout["kind"]](flat, shape, layout)
    return _UNPACK[layout["kind"]](flat, shape)


def check_layout(layout: dict, what: str = "a weight") -> None:
    """Raise ValueError unless ``layout`` is one this moec's kernels read (``gemm_panels``: the f32 GEMM's,
    ir/weights.py)."""
    kind = layout.get("kind") if isinstance(layout, dict) else None
    if kind == "gemm_panels":
        return
    if kind not in _VERSIONS:
        raise ValueError(f"{what} is stored in an unknown layout {kind!r}: recompile the model")
    nr, version = _VERSIONS[kind]
    if layout.get("version") != version or layout.get("nr") != nr:
        raise ValueError(f"{what} is stored as {kind} of version {layout.get('version')!r} (width "
                         f"{layout.get('nr')!r}); this moec reads version {version} (width {nr}): recompile the model")
