from dataclasses import replace

import numpy as np
import pytest
from otgnet.data import SyntheticConfig, make_synthetic
from otgnet.data.synthetic import CLOSURE, HETERO


def _binom_ok(k, n, p, z=4.0):
    return abs(k - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def big():
    cfg = SyntheticConfig(
        nodes_per_class=40, heterophily=0.35, triadic_closure=0.25, same_community=0.7, seed=5
    )
    return cfg, *make_synthetic(cfg)


def test_generator_statistics_match_knobs(big):
    cfg, g, lat = big
    assert np.bincount(g.node_label).tolist() == [cfg.nodes_per_class] * 6
    assert g.x.shape == (240, cfg.d_class + cfg.d_comm + cfg.d_noise)
    kind, attempt = lat["kind"], lat["closure_attempt"]
    # the closure coin has probability triadic_closure
    assert _binom_ok(attempt.sum(), len(attempt), cfg.triadic_closure)
    # events without the closure coin are heterophilous with probability `heterophily`
    rest = ~attempt
    cross = g.label_src != g.label_dst
    assert _binom_ok((kind[rest] == HETERO).sum(), rest.sum(), cfg.heterophily)
    assert np.array_equal(cross, kind == HETERO)  # every hetero event crosses classes, others don't
    # hetero events after task 0 go to older classes: the edge belongs to the newer task
    t_new = np.maximum(g.label_src, g.label_dst) // cfg.n_class
    late = (kind == HETERO) & (t_new > 0)
    assert (np.minimum(g.label_src, g.label_dst)[late] // cfg.n_class < t_new[late]).all()
    # same-community preference on non-closure links
    comm = lat["community"]
    same = comm[g.src] == comm[g.dst]
    nc = kind != CLOSURE
    assert same[nc].mean() > 0.6


def test_closure_events_close_a_same_class_triangle(big):
    _, g, lat = big
    seen: dict[int, set] = {}
    for e in range(g.num_edges):
        s, d = int(g.src[e]), int(g.dst[e])
        if lat["kind"][e] == CLOSURE:
            common = seen.get(s, set()) & seen.get(d, set())
            assert common, f"closure event {e} closes no triangle"
            assert g.node_label[s] == g.node_label[d]
            assert d not in seen.get(s, set())
        seen.setdefault(s, set()).add(d)
        seen.setdefault(d, set()).add(s)


def test_heterophily_knob_moves_the_statistic():
    lo, _ = make_synthetic(SyntheticConfig(heterophily=0.05, triadic_closure=0.0, seed=1))
    hi, _ = make_synthetic(SyntheticConfig(heterophily=0.6, triadic_closure=0.0, seed=1))
    assert lo.heterophily() < 0.15 < 0.45 < hi.heterophily()


def test_prototype_overlap_and_determinism():
    _, a = make_synthetic(SyntheticConfig(prototype_overlap=0.9, seed=2))
    p = a["prototypes"]
    r = [np.corrcoef(p[c], p[c + 2])[0, 1] for c in range(4)]
    assert np.mean(r) > 0.6
    g1, _ = make_synthetic(SyntheticConfig(seed=4))
    g2, _ = make_synthetic(SyntheticConfig(seed=4))
    assert np.array_equal(g1.src, g2.src) and np.array_equal(g1.x, g2.x)
    assert np.all(np.diff(g1.t) >= 0)


@pytest.mark.parametrize(
    "kw",
    [
        {"heterophily": 1.5},
        {"nodes_per_class": 2},
        {"prototype_overlap": 1.0},
        {"events_per_node": 0},
        {"n_class": 0},
        {"hetero_partner": "newer"},
    ],
)
def test_bad_config(kw):
    with pytest.raises(ValueError):
        SyntheticConfig(**kw)


def test_closure_prefers_the_same_community():
    """Triangles close between similar nodes: with ``same_community=1`` a closure picks a
    candidate of the source's community whenever there is one, with 0 one outside it."""
    for p in (0.0, 1.0):
        g, lat = make_synthetic(
            SyntheticConfig(nodes_per_class=30, triadic_closure=0.5, same_community=p, seed=7)
        )
        same = lat["community"][g.src] == lat["community"][g.dst]
        had = lat["closure_had_same"] if p == 1.0 else lat["closure_had_other"]
        assert had.sum() > 50 and not (had & (lat["kind"] != CLOSURE)).any()
        assert (same[had] == (p == 1.0)).all()


def test_uniform_hetero_partner_class_is_uniform_over_the_other_classes():
    """``hetero_partner="uniform"``: a heterophilous partner's class is uniform over every other
    class present so far (the source's own task included), not only older tasks' classes."""
    cfg = SyntheticConfig(
        nodes_per_class=60, heterophily=0.6, triadic_closure=0.1, hetero_partner="uniform", seed=3
    )
    g, lat = make_synthetic(cfg)
    het = lat["kind"] == HETERO
    assert np.array_equal(het, g.label_src != g.label_dst)
    t_src, t_dst = g.label_src // cfg.n_class, g.label_dst // cfg.n_class
    assert (t_dst[het] <= t_src[het]).all()  # only nodes already there
    for k in (1, 2):
        n_seen = (k + 1) * cfg.n_class
        sel = het & (t_src == k)
        # the partner is in the source's own task with probability (n_class - 1) / (n_seen - 1)
        assert _binom_ok((t_dst[sel] == k).sum(), sel.sum(), (cfg.n_class - 1) / (n_seen - 1))
        # and every other class is equally likely
        counts = np.bincount(g.label_dst[sel], minlength=n_seen)[:n_seen]
        for c in range(n_seen):
            p = ((g.label_src[sel] != c) / (n_seen - 1)).sum() / sel.sum()
            assert _binom_ok(counts[c], sel.sum(), p)
    # the default keeps the dossier's rule: after task 0, partners come from older tasks only
    g0, lat0 = make_synthetic(replace(cfg, hetero_partner="older"))
    het0 = lat0["kind"] == HETERO
    late0 = het0 & (g0.label_src // cfg.n_class > 0)
    assert (g0.label_dst[late0] // cfg.n_class < g0.label_src[late0] // cfg.n_class).all()
