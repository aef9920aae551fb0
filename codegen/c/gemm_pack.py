"""Compile-time packing of dense weights for the C target's GEMM (runtime: rt_gemm_f32.c).

Every f32 ``moec.matmul`` / ``moec.gemm`` whose right operand is a 2-D weight from the weights file
gets that weight's panels: op(B) as [K, N], cut into column panels of NR (the last zero-padded) and
laid out [ceil(N/NR)][K][NR], so the micro-kernel streams one contiguous panel per NR output columns.
NR is twice the vector width the runtime is compiled for (``-DMOEC_VBYTES`` in the target's flags;
the runtime checks it at each call).

Only what the kernels read is stored.  A weight whose every user is a packed op (one orientation) and
whose N is a multiple of NR has panels exactly its own size: they are written over the weight's bytes
in the weights file, and its entry in model.weights.json says so (``layout``: the IR's weight store
unpacks it when the artifact's module is loaded, ir/weights.py); the generated code binds the
constant there too (its shape is all the packed kernels read of it).  Any other weight (another user
reads the plain matrix, or N needs a zero-padded last panel) keeps its bytes and gets its panels
appended after the IR's entries (not in model.weights.json: the IR module never sees them).

bf16 weights of ``moec.linear_q`` and ``moe.experts`` (mode bf16) get the bf16 kernels' pair panels, f32
``moe.experts`` weights the f32 expert kernels' k-panels, w8a8's int8 weights their int8 panels, and w4a8's int4
weights tile_w4a8's nibble panels with their scales and zero points group-major (the layouts and their versions:
ir/weight_layouts.py), the same way.  A weight whose every user reads its panels
(in one layout) is stored once, as the panels: in its place when they have its size, else as its entry at
the end of the file (its plain bytes dropped: ``_compact``; padded panels, w8a8's column sums); a weight
another op also reads keeps its bytes and gets its panels appended.  The generated code passes them to the
kernels (``moec_wq.pk_in`` / ``pk_out``), which read them where they lie: no copy and no packing at run time.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from moec.ir import DType, Module
from moec.ir.core import ResourceRef
from moec.ir.weight_layouts import (gmajor_layout, i8panel_layout, kpanel_layout, pack_bf16_pairs, pack_group_major,
                                    pack_i8_panels, pack_k_panels, pack_w4a8_nibbles, pair_layout, w4a8_layout)

ALIGN = 64


def panel_width(cflags) -> int:
    """NR for a target's compiler flags (the runtime's GNR: 2 * MOEC_VBYTES / 4)."""
    vbytes = 16
    for f in cflags or ():
        if f.startswith("-DMOEC_VBYTES="):
            vbytes = int(f.split("=", 1)[1])
    return 2 * vbytes // 4


def _weight_key(v) -> Optional[str]:
    o = v.owner
    if o is None or o.name != "moec.constant":
        return None
    val = o.attrs.get("value")
    return val.key if isinstance(val, ResourceRef) else None


def plan(module: Module) -> Dict[int, Tuple[str, bool]]:
    """id(op) -> (weight key, transposed) for every matmul/gemm the packed kernel can run."""
    out: Dict[int, Tuple[str, bool]] = {}
    for o in module.main.ops:
        if o.name not in ("moec.matmul", "moec.gemm", "moec.linear"):
            continue
        a, b = o.operands[:2]
        if a.type.dtype != DType.F32 or b.type.dtype != DType.F32 or b.type.rank != 2:
            continue
        if o.name in ("moec.matmul", "moec.linear") and a.type.rank < 1:
            continue
        if o.name == "moec.gemm" and a.type.rank != 2:
            continue
        if not all(isinstance(d, int) for d in b.type.shape):
            continue
        key = _weight_key(b)
        if key is None:
            continue
        out[id(o)] = (key, bool(o.name == "moec.gemm" and o.attrs["trans_b"]))
    return out


def pack_panels(w: np.ndarray, nr: int, trans: bool = False) -> np.ndarray:
    """op(w) ([K, N]) as [ceil(N/nr), K, nr] panels, zero-padded (the reference of the layout)."""
    w = np.asarray(w, dtype=np.float32)
    if trans:
        w = w.T
    K, N = w.shape
    P = (N + nr - 1) // nr
    padded = np.zeros((K, P * nr), np.float32)
    padded[:, :N] = w
    return np.ascontiguousarray(padded.reshape(K, P, nr).transpose(1, 0, 2))


def plan_pairs(module: Module) -> Dict[Tuple[int, int], str]:
    """(id(op), operand index) -> weight key for every bf16 weight the pair-panel kernels read: moec.linear_q's
    weight [N, K] and moe.experts' w_in [E, I, D] / w_out [E, D, F] in mode bf16, from the weights file."""
    out: Dict[Tuple[int, int], str] = {}
    for o in module.main.ops:
        if o.name == "moec.linear_q" and o.attrs.get("wq") == "bf16":
            idx = (1,)
        elif o.name == "moe.experts" and o.attrs.get("wq") == "bf16":
            idx = (4, 5)
        else:
            continue
        for i in idx:
            v = o.operands[i]
            if v.type.dtype != DType.BF16 or v.type.rank not in (2, 3) or \
                    not all(isinstance(d, int) for d in v.type.shape):
                continue
            key = _weight_key(v)
            if key is not None:
                out[(id(o), i)] = key
    return out


