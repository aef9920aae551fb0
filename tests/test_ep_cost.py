"""The expert-parallel cost model (`moec plan`): exact byte counts, routing draws, calibration against the
published DeepEP figures, and the command line."""
import numpy as np
import pytest

from moec import ep_cost
from moec.cli import main
from moec.passes.expert_parallel import Placement


def test_exchange_bytes_by_hand():
    # 2 ranks, 4 experts (0,1 on rank 0; 2,3 on rank 1), D=4, f32 rows, 8 bytes of id+weight per pair
    pl = Placement.contiguous(4, 2).check()
    wire = ep_cost.Wire.for_dtype("f32", 4)
    ids = [np.array([[0, 1], [0, 2], [3, 2]]),      # rank 0: token0 local only; token1 both; token2 rank 1 only
           np.array([[2, 3]])]                      # rank 1: local only
    x = ep_cost.exchange_bytes(ids, pl, 4, wire)
    assert x["rows"].tolist() == [[2, 2], [0, 1]]
    assert x["pairs"].tolist() == [[3, 0], [3, 2]]   # [computing rank, source rank]
    row = 4 * 4
    assert x["dispatch"][0, 1] == 2 * row + 3 * 8    # tokens 1 and 2 cross, carrying 3 (id, weight) pairs
    assert x["dispatch"][1, 0] == 0
    assert x["combine"][1, 0] == 2 * row             # one partial row back per (token, rank)
    assert x["expert_pairs"][1].tolist() == [0, 0, 3, 2]


def test_replicas_share_an_experts_tokens_as_the_run_time_does():
    pl = Placement(2, [[0, 1], [0, -1]]).check()           # expert 0 on both ranks
    ids = [np.zeros((1000, 1), dtype=np.int64), np.array([[0], [-1]])]
    x = ep_cost.exchange_bytes(ids, pl, 8, ep_cost.Wire.for_dtype("bf16", 8))
    assert x["pairs"][:, 0].tolist() == [1000, 0]          # rank 0 holds a copy: its tokens stay home
    assert x["pairs"][:, 1].tolist() == [0, 1]             # rank 1's token 0 -> its own copy; a dropped slot: nothing
    assert x["dispatch"][0, 1] == 0 and x["combine"][0, 1] == 0 and x["dispatch"][1, 0] == 0
    pl = Placement(3, [[0, 1], [0, 2], [1, 2]]).check()    # rank 2 holds no copy of expert 0: copies in turn
    x = ep_cost.exchange_bytes([ids[0][:0], ids[0][:0], ids[0][:10]], pl, 8, ep_cost.Wire.for_dtype("bf16", 8))
    assert x["pairs"][:, 2].tolist() == [5, 5, 0]          # copy (t + rank) mod 2: moec.ir.ops.ep.choose_replica


def test_drawn_routing_matches_the_uniform_formula():
    lay = ep_cost.Layer(D=16, E=64, k=4, F=8)
    ids = ep_cost.draw_routing(lay, 8, 2000, seed=1)
    assert all(np.all(np.sort(i, axis=1)[:, 1:] != np.sort(i, axis=1)[:, :-1]) for i in ids)   # k distinct
    x = ep_cost.exchange_bytes(ids, Placement.contiguous(64, 8).check(), 16, ep_cost.Wire())
    measured = x["rows"].sum() / (8 * 2000)
    assert abs(measured - ep_cost.uniform_distinct_ranks(64, 8, 4)) < 0.03


def test_group_limited_routing_stays_in_its_groups():
    lay = ep_cost.DEEPSEEK_V3
    ids = ep_cost.draw_routing(lay, 1, 500, seed=2)[0]
    groups = ids // (lay.E // lay.groups)
    assert max(len(set(g)) for g in groups.tolist()) <= lay.topk_groups


def test_model_is_within_a_factor_of_the_published_deepep_figures():
    rows = ep_cost.compare_published(ranks_cap=32)
    assert len(rows) >= 5
    for r in rows:
        assert 0.6 < r["ratio"] < 1.6, r


def test_skew_raises_the_busiest_rank_and_the_placement_pass_lowers_it():
    lay = ep_cost.Layer(D=64, E=16, k=2, F=32)
    flat = ep_cost.plan_table("h100", [4], lay, skew=0.0, balance=False)
    hot = ep_cost.plan_table("h100", [4], lay, skew=1.5)
    key = lambda rows, pl: max(r["pairs_max"] / r["pairs_mean"] for r in rows if r["placement"] == pl)
    assert key(hot, "contiguous") > key(flat, "contiguous") + 0.3
    assert key(hot, "balanced") < key(hot, "contiguous") - 0.2


def test_cli(capsys):
    assert main(["plan", "--ep", "2,8", "--layer", "mixtral", "--cluster", "910b"]) == 0
    out = capsys.readouterr().out
    assert "| decode | 8 | contiguous |" in out and "| prefill | 2 |" in out
    assert main(["plan", "--ep", "12", "--layer", "mixtral"]) == 0     # more ranks than experts: replicas
    assert "| decode | 12 | balanced |" in capsys.readouterr().out
    assert main(["plan", "--ep", "0", "--layer", "mixtral"]) == 2
    assert main(["plan", "--ep", "x"]) == 2
    with pytest.raises(SystemExit):
        main(["plan", "--cluster", "nowhere"])
