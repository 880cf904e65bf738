import numpy as np
import pytest
from antm2c import Predictions, auc, evaluate, gauc, logloss
from sklearn.metrics import log_loss, roc_auc_score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_logloss_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2_000)
    p = np.round(rng.random(2_000), 2)  # many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)
    p2 = np.clip(p, 0, 1)
    p2[:5] = [0.0, 1.0, 0.0, 1.0, 0.5]
    assert logloss(y, p2) == pytest.approx(log_loss(y, p2), rel=1e-10)


def test_gauc_hand_example():
    # user a: perfect (AUC 1, 3 rows); user b: inverted (AUC 0, 2 rows); user c: one class
    y = np.array([1, 0, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.5, 0.6])
    g = np.array(["a", "a", "a", "b", "b", "c", "c"])
    val, skipped = gauc(y, p, g)
    assert val == pytest.approx((1.0 * 3 + 0.0 * 2) / 5)
    assert skipped == pytest.approx(2 / 7)


def test_gauc_matches_per_group_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 3_000)
    p = np.round(rng.random(3_000), 1)
    g = rng.integers(0, 60, 3_000)
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if len(np.unique(y[m])) == 2:
            num += roc_auc_score(y[m], p[m]) * m.sum()
            den += m.sum()
    assert gauc(y, p, g)[0] == pytest.approx(num / den, abs=1e-12)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="differ in length"):
        auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities in"):
        logloss([0, 1], [0.1, 1.2])
    assert np.isnan(auc([1, 1], [0.1, 0.2]))


def test_evaluate_strata():
    rng = np.random.default_rng(0)
    n = 1_000
    y = rng.integers(0, 2, n).astype(float)
    scene = rng.integers(0, 3, n)
    cold = rng.random(n) < 0.3
    prob = np.where(cold, rng.random(n), 0.8 * y + 0.2 * rng.random(n))
    pred = Predictions(y, prob, scene, rng.integers(0, 50, n), rng.integers(0, 80, n), cold, cold)
    m = evaluate(pred)
    assert set(m["scene"]) == {"0", "1", "2"}
    assert m["warm_item"]["auc"] == pytest.approx(auc(y[~cold], prob[~cold]))
    assert m["cold_item"]["n"] == cold.sum()
    assert m["warm_item"]["auc"] > 0.9 > m["cold_item"]["auc"]
    assert m["scene_avg_auc"] == pytest.approx(np.mean([v["auc"] for v in m["scene"].values()]))