def plan_kpanels(module: Module) -> Dict[Tuple[int, int], str]:
    """(id(op), operand index) -> weight key for the f32 expert weights (moe.experts in mode none, f32 x, w_in and
    w_out from the weights file, every other float operand f32: the kernels of rt_moe_f32.c run it)."""
    out: Dict[Tuple[int, int], str] = {}
    for o in module.main.ops:
        if o.name != "moe.experts" or o.attrs.get("wq", "none") != "none":
            continue
        e = o.extras()
        floats = [o.operands[0], o.operands[4], o.operands[5]] + [v for v in (e.b_in, e.b_out, e.rw) if v is not None]
        if any(v.type.dtype != DType.F32 for v in floats):
            continue
        for i in (4, 5):
            v = o.operands[i]
            if v.type.rank == 3 and all(isinstance(d, int) for d in v.type.shape) and _weight_key(v) is not None:
                out[(id(o), i)] = _weight_key(v)
    return out


def plan_i8(module: Module) -> Dict[Tuple[int, int], str]:
    """(id(op), operand index) -> weight key for the int8 weights of w8a8 (moec.linear_q and moe.experts with int8
    weights and int8 activations: every row count reads them as int8 panels), from the weights file."""
    out: Dict[Tuple[int, int], str] = {}
    for o in module.main.ops:
        if o.name not in ("moec.linear_q", "moe.experts") or o.attrs.get("wq") != "int8" or o.attrs.get("aq") != "int8":
            continue
        for i in ((1,) if o.name == "moec.linear_q" else (4, 5)):
            v = o.operands[i]
            if v.type.dtype == DType.I8 and all(isinstance(d, int) for d in v.type.shape) and \
                    _weight_key(v) is not None:
                out[(id(o), i)] = _weight_key(v)
    return out


