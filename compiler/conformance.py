"""`moec conformance`: the bundled zoo on every available target and weight mode, as a table.

Rows: every zoo model (each routing family through both PyTorch exporters, the onnx.helper graph
shapes, com.microsoft.MoE) plus every PyTorch family through the JIT API (torch.export), as an f32
module and as a bf16 one (column "<target>/bf16 model": its per-token error against the module in
f32 must be no worse than the bf16 module's own eager error).  Columns:
target x weight mode -> verified?, max error vs tolerance (or the quantisation error vs its
bound), MoE layers recognised, and the time of moec's compiled code relative to onnxruntime on the
same model and inputs (64 tokens, interleaved medians; ratio < 1: moec is faster).  A target or mode
that cannot run here is reported "skipped: <reason>" -- never as passed.  Writes conformance.json
and a self-contained conformance.html (table and an inline plot).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec import targets as _targets

ALL_TARGETS = tuple(_targets.names(include_debug=False))
# the weight modes of each target: every mode its kernels implement (TargetDesc.weight_modes); quick runs f32
# and, where the target has it, int8 on the default target
FULL_MODES = {t: _targets.backend_class(t).describe("native").weight_modes
              for t in ALL_TARGETS}
QUICK_MODES = {t: ("f32", "int8") if t == _targets.DEFAULT else ("f32",) for t in ALL_TARGETS}


def target_status(target: str) -> Optional[str]:
    """None if the target can run here, else the reason it is skipped."""
    try:
        return _targets.backend_class(target).why_unavailable()
    except Exception:  # noqa: BLE001 - an unknown name
        return f"unknown target {target}"


def _time_ratio(art, sess, feeds: Dict[str, np.ndarray], names: Sequence[str], repeats: int,
                budget_s: float = 0.4, max_repeats: int = 2000) -> float:
    """moec's median call time over onnxruntime's, the two calls interleaved: at least ``repeats`` pairs,
    more until ``budget_s`` has passed (small models: hundreds of pairs).  A few repeats of a 50 us call on
    a shared host gave ratios of 0.5-5x for the same artifact; the median of hundreds does not move."""
    xs = [feeds[n] for n in names]
    for _ in range(3):
        art(xs)
        sess.run(None, feeds)
    tm, to = [], []
    start = time.perf_counter()
    while len(tm) < repeats or (time.perf_counter() - start < budget_s and len(tm) < max_repeats):
        t0 = time.perf_counter()
        art(xs)
        tm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sess.run(None, feeds)
        to.append(time.perf_counter() - t0)
    return statistics.median(tm) / statistics.median(to)


def _bf16_module_cell(jit_compile, mod, target: str, gpu: bool) -> dict:
    """The family's module in bf16 (``.to(torch.bfloat16)``) through moec.compile: verified when moec's
    per-token error against the module in f32 is no worse than the bf16 module's own eager error
    (verify.half_trial's criterion, checked here again on fresh inputs)."""
    import copy

    import torch

    from moec.frontend.torch_import import tensor_to_numpy
    from moec.verify import half_trial
    from moec.zoo import make_inputs
    t0 = time.perf_counter()
    try:
        half = copy.deepcopy(mod).to(torch.bfloat16)
        cm = jit_compile(half, (torch.from_numpy(make_inputs(6)).to(torch.bfloat16),), target=target, cache=False)
        x = torch.from_numpy(make_inputs(33, seed=7))
        with torch.no_grad():
            ref, want = mod(x), half(x.to(torch.bfloat16))
        got = cm(x.to(torch.bfloat16))
        ht = half_trial([tensor_to_numpy(got)], [tensor_to_numpy(want)], [tensor_to_numpy(ref)], "bfloat16")
        ok = bool(cm.stats.verified and ht["ok"] and got.dtype == torch.bfloat16)
        st = "verified" if ok else "FAILED"
        stand_in = _targets.backend_class(target).stand_in(gpu)
        if ok and stand_in:
            st += f" ({stand_in['label']})"
        cell = {"status": st, "token_rel_err": ht.get("moec_token_rel_err"),
                "eager_bf16_token_rel_err": ht.get("eager_token_rel_err"),
                "layers": [la["family"] for la in cm.stats.report.get("moe_layers", [])],
                "compile_s": round(time.perf_counter() - t0, 2), "oracle": "the module in f32, next to its bf16 eager run"}
        if not ok:
            cell["error"] = ht.get("failure", "verification failed")
        return cell
    except Exception as ex:  # noqa: BLE001 - a failing cell is reported, the run goes on
        return {"status": "FAILED", "error": f"{type(ex).__name__}: {str(ex).splitlines()[0][:300]}"}


def run_conformance(targets: Sequence[str] = ALL_TARGETS, quick: bool = False, outdir: str = "moec_conformance",
                    timing: bool = True, log=print, models: Optional[Sequence[str]] = None,
                    modules_too: bool = True) -> dict:
    import onnxruntime as ort

    from moec.driver import CompileOptions, compile_onnx
    from moec.zoo import ZOO
    os.makedirs(outdir, exist_ok=True)
    for t in targets:
        if target_status(t) is None:
            _targets.backend_class(t).prepare()  # (Triton: its interpreter chosen before the exporters import it)
    work = tempfile.mkdtemp(prefix="moec_conf_")
    modes = QUICK_MODES if quick else FULL_MODES
    gpu = False
    try:
        import torch
        gpu = torch.cuda.is_available()
    except ImportError:
        pass
    status = {t: target_status(t) for t in targets}
    # a mode this machine's variant of a target cannot run (fp8 on a GPU without it): skipped with the
    # driver's reason (the target's option check)
    from moec.errors import UserInputError

    def mode_skip(t: str, mode: str) -> Optional[str]:
        try:
            _targets.check_options(_targets.backend(t), CompileOptions(target=t, weights=mode, group_size=16))
        except UserInputError as ex:
            return str(ex)
        return None
    mode_skips = {(t, mode): mode_skip(t, mode) for t in targets if status[t] is None for mode in modes.get(t, ())}
    entries = list(ZOO)
    if quick:  # one exporter per family, every hand-built graph
        seen = set()
        picked = []
        for e in entries:
            key = (e.family, e.shape) if e.module_cls is None else (e.family, "torch")
            if e.module_cls is not None and e.exporter != "dynamo":
                continue
            if key in seen and e.module_cls is not None:
                continue
            seen.add(key)
            picked.append(e)
        entries = picked
    if models is not None:
        entries = [e for e in entries if e.name in models]
    rows: List[dict] = []
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    for e in entries:
        model = e.build()
        row = {"model": e.name, "family": e.family, "source": e.exporter or e.shape, "cells": {}}
        sess = ort.InferenceSession(model.SerializeToString(), so)
        for t in targets:
            for mode in modes.get(t, ("f32",)):
                key = f"{t}/{mode}"
                if status[t] or mode_skips.get((t, mode)):
                    row["cells"][key] = {"status": "skipped", "reason": status[t] or mode_skips[(t, mode)]}
                    continue
                out = os.path.join(work, f"{e.name}_{t}_{mode}")
                cell: dict = {}
                t0 = time.perf_counter()
                try:
                    r = compile_onnx(model, out, CompileOptions(target=t, weights=mode, group_size=16,
                                                                symbol_sizes=(6, 1) if quick else (5, 1, 3),
                                                                force=True))
                    rep = r.report
                    cell = {"status": "verified" if rep["verified"] else "FAILED",
                            "max_abs_err": rep["max_abs_err"], "tolerance": rep.get("tolerance"),
                            "layers": [layer["family"] for layer in rep["moe_layers"]],
                            "compile_s": round(time.perf_counter() - t0, 2)}
                    if rep.get("quantization_error"):
                        q = rep["quantization_error"]
                        cell["quant_error"] = {"token_rel_median": q["token_rel_median"],
                                               "bound": q["bound_token_rel_median"]}
                    stand_in = _targets.backend_class(t).stand_in(gpu)
                    if stand_in:
                        cell["status"] = f"verified ({stand_in['label']})"
                        cell["timing"] = stand_in["timing"]
                    elif timing:
                        from moec.verify import make_inputs as verify_inputs, symbols_of
                        fmain = r.module.main
                        xs = verify_inputs(fmain, {s: 64 for s in symbols_of(fmain)}, seed=7)
                        feeds = dict(zip(fmain.arg_names, xs))
                        cell["time_ratio_vs_ort"] = round(_time_ratio(r.artifact, sess, feeds, fmain.arg_names,
                                                                      3 if quick else 7), 3)
                except Exception as ex:  # noqa: BLE001 - a failing cell is reported, the run goes on
                    cell = {"status": "FAILED", "error": f"{type(ex).__name__}: {str(ex).splitlines()[0][:300]}"}
                    if os.environ.get("MOEC_DEBUG"):
                        traceback.print_exc()
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                row["cells"][key] = cell
        rows.append(row)
        log(_row_line(row))
    # PyTorch modules through the JIT API
    try:
        import torch  # noqa: F401

        from moec.jit_api import compile as jit_compile
        from moec.zoo import make_inputs, make_module, modules
        classes = modules.ALL if modules_too else []
        if models is not None:
            classes = [c for c in classes if f"{c.__name__.lower()}_module" in models]
    except ImportError:
        classes = []
    for cls in classes:
        row = {"model": f"{cls.__name__.lower()}_module", "family": cls.family, "source": "moec.compile (torch.export)",
               "cells": {}}
        mod = make_module(cls)
        for t in targets:
            key = f"{t}/f32"
            if status[t]:
                row["cells"][key] = {"status": "skipped", "reason": status[t]}
                row["cells"][f"{t}/bf16 model"] = {"status": "skipped", "reason": status[t]}
                continue
            t0 = time.perf_counter()
            try:
                import torch
                cm = jit_compile(mod, (torch.from_numpy(make_inputs(6)),), target=t, cache=False)
                x = torch.from_numpy(make_inputs(9))
                with torch.no_grad():
                    want = mod(x).numpy()
                from moec.verify import recheck_output
                close, err = recheck_output(cm(x).numpy(), want)
                ok = cm.stats.verified and close
                st = "verified" if ok else "FAILED"
                stand_in = _targets.backend_class(t).stand_in(gpu)
                if ok and stand_in:
                    st += f" ({stand_in['label']})"
                row["cells"][key] = {"status": st, "max_abs_err": err,
                                     "layers": [la["family"] for la in cm.stats.report.get("moe_layers", [])],
                                     "compile_s": round(time.perf_counter() - t0, 2), "oracle": "eager PyTorch"}
            except Exception as ex:  # noqa: BLE001
                row["cells"][key] = {"status": "FAILED", "error": f"{type(ex).__name__}: {str(ex).splitlines()[0][:300]}"}
            row["cells"][f"{t}/bf16 model"] = _bf16_module_cell(jit_compile, mod, t, gpu)
        rows.append(row)
        log(_row_line(row))
    shutil.rmtree(work, ignore_errors=True)
    cols = sorted({k for r in rows for k in r["cells"]}, key=lambda k: (ALL_TARGETS.index(k.split("/")[0]), k))
    summary = {}
    for c in cols:
        cells = [r["cells"][c] for r in rows if c in r["cells"]]
        summary[c] = {"verified": sum(x["status"].startswith("verified") for x in cells),
                      "failed": sum(x["status"] == "FAILED" for x in cells),
                      "skipped": sum(x["status"] == "skipped" for x in cells), "total": len(cells)}
        ratios = [x["time_ratio_vs_ort"] for x in cells if "time_ratio_vs_ort" in x]
        if ratios:
            summary[c]["median_time_ratio_vs_ort"] = round(statistics.median(ratios), 3)
    rep = {"quick": quick, "targets": list(targets), "target_status": status, "gpu": gpu, "columns": cols,
           "rows": rows, "summary": summary}
    with open(os.path.join(outdir, "conformance.json"), "w") as f:
        json.dump(rep, f, indent=1, default=str)
    with open(os.path.join(outdir, "conformance.html"), "w") as f:
        f.write(render_html(rep))
    return rep


def _short(cell: dict) -> str:
    st = cell["status"]
    if st == "skipped":
        return "skipped"
    if st == "FAILED":
        return "FAILED"
    s = "ok" if st == "verified" else ("ok(interp)" if "interpreter" in st else "ok(emu)")
    if "time_ratio_vs_ort" in cell:
        s += f" x{cell['time_ratio_vs_ort']:.2f}"
    return s


def _row_line(row: dict) -> str:
    return f"{row['model']:<34} " + "  ".join(f"{k}={_short(v)}" for k, v in row["cells"].items())


def format_table(rep: dict) -> str:
    cols = rep["columns"]
    w = max(len(r["model"]) for r in rep["rows"]) + 2
    lines = [f"{'model':<{w}}{'layers':<18}" + "".join(f"{c:>18}" for c in cols)]
    for r in rep["rows"]:
        layers = next((",".join(c.get("layers", [])) for c in r["cells"].values() if c.get("layers")), "-")
        lines.append(f"{r['model']:<{w}}{layers[:17]:<18}" + "".join(f"{_short(r['cells'][c]) if c in r['cells'] else '-':>18}"
                                                                    for c in cols))
    lines.append("")
    for c, s in rep["summary"].items():
        extra = f", median time vs onnxruntime x{s['median_time_ratio_vs_ort']}" if "median_time_ratio_vs_ort" in s else ""
        lines.append(f"{c}: {s['verified']}/{s['total']} verified, {s['failed']} failed, {s['skipped']} skipped{extra}")
    for t, why in rep["target_status"].items():
        if why:
            lines.append(f"{t}: skipped: {why}")
    for t in rep["targets"]:
        stand_in = _targets.backend_class(t).stand_in(rep["gpu"]) if t in _targets.names() else None
        if stand_in:
            lines.append(f"{t}: {stand_in['note']}")
    lines.append("x = moec time / onnxruntime time at 64 tokens (below 1: moec is faster)")
    return "\n".join(lines)


def _plot_png(rep: dict) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = {}
    for c in rep["columns"]:
        pts = [(r["model"], r["cells"][c]["time_ratio_vs_ort"]) for r in rep["rows"]
               if c in r["cells"] and "time_ratio_vs_ort" in r["cells"][c]]
        if pts:
            series[c] = pts
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 4))
    for c, pts in series.items():
        ax.plot(range(len(pts)), [p[1] for p in pts], "o", label=c)
    ax.axhline(1.0, color="gray", lw=0.8)
    first = next(iter(series.values()))
    ax.set_xticks(range(len(first)))
    ax.set_xticklabels([p[0] for p in first], rotation=70, fontsize=6)
    ax.set_ylabel("moec time / onnxruntime time")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(rep: dict) -> str:
    cols = rep["columns"]
    color = {"verified": "#c8f0c8", "FAILED": "#f4b0b0", "skipped": "#e6e6e6"}
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>moec conformance</title>",
           "<style>body{font-family:sans-serif;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
           "table{border-collapse:collapse}</style></head><body>",
           f"<h1>moec conformance{' (quick)' if rep['quick'] else ''}</h1>",
           "<p>" + html.escape(format_table(rep).split("\n\n")[-1]).replace("\n", "<br>") + "</p>",
           "<table><tr><th>model</th><th>source</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for r in rep["rows"]:
        tds = []
        for c in cols:
            cell = r["cells"].get(c)
            if cell is None:
                tds.append("<td>-</td>")
                continue
            st = cell["status"]
            bg = color["verified"] if st.startswith("verified") else color.get(st, "#fff")
            detail = html.escape(json.dumps({k: v for k, v in cell.items() if k != "status"}, default=str))
            tds.append(f"<td style='background:{bg}' title='{detail}'>{html.escape(_short(cell))}</td>")
        out.append(f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(str(r['source']))}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    png = _plot_png(rep)
    if png:
        out.append(f"<h2>time relative to onnxruntime</h2><img src='data:image/png;base64,{png}'>")
    out.append("<h2>raw data</h2><pre>" + html.escape(json.dumps(rep["summary"], indent=1)) + "</pre></body></html>")
    return "\n".join(out)
