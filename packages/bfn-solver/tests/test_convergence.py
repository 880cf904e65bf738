"""Convergence order on exact flows (continuous: closed-form map; discrete: fine reference)."""

import pytest
import torch
from bfn_solver import (
    ContinuousSchedule,
    DiscreteSchedule,
    FactorizedOracle,
    GaussianOracle,
    sample_bfn_solver_pp2,
    sample_discrete_bfn_solver1,
    sample_discrete_bfn_solver2,
    sample_discrete_bfn_solver2_singlestep,
)
from bfn_solver.bench import convergence_orders
from bfn_solver.metrics import convergence_slope


def test_orders_on_exact_gaussian_flow_lambda_grid():
    o = convergence_orders(steps=(20, 40, 80, 160))
    assert o["bfn_solver1"]["order"] == pytest.approx(1.0, abs=0.15)
    assert o["bfn_solver_pp1"]["order"] == pytest.approx(1.0, abs=0.15)
    assert o["bfn_solver_pp2"]["order"] == pytest.approx(2.0, abs=0.2)


def test_orders_on_time_grid_away_from_zero():
    o = convergence_orders(steps=(40, 80, 160, 320), grid="time", eta=0.05)
    assert o["bfn_solver_pp1"]["order"] == pytest.approx(1.0, abs=0.15)
    assert o["bfn_solver_pp2"]["order"] > 1.7


def test_flow_map_is_what_a_fine_solver_converges_to():
    sc = ContinuousSchedule(1e-2)
    g = GaussianOracle(-0.2, 0.3, sc)
    x0 = torch.randn(
        16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    ) * sc.sigma(0.1)
    r = sample_bfn_solver_pp2(
        g,
        None,
        2000,
        sc,
        eta=0.1,
        clip=None,
        last_step="state",
        x_init=x0,
        dtype=torch.float64,
        grid="lambda",
    )
    torch.testing.assert_close(r.samples, g.flow_map(x0, 0.1, 1.0), rtol=0, atol=1e-6)


def test_discrete_orders_against_fine_reference():
    sc = DiscreteSchedule(5, 3.0)
    probs = torch.softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(1)), -1)
    ora = FactorizedOracle(probs)
    eta = 0.2
    y0 = (5 * sc.beta(eta)) ** 0.5 * torch.randn(
        64, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    kw = dict(eta=eta, last_step="state", x_init=y0, dtype=torch.float64)
    ref = sample_discrete_bfn_solver2_singlestep(ora, None, 8000, sc, **kw).extra["logits"]
    steps = (10, 20, 40, 80)
    orders = {}
    for nm, fn in [("s1", sample_discrete_bfn_solver1), ("s2", sample_discrete_bfn_solver2)]:
        errs = [
            float((fn(ora, None, k, sc, **kw).extra["logits"] - ref).abs().mean()) for k in steps
        ]
        orders[nm] = -convergence_slope(steps, errs)
    assert orders["s1"] == pytest.approx(1.0, abs=0.2)
    assert orders["s2"] > 1.7
