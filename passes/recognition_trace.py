"""Why recognize-moe did (or did not) turn each top-k / arg-max into an MoE layer.

recognize-moe (passes/recognize_moe.py) fills this trace as it goes: for every selection root it
tries, one record saying either the layer it recognised (family, routing, E, k, D, F) or the first
step at which recognition stopped, the nodes involved (the ops' source locations: ONNX node names,
PyTorch FX node names) and the reason.  The trace is not a second matcher: a stop is read off the
recognizer's own state where it gave up (the step it was in and the values it had found), so it
says what the recognizer actually did.

The records live on the module object (``recognition_of(m)``), not in its printed attributes: they
describe one run of the pass on this module, not the IR.  ``moec inspect MODEL --explain`` prints
them and report.json carries them as ``recognition``.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

_ATTR = "_moec_recognition"


def _safe(fn):
    """A trace entry point never breaks the pass: a failure to explain records that instead."""
    import functools

    @functools.wraps(fn)
    def wrapper(m, f, root, *a):
        try:
            return fn(m, f, root, *a)
        except Exception as e:  # noqa: BLE001
            if not hasattr(root, "operands"):  # (absorbed: a list of roots; nothing to record)
                return None
            try:
                _store(m)[id(root)] = {"node": getattr(root, "loc", None) or "(unnamed)",
                                       "op": getattr(root, "name", "?"), "recognised": None, "step": "unknown",
                                       "reason": f"(the trace could not explain this root: {type(e).__name__})",
                                       "nodes": []}
            except Exception:  # noqa: BLE001
                pass
    return wrapper


def recognition_of(m) -> List[dict]:
    """The records of the last recognize-moe runs on ``m``, in program order of their roots."""
    return list(getattr(m, _ATTR, {}).values())


def _store(m) -> Dict[int, dict]:
    d = getattr(m, _ATTR, None)
    if d is None:
        d = {}
        setattr(m, _ATTR, d)
    return d


def node(o) -> str:
    """An op as a user finds it in their model: its source location (ONNX node name) and the op."""
    if o is None:
        return "(a graph input)"
    outs = [r.name for r in o.results if r.name]
    return f"{o.loc or '(unnamed)'} [{o.name}" + (f" -> {', '.join(outs)}" if outs else "") + "]"


def short(o) -> str:
    """An op in a sentence: its source location, or its op type when it has none."""
    return f"'{o.loc}'" if o is not None and o.loc else (o.name if o is not None else "a graph input")


def _vnode(v) -> str:
    return node(getattr(v, "owner", None))


def _key(f, root) -> int:
    ops = getattr(f, "_moec_trace_roots", None)
    if ops is None:
        ops = {}
        setattr(f, "_moec_trace_roots", ops)
    ops[id(root)] = root  # (for absorbed(): which recorded roots are gone from the function)
    return id(root)  # (the same op object across the fixed-point iterations of the pass)


def _root_info(root) -> dict:
    return {"node": root.loc or "(unnamed)", "op": root.name}


@_safe
def recognised(m, f, root) -> None:
    layers = m.attrs.get("moec.moe_layers", [])
    info = json.loads(layers[-1]) if layers else {}
    rec = {**_root_info(root), "recognised": True, "layer": info.get("layer"),
           **{k: info.get(k) for k in ("family", "routing", "E", "k", "D", "F", "activation", "shared_experts")}}
    _store(m)[_key(f, root)] = rec


@_safe
def stopped(m, f, root, exc: Optional[BaseException], reached: Optional[dict]) -> None:
    """Record where recognition of the layer selected by ``root`` stopped: from the exception the
    recognizer raised (its innermost frame in recognize_moe.py says the step), or, with ``exc`` None,
    after the numeric proof found no routing candidate (``reached``: what the recognizer had found)."""
    if exc is not None:
        step, reason, nodes = _from_exception(root, exc)
    else:
        step, reason, nodes = _proof(reached or {})
    if getattr(exc, "args", None) and isinstance(exc.args[0], str):
        reason = exc.args[0]  # an explicit reason given where the recognizer raised
    _store(m)[_key(f, root)] = {**_root_info(root), "recognised": False, "step": step, "reason": reason,
                                "nodes": nodes}


@_safe
def absorbed(m, f, roots) -> None:
    """Recorded roots no longer in the function: the canonicalize stage removed dead ops before
    recognition, so a root that disappears since only fed a recognised layer, which replaced it (a
    group-limited router's group top-k).  Their stop records are superseded.  (Called at every run of
    the pass: DCE removes the replaced ops between runs.)"""
    st = _store(m)
    known = getattr(f, "_moec_trace_roots", {})
    present = {id(o) for o in f.ops}
    for k, r in list(known.items()):
        rec = st.get(k)
        if k in present or rec is None or rec.get("recognised") or rec.get("step") == "absorbed":
            continue
        st[k] = {**_root_info(r), "recognised": False, "step": "absorbed",
                 "reason": "it fed only a recognised MoE layer (e.g. as its group-limited selection), which "
                           "replaced it", "nodes": [node(r)]}


# -- reading the recognizer's state where it stopped --------------------------------------------

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recognize_moe.py")


def _frames(exc):
    tb = exc.__traceback__
    out = []
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == _HERE:
            out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def _from_exception(root, exc):
    frames = _frames(exc)
    if not frames:
        return "selection", str(exc) or "not recognised", [node(root)]
    fr = frames[-1]
    fn, loc = fr.f_code.co_name, fr.f_locals
    outer = {f.f_code.co_name: f.f_locals for f in frames}
    explain = _EXPLAIN.get(fn)
    if explain is not None:
        try:
            return explain(root, loc, outer)
        except Exception:  # noqa: BLE001 - an explanation must never break the pass
            pass
    doc = (getattr(getattr(type(outer.get("_try_layer", {}).get("self")), fn, None), "__doc__", None) or "")
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return fn.strip("_").replace("_", " "), f"stopped in {fn}" + (f" ({first})" if first else ""), [node(root)]


def _try_layer(root, loc, outer):
    if "k" not in loc:  # the selection itself
        if root.name == "moec.argmax":
            return "selection", ("arg-max is not over the last axis of a 2-D [tokens, experts] input "
                                 f"(axis {root.attrs['axis']}, input {root.operands[0].type})"), [node(root)]
        if root.attrs["axis"] not in (-1, 1):
            return "selection", f"top-k over axis {root.attrs['axis']}, not over the experts (the last axis)", \
                [node(root)]
        if not root.attrs["largest"]:
            return "selection", ("top-k selects the smallest scores (largest=0): not a router's choice of the "
                                 "most likely experts"), [node(root)]
        return "selection", "top-k's k is not a constant", [node(root), _vnode(root.operands[1])]
    E = loc.get("E")
    if "acts" in loc:
        experts = loc["experts"]
        acts = ", ".join(f"expert {e.index}: {e.activation}" for e in experts)
        return "experts", f"the experts do not all use one activation ({acts}): not one grouped FFN", \
            [node(e.down.op) for e in experts]
    if "experts" in loc:
        experts = loc["experts"]
        why, odd = _not_projections(loc.get("L"), loc.get("between") or set())
        traced, tnodes = _traced_split(loc.get("L"), loc.get("between") or set())
        return "experts", (f"found {len(experts)} expert FFN(s) (up projection(s), activation, down projection "
                           f"of token rows) where the router scores E={E} experts" + why + traced), \
            [node(e.down.op) for e in experts] + odd + tnodes or [node(root)]
    return "layer", "stopped while locating the layer", [node(root)]


def _weight_origin(v, depth: int = 4) -> str:
    """Where a matmul's weight operand comes from, in a few words (run-time index, computed, ...)."""
    o = v.owner
    hops = []
    while o is not None and depth > 0 and o.name in ("moec.transpose", "moec.reshape", "moec.squeeze",
                                                     "moec.unsqueeze", "moec.cast", "moec.flatten"):
        hops.append(node(o))
        v, o, depth = o.operands[0], o.operands[0].owner, depth - 1
    if o is None:
        return "a graph input"
    if o.name == "moec.gather" and o.operands[0].owner is not None and o.operands[0].owner.name == "moec.constant":
        return (f"Gather {short(o)} of the constant {o.operands[0].type} stack by a run-time index "
                f"(computed from the routing), not a constant weight")
    return f"computed by {short(o)} ({o.name}), not a constant"


