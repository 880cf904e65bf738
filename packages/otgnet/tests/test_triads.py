import itertools

import numpy as np
import pytest
from conftest import random_stream
from otgnet.replay import mine_triads


def brute_triads(src, dst, t, eid):
    first = {}
    for s, d, tt, e in sorted(zip(src, dst, t, eid, strict=True), key=lambda r: (r[2], r[3])):
        if s == d:
            continue
        key = (min(s, d), max(s, d))
        if key not in first:
            first[key] = (tt, e)
    nbrs = {}
    for a, b in first:
        nbrs.setdefault(a, set()).add(b)
        nbrs.setdefault(b, set()).add(a)
    closed, open_ = set(), set()
    for u, ns in nbrs.items():
        for a, b in itertools.combinations(sorted(ns), 2):
            ta = first[(min(a, u), max(a, u))][0]
            tb = first[(min(b, u), max(b, u))][0]
            key = (min(a, b), max(a, b))
            if key in first:
                if first[key][0] > max(ta, tb):
                    closed.add((key, u))
            else:
                open_.add((key, u))
    return closed, open_


def as_sets(tri):
    c, o = set(), set()
    for (a, u, b), cl in zip(tri.nodes.tolist(), tri.closed.tolist(), strict=True):
        (c if cl else o).add(((min(a, b), max(a, b)), u))
    return c, o


def test_hand_built_stream():
    # 0-1 (t1), 1-2 (t2), 0-2 (t3): closed triad centred at 1 (0-2 closes last)
    # 2-3 (t4): open triads 1-2-3 and 0-2-3; 4-5 alone; duplicate 0-1 at t5 changes nothing
    src = [0, 1, 0, 2, 4, 0]
    dst = [1, 2, 2, 3, 5, 1]
    t = [1.0, 2.0, 3.0, 4.0, 4.0, 5.0]
    tri = mine_triads(src, dst, t, np.arange(6) + 10)
    c, o = as_sets(tri)
    assert c == {((0, 2), 1)}
    assert o == {((1, 3), 2), ((0, 3), 2)}
    k = int(np.flatnonzero(tri.closed)[0])
    assert sorted(tri.edges[k].tolist()) == [10, 11]  # wedge events 0-1 and 1-2 (first events)
    assert tri.times[k] == 3.0


def test_triangle_closed_by_earliest_edge_is_found_from_other_centre():
    # 0-2 comes first, then 0-1, then 1-2 closes: centre must be 0
    tri = mine_triads([0, 0, 1], [2, 1, 2], [1.0, 2.0, 3.0], np.arange(3))
    c, o = as_sets(tri)
    assert c == {((1, 2), 0)} and o == set()


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    src, dst, t = random_stream(rng, 10, 35, tmax=50)
    eid = np.arange(35)
    tri = mine_triads(src, dst, t, eid)
    assert as_sets(tri) == brute_triads(src, dst, t, eid)
    # replayed wedge events really join the triad's nodes
    for (a, u, b), (e1, e2) in zip(tri.nodes, tri.edges, strict=True):
        assert {src[e1], dst[e1]} == {a, u} and {src[e2], dst[e2]} == {u, b}


def test_cap_and_empty():
    rng = np.random.default_rng(0)
    src, dst, t = random_stream(rng, 12, 80, tmax=100)
    full = mine_triads(src, dst, t, np.arange(80))
    capped = mine_triads(src, dst, t, np.arange(80), max_candidates=7, seed=1)
    assert len(capped) == 7 and len(full) > 7
    assert len(mine_triads([0], [1], [1.0], [0])) == 0
    assert len(mine_triads([0, 1], [0, 1], [1.0, 2.0], [0, 1])) == 0  # self-loops only
