"""The paper's headline effect on the oracle suites, at test scale (the bench measures it fully)."""

import torch
from bfn_solver.experiments import gmm_suite, markov_suite, run_curves


def test_gmm_solvers_beat_original_at_nfe10():
    s = gmm_suite(n=1000)
    c = run_curves(s, [10], samplers=["bfn_original", "bfn_solver_pp1", "sde_bfn_solver_pp2"])
    base = c["bfn_original"][10]["error"]
    assert c["bfn_solver_pp1"][10]["error"] < base / 2
    assert c["sde_bfn_solver_pp2"][10]["error"] < base / 2
    assert c["bfn_original"][10]["nfe_counted"] == 10


def test_markov_second_order_beats_original_at_nfe10():
    s = markov_suite(n=8000)
    c = run_curves(s, [10], samplers=["bfn_original", "bfn_solver2", "bfn_solver2_singlestep"])
    base = c["bfn_original"][10]["error"]
    assert base > 0.004
    assert c["bfn_solver2"][10]["error"] < base / 2
    assert c["bfn_solver2_singlestep"][10]["error"] < base / 2


def test_suite_error_of_exact_samples_is_near_zero():
    s = markov_suite(n=8000)
    err, comp = s.error(s.chain.sample(8000, torch.Generator().manual_seed(5)))
    assert err < 0.003 and comp["invalid_rate"] == 0.0