def _traced_split(L, region) -> tuple:
    """A Split of the token rows into per-expert blocks by constant sizes: the exporter traced the number
    of tokens each expert received on its example input (``expert_size.tolist()`` in a TorchScript export of
    JetMoE / GraniteMoE), so the graph is only right for that routing; ' (...)' text and the node."""
    if L is None:
        return "", []
    for o in L.f.ops:
        if id(o) not in region or o.name != "moec.split" or len(o.operands) < 2 or o.operands[1] is None:
            continue
        try:
            sizes = L.const_array(o.operands[1])
        except Exception:  # noqa: BLE001
            sizes = None
        if sizes is None or o.operands[0].type.rank != 2 or o.attrs.get("axis") not in (0, -2):
            continue
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        return (f"; the token rows are split into per-expert blocks of constant sizes {sizes} at {short(o)}: the "
                f"exporter traced how many tokens each expert got on its example input (e.g. expert_size.tolist()), "
                f"so this export is only right for that routing (export it with dynamo, or from a later transformers "
                f"release)"), [node(o)]
    return "", []


def _not_projections(L, region) -> tuple:
    """Matmuls in the layer that are not projections by constant weights, and why (for a stop at the
    experts step): ' (...)' text and their nodes."""
    if L is None:
        return "", []
    odd = []
    for o in L.f.ops:
        if id(o) in region and o.name in ("moec.matmul", "moec.gemm") and L.projection(o) is None:
            odd.append(o)
    if not odd:
        return "", []
    parts = [f"the weight of {short(o)} is {_weight_origin(o.operands[1])}" for o in odd[:2]]
    more = f" (and {len(odd) - 2} more)" if len(odd) > 2 else ""
    return (f"; {len(odd)} matmul(s) in the layer are not projections of token rows by constant weights, e.g. "
            + "; ".join(parts) + more), [node(o) for o in odd[:8]]


