import numpy as np
import pytest
from llmrec.bench import paired_bootstrap


def test_paired_bootstrap_closed_forms_and_pairing():
    rng = np.random.default_rng(0)
    b = (rng.random(400) < 0.3).astype(float)
    same = paired_bootstrap(b, b, 500)
    assert same["diff"] == same["ci95_low"] == same["ci95_high"] == same["p_below"] == 0.0
    up = paired_bootstrap(b + 1, b, 500)  # a constant shift: no sampling noise at all
    assert up["diff"] == up["ci95_low"] == up["ci95_high"] == 1.0 and up["p_below"] == 0.0
    # one hit more in 400 users: the difference is exact, the interval straddles it
    a = b.copy()
    a[np.flatnonzero(a == 0)[0]] = 1
    r = paired_bootstrap(a, b, 2000, seed=1)
    assert r["n"] == 400 and r["diff"] == pytest.approx(1 / 400)
    assert r["ci95_low"] <= r["diff"] <= r["ci95_high"]
    # pairing: two noisy but identical-per-user arms have a far tighter interval than the
    # same marginals shuffled (an unpaired comparison would not notice)
    noisy = rng.random(400)
    paired = paired_bootstrap(noisy + 0.01, noisy, 1000)
    unpaired = paired_bootstrap(noisy + 0.01, rng.permutation(noisy), 1000)
    assert paired["ci95_high"] - paired["ci95_low"] < 1e-9
    assert unpaired["ci95_high"] - unpaired["ci95_low"] > 0.02
    # deterministic given the seed
    assert paired_bootstrap(a, b, 300, seed=5) == paired_bootstrap(a, b, 300, seed=5)


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