def plan_w4a8(module: Module) -> Dict[Tuple[int, int], Tuple[str, tuple]]:
    """(id(op), operand index) -> (weight key, tag) for w4a8 (moec.linear_q and moe.experts with int4 weights and int8
    activations: every row count reads tile_w4a8's panels): the weight's nibble panels (tag ("w4a8", group)) and its
    scales and zero points group-major (("gmajor",)), all from the weights file or none of the op's."""
    out: Dict[Tuple[int, int], Tuple[str, tuple]] = {}
    for o in module.main.ops:
        if o.name not in ("moec.linear_q", "moe.experts") or o.attrs.get("wq") != "int4" or o.attrs.get("aq") != "int8":
            continue
        if o.name == "moec.linear_q":
            s, z, _ = o._parts()
            sets = [(1, s, z)]
        else:
            e = o.extras()
            sets = [(4, e.s_in, e.z_in), (5, e.s_out, e.z_out)]
        for wi, s, z in sets:
            idx = {wi: "w"}
            for v, what in ((s, "s"), (z, "z")):
                if v is not None:
                    idx.update({i: what for i, u in enumerate(o.operands) if u is v})
            vals = [o.operands[i] for i in idx]
            if s is None or not all(isinstance(d, int) for v in vals for d in v.type.shape) or \
                    any(_weight_key(v) is None for v in vals):
                continue
            w = o.operands[wi]
            K, ng = 2 * w.type.shape[-1], s.type.shape[-1]
            if ng <= 0 or K % ng:
                continue
            for i, what in idx.items():
                out[(id(o), i)] = (_weight_key(o.operands[i]), ("w4a8", K // ng) if what == "w" else ("gmajor",))
    return out


def _uses(module: Module) -> Dict[int, Dict[int, tuple]]:
    """id(op) -> {operand index: (weight key, layout tag)} for every packed operand (tags: ("gemm", trans),
    ("pairs",))."""
    uses: Dict[int, Dict[int, tuple]] = {}
    for oid, (key, trans) in plan(module).items():
        uses.setdefault(oid, {})[1] = (key, ("gemm", trans))
    for (oid, i), key in plan_pairs(module).items():
        uses.setdefault(oid, {})[i] = (key, ("pairs",))
    for (oid, i), key in plan_kpanels(module).items():
        uses.setdefault(oid, {})[i] = (key, ("kpanels",))
    for (oid, i), key in plan_i8(module).items():
        uses.setdefault(oid, {})[i] = (key, ("i8",))
    for (oid, i), (key, tag) in plan_w4a8(module).items():
        uses.setdefault(oid, {})[i] = (key, tag)
    return uses


def _in_place(module: Module, uses: Dict[int, Dict[int, tuple]]) -> Dict[str, tuple]:
    """weight key -> layout tag, for the weights only packed operands read, in one layout (in every function)."""
    orient: Dict[str, set] = {}
    other = set()
    for f in module.functions:
        for o in f.ops:
            packed = uses.get(id(o), {})
            for i, v in enumerate(o.operands):
                key = _weight_key(v)
                if key is None:
                    continue
                kt = packed.get(i)
                if kt is not None and kt[0] == key:
                    orient.setdefault(key, set()).add(kt[1])
                else:
                    other.add(key)
        for v in f.outputs:
            key = _weight_key(v)
            if key is not None:
                other.add(key)
    return {k: next(iter(t)) for k, t in orient.items() if k not in other and len(t) == 1}


def append_packs(module: Module, bin_path: str, nr: int) -> Dict[object, dict]:
    """Pack the planned weights into ``bin_path``; id(op) -> {offset, nbytes, shape, nr} for the f32 GEMM panels
    and (id(op), operand index) -> {offset, nbytes, shape, ctype} for the bf16 pair panels (one entry shared by
    every op packing the same weight the same way).  Panels the size of their weight replace it in place
    (model.weights.json beside ``bin_path`` records the layout); the others are appended."""
    uses = _uses(module)
    if not uses:
        return {}
    index_path = bin_path[:-len(".bin")] + ".json" if bin_path.endswith(".bin") else None
    index = None
    if index_path and os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    in_place = _in_place(module, uses) if index is not None else {}
    by_key: Dict[Tuple[str, tuple], dict] = {}
    out: Dict[object, dict] = {}
    with open(bin_path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        off = f.tell()
        for oid, packed in uses.items():
            for i, (key, tag) in packed.items():
                e = by_key.get((key, tag))
                if e is None:
                    if tag[0] == "gemm":
                        p = pack_panels(module.weights[key], nr, tag[1])
                        dtype, shape, extra = "f32", list(p.shape), {"nr": nr}
                        layout = {"kind": "gemm_panels", "nr": nr, "trans": tag[1]}
                    elif tag[0] == "pairs":
                        w = np.asarray(module.weights[key])
                        p = pack_bf16_pairs(w)
                        # (bound as [E, N/NR, K/2, NR, 2]; a dense weight is a stack of one)
                        dtype, shape, extra = "bf16", ([1] if w.ndim == 2 else []) + list(p.shape), \
                            {"ctype": "MOEC_BF16"}
                        layout = pair_layout()
                    elif tag[0] == "kpanels":  # f32 expert k-panels [E, N/NR, K, NR]
                        p = pack_k_panels(np.asarray(module.weights[key], np.float32))
                        dtype, shape, extra, layout = "f32", list(p.shape), {"ctype": "MOEC_F32"}, kpanel_layout()
                    elif tag[0] == "w4a8":  # w4a8 nibble panels [E, N/NR, K/G, G4/4, 64] (dense: a stack of one)
                        w = np.asarray(module.weights[key])
                        p = pack_w4a8_nibbles(w, tag[1])
                        dtype, shape, extra, layout = "ui8", ([1] if w.ndim == 2 else []) + list(p.shape), \
                            {"ctype": "MOEC_U8"}, w4a8_layout(tag[1])
                    elif tag[0] == "gmajor":  # w4a8 scales / zero points [E, N/NR, K/G, NR] f32
                        w = np.asarray(module.weights[key], np.float32)
                        p = pack_group_major(w)
                        dtype, shape, extra, layout = "f32", ([1] if w.ndim == 2 else []) + list(p.shape), \
                            {"ctype": "MOEC_F32"}, gmajor_layout()
                    else:  # w8a8 int8 panels [E, N/NR, panel bytes] (a dense weight: a stack of one)
                        w = np.asarray(module.weights[key])
                        p = pack_i8_panels(w)
                        dtype, shape, extra, layout = "i8", ([1] if w.ndim == 2 else []) + list(p.shape), \
                            {"ctype": "MOEC_U8"}, i8panel_layout()
                    data = p.tobytes()
                    ent = index.get(key) if index is not None else None
                    if in_place.get(key) == tag and ent is not None and ent["nbytes"] == len(data) \
                            and ent.get("dtype") == dtype:
                        f.seek(ent["offset"])
                        f.write(data)
                        ent["layout"] = layout
                        e = by_key[(key, tag)] = {"offset": ent["offset"], "nbytes": len(data), "shape": shape,
                                                  "in_place": True, **extra}
                    else:
                        pad = (-off) % ALIGN
                        f.seek(off)
                        f.write(b"\0" * pad)
                        off += pad
                        f.write(data)
                        e = by_key[(key, tag)] = {"offset": off, "nbytes": len(data), "shape": shape, **extra}
                        if in_place.get(key) == tag and ent is not None and ent.get("dtype") == dtype:
                            # only the panels are read, a padded panel makes them larger: they become the
                            # weight's entry (its plain bytes are dropped below)
                            ent.update(offset=off, nbytes=len(data), layout=layout)
                            e["in_place"] = e["moved"] = True
                        off += len(data)
                out[oid if tag[0] == "gemm" else (oid, i)] = e
    if any(e.get("moved") for e in by_key.values()):
        _compact(bin_path, index, [e for e in by_key.values() if not e.get("in_place")])
        for (key, _), e in by_key.items():  # (the panels standing for their weight: where its entry now is)
            if e.get("in_place"):
                e["offset"] = index[key]["offset"]
    if any(e.get("in_place") for e in by_key.values()):
        with open(index_path, "w") as f:
            json.dump(index, f, indent=1, sort_keys=True)
    return out


def _compact(bin_path: str, index: Dict[str, dict], extra) -> None:
    """Rewrite ``bin_path`` with only what the index's entries and the ``extra`` regions ({offset, nbytes}, the
    appended panels) hold, each 64-byte aligned, in their order; their offsets are updated in place (the plain
    bytes of the weights whose panels moved to the end are dropped)."""
    regions = sorted(list(index.values()) + list(extra), key=lambda r: r["offset"])
    tmp = bin_path + ".tmp"
    with open(bin_path, "rb") as src, open(tmp, "wb") as dst:
        off, moved = 0, {}
        for r in regions:
            old = (r["offset"], r["nbytes"])
            if old not in moved:  # (entries sharing bytes keep sharing them)
                pad = (-off) % ALIGN
                dst.write(b"\0" * pad)
                off += pad
                src.seek(r["offset"])
                left = r["nbytes"]
                while left:
                    chunk = src.read(min(left, 64 << 20))
                    if not chunk:
                        raise OSError(f"'{bin_path}' is shorter than its index")
                    dst.write(chunk)
                    left -= len(chunk)
                moved[old] = off
                off += r["nbytes"]
            r["offset"] = moved[old]
    os.replace(tmp, bin_path)