def _router(root, loc, outer):
    o, v = loc.get("o"), loc.get("v")
    expect = ("expected the top-k's input to be router scores: [cast] [masked_fill(-inf)] [sigmoid + correction "
              "bias] softmax | sigmoid | nothing, of [cast] [+ bias] a projection x @ W_r (MatMul/Gemm by a "
              "constant weight) of a [tokens, hidden] input x")
    if "x" in loc and "proj" in loc and loc.get("proj") is not None and loc["proj"].output is v:
        x = loc["x"]
        return "router", (f"the router projection's input has type {x.type}, not [tokens, hidden] with a static "
                          f"hidden size ({expect})"), [node(o), _vnode(x)]
    if "proj" in loc:
        return "router", (f"walking back from the top-k, the scores come from {node(o) if o is not None else _vnode(v)}, "
                          f"which is neither a scoring op the recognizer knows nor the router projection: {expect}"), \
            [node(root), node(o) if o is not None else _vnode(v)]
    if o is not None and o.name == "moec.softmax" and o.attrs.get("axis") not in (-1, 1):
        return "router", (f"softmax over axis {o.attrs['axis']}, not over the experts (the last axis)"), \
            [node(o)]
    if o is not None and o.name == "moec.select":
        return "router", ("a masked_fill (Where) before the top-k that does not fill the scores with one constant "
                          "(-inf, or a value such as AXK2's 0.0)"), [node(o)]
    if o is not None and o.name == "moec.add":
        return "router", ("an Add before the top-k that is not sigmoid(scores) or softmax(scores) + a constant "
                          "correction bias"), [node(o)]
    if loc.get("bias_v") is not None:
        return "router", "a correction bias added to scores that are not sigmoid scores", [node(o)]
    return "router", f"stopped at {node(o) if o is not None else _vnode(v)}: {expect}", \
        [node(o) if o is not None else _vnode(v)]


def _group_params(root, loc, outer):
    return "router", ("group-limited routing not understood: expected exactly one top-k over [tokens, n_group] "
                      "group scores feeding the masked_fill, with a constant k"), [node(root)]


def _layer_output(root, loc, outer):
    x = loc.get("x")
    return "layer output", ("no value downstream of the top-k has the tokens' shape [tokens, hidden]"
                            + (f" ({x.type})" if x is not None else "") + " with every expert path merged "
                            "into it (where the layer's output should be)"), [node(root)]


def _experts(root, loc, outer):
    if loc.get("stacked"):
        st = loc["stacked"]
        return "experts", (f"stacked (all-experts) weights: {len(st)} stacked down projection(s) among "
                           f"{len(loc.get('downs', []))} expert FFN(s), or a stack whose first dim is not "
                           f"E={loc.get('E')}"), [node(d.op) for d, _ in st]
    down = loc.get("down")
    if "rows" not in loc and down is not None and "xin" in loc:
        return "experts", ("the rows reaching the expert FFN cannot be evaluated from the tokens and the top-k "
                           "alone"), [node(down.op)]
    return "experts", ("the expert FFNs found do not cover experts 0..E-1 exactly once "
                       f"(E={loc.get('E')})"), [node(e.down.op) for e in loc.get("experts", [])] or [node(root)]


