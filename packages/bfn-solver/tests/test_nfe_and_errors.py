"""NFE accounting and bad input."""

import math

import pytest
import torch
from bfn_solver import (
    CONTINUOUS_SAMPLERS,
    DISCRETE_SAMPLERS,
    ContinuousSchedule,
    DiscreteSchedule,
    FactorizedOracle,
    GaussianMixtureOracle,
    NFEBudgetExceeded,
    NFECounter,
)

SC = ContinuousSchedule(1e-3)
DS = DiscreteSchedule(3, 2.0)
GMM = GaussianMixtureOracle(torch.tensor([[0.5, 0.5], [-0.5, 0.0]]), 0.1, schedule=SC)
FAC = FactorizedOracle(torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]))


def _nfe_kw(name, last_step, discrete):
    if name == "bfn_original":
        return {}
    return {"last_step": last_step}


@pytest.mark.parametrize("name", sorted(CONTINUOUS_SAMPLERS))
@pytest.mark.parametrize("last_step", ["drop", "denoise", "state"])
@pytest.mark.parametrize("nfe", [1, 2, 3, 10])
def test_continuous_nfe_within_budget(name, last_step, nfe):
    if nfe < 2 and (last_step == "denoise" or name == "bfn_original"):
        with pytest.raises(ValueError, match="nfe >= 2"):
            CONTINUOUS_SAMPLERS[name](GMM, (8, 2), nfe, SC, **_nfe_kw(name, last_step, False))
        return
    calls = []

    def den(mu, t):
        calls.append(float(t[0]))
        return GMM(mu, t)

    r = CONTINUOUS_SAMPLERS[name](den, (8, 2), nfe, SC, **_nfe_kw(name, last_step, False))
    assert r.nfe == len(calls) == nfe  # every first/second-order multistep solver uses all of it
    assert r.times == pytest.approx(calls)
    assert all(0.0 <= t <= 1.0 for t in calls)
    assert r.samples.shape == (8, 2)


@pytest.mark.parametrize("name", sorted(DISCRETE_SAMPLERS))
@pytest.mark.parametrize("last_step", ["drop", "denoise", "state"])
@pytest.mark.parametrize("nfe", [2, 3, 4, 11])
def test_discrete_nfe_within_budget(name, last_step, nfe):
    calls = []

    def den(theta, t):
        calls.append(float(t[0]))
        return FAC(theta, t)

    if "singlestep" in name and last_step != "drop" and nfe < 2 + (last_step == "denoise"):
        with pytest.raises(ValueError, match="NFE per step"):
            DISCRETE_SAMPLERS[name](den, (8, 2, 3), nfe, DS, last_step=last_step)
        return
    r = DISCRETE_SAMPLERS[name](den, (8, 2, 3), nfe, DS, **_nfe_kw(name, last_step, True))
    assert r.nfe == len(calls) <= nfe
    if "singlestep" not in name:
        assert r.nfe == nfe
    else:  # 2 NFE per step: at most one NFE left unused
        assert r.nfe >= nfe - 1
    assert r.samples.shape == (8, 2) and r.samples.dtype == torch.int64
    assert ((r.samples >= 0) & (r.samples < 3)).all()


def test_counter_enforces_budget():
    c = NFECounter(lambda s, t: s, budget=2, out_shape=(1, 2))
    x = torch.zeros(1, 2)
    c(x, 0.1)
    c(x, 0.2)
    with pytest.raises(NFEBudgetExceeded, match="budget of 2"):
        c(x, 0.3)


@pytest.mark.parametrize("name", sorted(CONTINUOUS_SAMPLERS))
@pytest.mark.parametrize("nfe", [0, -1, 2.5, True])
def test_bad_nfe(name, nfe):
    with pytest.raises(ValueError, match="nfe"):
        CONTINUOUS_SAMPLERS[name](GMM, (4, 2), nfe, SC)


@pytest.mark.parametrize("name", sorted(DISCRETE_SAMPLERS))
def test_bad_nfe_discrete(name):
    with pytest.raises(ValueError, match="nfe"):
        DISCRETE_SAMPLERS[name](FAC, (4, 2, 3), 0, DS)


@pytest.mark.parametrize("bad", [-0.1, 1.0, math.nan])
def test_bad_eta(bad):
    with pytest.raises(ValueError, match="eta"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp2"](GMM, (4, 2), 5, SC, eta=bad)


def test_ode_solver_rejects_eta_zero():
    with pytest.raises(ValueError, match="singular"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4, 2), 5, SC, eta=0.0)
    with pytest.raises(ValueError, match="singular"):
        DISCRETE_SAMPLERS["bfn_solver2"](FAC, (4, 2, 3), 5, DS, eta=0.0)


def test_bad_options():
    with pytest.raises(ValueError, match="last_step"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4, 2), 5, SC, last_step="nope")
    with pytest.raises(ValueError, match="grid"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4, 2), 5, SC, grid="karras")
    with pytest.raises(ValueError, match="clip"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4, 2), 5, SC, clip=(1.0, -1.0))
    with pytest.raises(ValueError, match="decode"):
        DISCRETE_SAMPLERS["bfn_solver1"](FAC, (4, 2, 3), 5, DS, decode="beam")
    with pytest.raises(ValueError, match="dtype"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4, 2), 5, SC, dtype=torch.float16)
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        DISCRETE_SAMPLERS["bfn_solver1"](FAC, (4, 2, 3), 5, SC)
    with pytest.raises(TypeError, match="ContinuousSchedule"):
        CONTINUOUS_SAMPLERS["bfn_solver1"](GMM, (4, 2), 5, DS)


def test_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, (4,), 5, SC)
    with pytest.raises(ValueError, match="K=3"):
        DISCRETE_SAMPLERS["bfn_solver1"](FAC, (4, 2, 5), 5, DS)
    with pytest.raises(ValueError, match="expected"):  # denoiser output shape mismatch
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](lambda m, t: m[:, :1], (4, 2), 5, SC)
    with pytest.raises(ValueError, match="shape or x_init"):
        CONTINUOUS_SAMPLERS["bfn_solver_pp1"](GMM, None, 5, SC)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        GMM(torch.zeros(3, 5), torch.zeros(3))


@pytest.mark.parametrize("name", sorted(CONTINUOUS_SAMPLERS))
def test_non_finite_denoiser_output(name):
    def den(mu, t):
        out = torch.zeros_like(mu)
        out[0, 0] = float("nan")
        return out

    with pytest.raises(ValueError, match="non-finite"):
        CONTINUOUS_SAMPLERS[name](den, (4, 2), 5, SC, clip=None)


def test_non_finite_discrete_denoiser_output():
    with pytest.raises(ValueError, match="non-finite"):
        DISCRETE_SAMPLERS["sde_bfn_solver2"](lambda th, t: th * float("inf"), (4, 2, 3), 5, DS)


def test_non_callable_denoiser():
    with pytest.raises(TypeError, match="callable"):
        CONTINUOUS_SAMPLERS["bfn_solver1"](3, (4, 2), 5, SC)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_devices(dtype):
    for name, fn in CONTINUOUS_SAMPLERS.items():
        r = fn(GMM, (4, 2), 6, SC, dtype=dtype, device="cpu")
        assert r.samples.dtype == dtype, name
        assert torch.isfinite(r.samples).all()
    for name, fn in DISCRETE_SAMPLERS.items():
        r = fn(FAC, (4, 2, 3), 6, DS, dtype=dtype, device=torch.device("cpu"))
        assert r.probs.dtype == dtype, name
