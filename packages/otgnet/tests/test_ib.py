import math

import numpy as np
import pytest
import torch
from otgnet.nn import MINE, CLUBSample, InformationBottleneck


def gaussians(rho, n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 1, generator=g)
    return x, y


def test_estimators_bracket_true_mutual_information():
    rho = 0.8
    true_mi = -0.5 * math.log(1 - rho**2)  # 0.511 nats
    x, y = gaussians(rho)
    torch.manual_seed(0)
    club, mine = CLUBSample(1, 1, 32), MINE(1, 1, 32)
    oc = torch.optim.Adam(club.parameters(), lr=1e-2)
    om = torch.optim.Adam(mine.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        oc.zero_grad()
        (-club.log_likelihood(x, y)).backward()
        oc.step()
        om.zero_grad()
        (-mine(x, y, gen)).backward()
        om.step()
    with torch.no_grad():
        xt, yt = gaussians(rho, seed=5)
        c = float(np.mean([club(xt, yt, gen).item() for _ in range(20)]))
        m = float(np.mean([mine(xt, yt, gen).item() for _ in range(20)]))
    assert c >= true_mi - 0.1, (c, true_mi)  # CLUB: upper bound
    assert m <= true_mi + 0.1, (m, true_mi)  # MINE: lower bound
    assert m > 0.2  # and it learned something


def test_bottleneck_removes_class_information_and_keeps_the_rest():
    lm = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    n, d = 400, 8
    y = torch.randint(0, 3, (n,), generator=g)
    protos = torch.randn(3, 4, generator=g) * 2
    nuis = torch.randn(n, 4, generator=g)
    x = torch.cat([protos[y] + 0.3 * torch.randn(n, 4, generator=g), nuis], 1)
    torch.manual_seed(0)
    ib = InformationBottleneck(d, 3, beta=0.3, hidden=32, lr=5e-3, cache_size=n, seed=0)
    ib.remember(x, y)
    for _ in range(200):
        ib.step(train_estimators=True)
    z = ib.encode(x).numpy()

    def probe(f):
        clf = lm.LogisticRegression(max_iter=500).fit(f[:300], y[:300])
        return clf.score(f[300:], y[300:])

    acc_x, acc_z = probe(x.numpy()), probe(z)
    r2 = lm.LinearRegression().fit(z[:300], nuis[:300]).score(z[300:], nuis[300:])
    assert acc_x > 0.95
    assert acc_z < acc_x - 0.1, (acc_x, acc_z)  # class information removed (partly, linearly)
    assert r2 > 0.4, r2  # the class-agnostic part kept


def test_encode_is_detached_and_cache_is_bounded():
    ib = InformationBottleneck(4, 2, cache_size=10)
    x = torch.randn(6, 4, requires_grad=True)
    assert not ib.encode(x).requires_grad
    for _ in range(5):
        ib.remember(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
    cx, cy = ib.cached()
    assert len(cx) == 10 and len(cy) == 10
    assert ib.step() and ib.step(train_estimators=False)
    with pytest.raises(ValueError):
        InformationBottleneck(4, 2, beta=-1)