def _expert_index(root, loc, outer):
    ex = outer.get("_experts", {})
    down = ex.get("down")
    nodes = [node(down.op)] + [node(p.op) for p in ex.get("ups", [])] if down is not None else [node(root)]
    return "experts", ("the token rows reaching this expert FFN are not the tokens that chose one expert (fed "
                       "known expert ids through the top-k, its input rows match no single expert's token set)"), \
        nodes


def _activation(root, loc, outer):
    down, ups = loc.get("down"), loc.get("ups") or []
    return "experts", ("the function between the up projection(s) and the down projection is none of relu, silu, "
                       "gelu, gelu_tanh, identity, relu2, swiglu (clamped where the graph clamps), GPT-OSS's clamped "
                       "swiglu, geglu, geglu_tanh, softcap_swiglu (soft caps read off the graph) (evaluated on probe "
                       "values)"), \
        [node(p.op) for p in ups] + ([node(down.op)] if down is not None else [])


def _index_by_output(root, loc, outer):
    return "experts", ("dense experts: routing every token to one expert, the layer output equals no single "
                       "expert FFN (or several)"), [node(d.op) for d, *_ in loc.get("dense", [])] or [node(root)]


def _eval_original(root, loc, outer):
    y = loc.get("y")
    return "proof", ("the layer output cannot be evaluated from the tokens alone (it depends on other inputs)"), \
        [_vnode(y)] if y is not None else [node(root)]


_EXPLAIN = {"_try_layer": _try_layer, "_router": _router, "_group_params": _group_params,
            "_layer_output": _layer_output, "_experts": _experts, "_expert_index": _expert_index,
            "_activation": _activation, "_index_by_output": _index_by_output, "_eval_original": _eval_original}


def _proof(r: dict):
    y, experts = r.get("y"), r.get("experts") or []
    acts = sorted({e.activation for e in experts})
    found = (f"found the router (scoring '{r.get('scoring')}', k={r.get('k')}, E={r.get('E')}) and {len(experts)} "
             f"experts ({', '.join(acts)})")
    nodes = [_vnode(y)] + [node(e.down.op) for e in experts][:8]
    return "proof", (f"{found}; layer output {_vnode(y)}; but no routing candidate (renormalisation none/sum/L1, softmax or sigmoid after the "
                     "top-k, the graph's scale constants, capacity) reproduces the layer's output on probe tokens: "
                     "the layer computes something else from the routing weights"), nodes


def format_explain(records: List[dict], layers: Optional[List[dict]] = None) -> List[str]:
    """Text lines for ``moec inspect --explain`` (names shown as they are; the caller escapes them).
    ``layers``: the module's MoE layer records; those imported as MoE ops (not recognised) are listed too."""
    lines = [f"{L.get('layer')}: imported as an MoE op ({L.get('source')}), E={L.get('E')} k={L.get('k')} "
             f"D={L.get('D')} F={L.get('F')}" for L in (layers or []) if L.get("source") != "recognized"]
    if not records:
        return lines + ["no top-k or arg-max in the model" + (" besides the MoE ops above" if lines else "")
                        + ": nothing else selects experts, so no MoE layer to recognise"]
    for i, r in enumerate(records):
        head = f"[{i}] {r['op'].split('.')[-1]} '{r['node']}': "
        if r.get("recognised"):
            lines.append(head + f"recognised as {r.get('layer')}: family {r.get('family')}, routing "
                         + ", ".join(f"{k}={v}" for k, v in (r.get("routing") or {}).items())
                         + f"; E={r.get('E')} k={r.get('k')} D={r.get('D')} F={r.get('F')} "
                           f"activation {r.get('activation')}")
        elif r.get("step") == "absorbed":
            lines.append(head + f"part of a recognised layer: {r['reason']}")
            continue
        else:
            lines.append(head + f"NOT recognised: stopped at step '{r['step']}': {r['reason']}")
            if r.get("nodes"):
                lines.append("      nodes: " + ", ".join(r["nodes"]))
    return lines
