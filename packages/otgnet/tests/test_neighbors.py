import numpy as np
import pytest
from conftest import random_stream
from otgnet.nn import TemporalNeighborFinder


def brute(src, dst, t, eid, node, tq, k, exclude):
    cand = []
    for e in range(len(src)):
        if t[e] >= tq:
            continue
        for a, b in ((src[e], dst[e]), (dst[e], src[e])):
            if a == node and not exclude[b]:
                cand.append((t[e], eid[e], b))
    cand.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return cand[:k]


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, e, k = 9, 60, 4
    src, dst, t = random_stream(rng, n, e, tmax=15)
    eid = np.arange(e) + 100
    exclude = rng.random(n) < 0.2
    f = TemporalNeighborFinder(src, dst, t, n, eid=eid, exclude=exclude)
    q_nodes = rng.integers(0, n, 40)
    q_t = rng.integers(0, 17, 40).astype(float) + rng.choice([0, 0.5], 40)
    nb = f.before(q_nodes, q_t, k)
    for i in range(40):
        want = brute(src, dst, t, eid, q_nodes[i], q_t[i], k, exclude)
        m = nb.mask[i].numpy()
        assert m.sum() == len(want)
        assert list(m) == [True] * len(want) + [False] * (
            k - len(want)
        )  # most recent first, padded
        got = list(
            zip(
                nb.times[i][m].tolist(),
                nb.eids[i][m].tolist(),
                nb.nodes[i][m].tolist(),
                strict=True,
            )
        )
        assert got == [(float(a), int(b), int(c)) for a, b, c in want]
        assert (nb.nodes[i][~nb.mask[i]] == 0).all() and (nb.eids[i][~nb.mask[i]] == -1).all()
    assert (f.degree_before(q_nodes, q_t) >= nb.mask.sum(1).numpy()).all()


def test_strictly_before_and_all_time():
    f = TemporalNeighborFinder([0, 0, 0], [1, 2, 3], [1.0, 2.0, 2.0], 4)
    nb = f.before([0], [2.0], 3)
    assert nb.nodes[0].tolist()[:1] == [1] and nb.mask[0].tolist() == [True, False, False]
    nb = f.all_time([0, 3], 2)
    assert nb.nodes[0].tolist() == [3, 2] and nb.nodes[1].tolist() == [0, 0]
    assert nb.mask[1].tolist() == [True, False]
    with pytest.raises(ValueError, match="k must be"):
        f.before([0], [1.0], 0)
    with pytest.raises(ValueError, match="query node"):
        f.before([7], [1.0], 1)


def test_large_timestamps_keep_exact_order():
    # unix-time stamps one second apart: a float32 key would merge them
    t0 = 1.7e9
    f = TemporalNeighborFinder([0, 0], [1, 2], [t0, t0 + 1], 3)
    nb = f.before([0, 0], [t0 + 1, t0 + 2], 2)
    assert nb.mask.sum(1).tolist() == [1, 2]
