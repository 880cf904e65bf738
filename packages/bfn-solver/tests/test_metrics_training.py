import pytest
import torch
from bfn_solver import (
    CONTINUOUS_SAMPLERS,
    DISCRETE_SAMPLERS,
    ContinuousSchedule,
    DiscreteSchedule,
    GaussianMixtureOracle,
    MarkovChainOracle,
)
from bfn_solver.experiments import find_matching_nfe
from bfn_solver.metrics import (
    bigram_tv,
    convergence_slope,
    excess_variance_ratio,
    frechet_distance,
    invalid_transition_rate,
    mode_weight_tv,
)
from bfn_solver.models import ContinuousMLP, DiscreteMLP
from bfn_solver.training import BFNTrainer, TrainConfig


def test_gmm_metrics():
    gmm = GaussianMixtureOracle(
        torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.1, torch.tensor([0.5, 0.5])
    )
    x = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]])
    assert mode_weight_tv(x, gmm) == pytest.approx(0.25)
    assert excess_variance_ratio(x, gmm) == pytest.approx(0.0)
    xs, _ = gmm.sample(20000, torch.Generator().manual_seed(0))
    assert excess_variance_ratio(xs, gmm) == pytest.approx(1.0, abs=0.03)


def test_chain_metrics():
    ch = MarkovChainOracle.random_sparse(4, 6, 2, seed=0)
    x = ch.sample(20000, torch.Generator().manual_seed(0))
    assert invalid_transition_rate(x, ch) == 0.0
    assert bigram_tv(x, ch) < 0.03
    bad = torch.randint(0, 4, (20000, 6), generator=torch.Generator().manual_seed(1))
    assert invalid_transition_rate(bad, ch) > 0.3
    assert bigram_tv(bad, ch) > 0.3


def test_frechet_and_slope():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + 1.0) == pytest.approx(3.0, rel=1e-6)
    assert convergence_slope([10, 20, 40], [1.0, 0.25, 0.0625]) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="positive"):
        convergence_slope([1, 2], [0.0, 1.0])


def test_find_matching_nfe():
    curve = {10: {"error": 1.0}, 100: {"error": 0.01}}
    assert find_matching_nfe(curve, 0.1) == pytest.approx(31.6227766, rel=1e-6)
    assert find_matching_nfe(curve, 2.0) == 10.0
    assert find_matching_nfe(curve, 0.001) is None


def test_continuous_training_reduces_loss_and_samples():
    x = torch.tensor([[0.5, -0.5], [-0.5, 0.5]]).repeat(64, 1)
    sc = ContinuousSchedule(1e-2)
    tr = BFNTrainer(
        ContinuousMLP(2, hidden=64, layers=2),
        x,
        sc,
        TrainConfig(steps=300, batch_size=64, lr=3e-3, ema=0.9),
    )
    losses = tr.train()
    assert sum(losses[-30:]) / 30 < 0.85 * sum(losses[:30]) / 30
    for fn in CONTINUOUS_SAMPLERS.values():
        r = fn(tr.denoiser(), (16, 2), 10, sc)
        assert torch.isfinite(r.samples).all()


def test_discrete_training_both_losses():
    ch = MarkovChainOracle.random_sparse(3, 4, 2, seed=0)
    data = ch.sample(512, torch.Generator().manual_seed(0))
    ds = DiscreteSchedule(3, 3.0)
    for loss in ("continuous", "discrete_time"):
        tr = BFNTrainer(
            DiscreteMLP(4, 3, hidden=64, layers=2),
            data,
            ds,
            TrainConfig(steps=200, batch_size=64, lr=3e-3, loss=loss, n_steps=20),
        )
        losses = tr.train()
        assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30
    for fn in DISCRETE_SAMPLERS.values():
        r = fn(tr.denoiser(), (16, 4, 3), 6, ds)
        assert r.samples.shape == (16, 4)


def test_train_config_validation():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="discrete data"):
        BFNTrainer(DiscreteMLP(4, 3), torch.zeros(4, 4), DiscreteSchedule(3, 1.0), TrainConfig())


def test_trained_table_reports_skipped_digits():
    from bfn_solver.bench import trained_table

    tr = {
        "nfes": [5],
        "digits": {"skipped": "needs scikit-learn"},
        "markov": {
            "metric": "bigram TV",
            "final_loss": 1.0,
            "curves": {"bfn_original": {5: {"bigram_tv": 0.5, "invalid": 0.25}}},
        },
    }
    table = trained_table(tr)
    assert "skipped: needs scikit-learn" in table
    assert "| bfn_original | 0.5000 (0.2500) |" in table


@pytest.fixture(scope="module")
def digits_features():
    pytest.importorskip("sklearn")
    from bfn_solver.metrics import DigitsFeatures

    return DigitsFeatures(seed=0, steps=300)


def test_digits_features_classify_and_discriminate(digits_features):
    from bfn_solver.metrics import class_histogram_tv, feature_frechet_distance, frechet_distance

    f = digits_features
    assert f.test_accuracy > 0.9  # held-out digits
    d = f.data
    gen = torch.Generator().manual_seed(0)
    real = d[torch.randint(len(d), (600,), generator=gen)]
    noisy = (real + 0.3 * torch.randn(real.shape, generator=gen)).clamp(-1, 1)
    floor = feature_frechet_distance(real, d, f)
    # noise that barely moves the pixel distance is plain in the features
    assert feature_frechet_distance(noisy, d, f) > 5 * floor
    assert frechet_distance(noisy, d) < 10 * frechet_distance(real, d)
    assert class_histogram_tv(real, d, f) < 0.1
    ones = d[f.classify(d) == 1][:100]  # one digit only: poor coverage
    assert class_histogram_tv(ones, d, f) > 0.8
    with pytest.raises(ValueError, match="64"):
        f.features(torch.zeros(3, 63))


def test_digits_features_deterministic_and_leave_global_rng_alone():
    pytest.importorskip("sklearn")
    from bfn_solver.metrics import DigitsFeatures

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = DigitsFeatures(seed=1, steps=20)
    after = torch.rand(1)
    b = DigitsFeatures(seed=1, steps=20)
    assert torch.equal(before, after)
    x = a.data[:10]
    assert torch.equal(a.features(x), b.features(x))
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsFeatures(test_fraction=1.0)


def test_trained_table_digits_rows_and_floor():
    from bfn_solver.bench import trained_table

    cell = {"fd_features": 12.5, "fd_pixels": 3.25, "class_tv": 0.1}
    tr = {
        "nfes": [5],
        "digits": {
            "metric": "feature FD",
            "final_loss": 1.0,
            "floor": {"fd_features": 2.0, "fd_pixels": 0.5, "class_tv": 0.02},
            "curves": {"bfn_original": {5: cell}},
        },
        "markov": {"skipped": "not run"},
    }
    table = trained_table(tr)
    assert "| bfn_original | 12.50 (3.25) |" in table
    assert "| (real digits) | 2.00 (0.50) |" in table
