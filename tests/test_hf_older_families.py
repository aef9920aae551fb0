"""Real transformers blocks whose cells the survey left unrecognised for an experts / dispatch reason (issue 16):
PhiMoE's sparsemixer at static dims and in bf16, and the older expert families.  Each cell goes through the
survey's own harness (tests/hf_survey.py run_cell: import, recognize-moe, the recognised graph against the torch
block at the survey's tolerance)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_survey as survey  # noqa: E402  (tests/hf_survey.py)


def _cell(arch, impl, dtype, dims, path, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))  # (ONNX exports made here, not in the user's cache)
    blk = survey.sparse_blocks(survey.build_model(arch, impl, dtype))[0].eval()
    return survey.run_cell(arch, blk, impl, dtype, dims, path, f"test:{arch}")


def _recognised_exact(cell, family):
    assert cell["status"] == "recognised", cell.get("reason")
    assert cell["family"] == family and cell.get("exact") is True, cell


# PhiMoE's second pick scatters -inf at the first; with static dims torch.export folds the fill into a [T, 1]
# constant of -inf (one value everywhere, as a scalar's expand is): the same arg-max chain, i.e. the top-2
@pytest.mark.parametrize("path", ["torch.export", pytest.param("torchscript", marks=pytest.mark.slow)])
def test_phimoe_static_dims(path, tmp_path, monkeypatch):
    cell = _cell("phimoe", "batched_mm", "f32", "static", path, tmp_path, monkeypatch)
    _recognised_exact(cell, "phimoe")
    assert cell["routing"]["post"] == "sparsemixer" and cell["routing"]["k"] == 2


# in bf16 both ONNX exporters compare the bf16 quotient (max - s) / clamp(|s|, max) with 2 eps after a widening
# cast to f32: the same threshold (a cast of the quotient changes no comparison with a constant it holds exactly)
@pytest.mark.parametrize("path,impl", [("torchscript", "batched_mm"), pytest.param("dynamo", "batched_mm",
                                                                                    marks=pytest.mark.slow),
                                       pytest.param("torchscript", "eager", marks=pytest.mark.slow)])
def test_phimoe_bf16_onnx(path, impl, tmp_path, monkeypatch):
    cell = _cell("phimoe", impl, "bf16", "dynamic", path, tmp_path, monkeypatch)
    _recognised_exact(cell, "phimoe")
    assert cell["routing"]["post"] == "sparsemixer"
