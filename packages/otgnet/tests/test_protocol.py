import numpy as np
import pytest
from otgnet.data import TEST, TRAIN, VAL, OpenTemporalGraph, ProtocolConfig, make_tasks


def test_edge_task_is_task_of_larger_class_and_stream_is_cut():
    # classes 0..5, n_class 2 -> tasks 0,0,1,1,2,2
    lab = np.array([0, 1, 2, 3, 4, 5, 0])
    src = [0, 0, 2, 1, 4, 6, 0]
    dst = [1, 2, 3, 6, 0, 0, 1]
    g = OpenTemporalGraph(src, dst, np.arange(7.0), lab, np.zeros((7, 1)))
    sp = make_tasks(g, ProtocolConfig(2, 2))
    # event 4 touches class 4 (task 2 >= n_task): the stream is cut there, later events too
    assert list(sp.edge_task) == [0, 1, 1, 0, -1, -1, -1]
    blurry = make_tasks(g, ProtocolConfig(2, 2, blurry=True))
    assert list(blurry.edge_task) == [0, 1, 1, 1, -1, -1, -1]


def test_split_invariants(tiny):
    g, sp, _ = tiny
    for k in range(sp.n_task):
        tr = sp.train_edges[k]
        ends = np.concatenate([g.src[tr], g.dst[tr]])
        assert (sp.node_split[ends] == TRAIN).all(), "a train event touches a val/test node"
        for nodes, split in ((sp.test_nodes[k], TEST), (sp.val_nodes[k], VAL)):
            assert (sp.node_split[nodes] == split).all()
            assert (sp.node_task[nodes] == k).all()
            assert not np.isin(nodes, ends).any()
        te = sp.test_edges[k]
        assert ((sp.node_split[g.src[te]] == TEST) | (sp.node_split[g.dst[te]] == TEST)).all()
        assert (sp.edge_task[sp.task_edges[k]] == k).all()
    # splits are disjoint and cover the used nodes; about 60/20/20 per task (train_frac=0.6)
    used = sp.node_task >= 0
    assert set(np.unique(sp.node_split[used])) <= {TRAIN, VAL, TEST}
    for k in range(sp.n_task):
        nk = (sp.node_task == k).sum()
        assert (sp.node_split[sp.node_task == k] == TRAIN).sum() == int(0.6 * nk)


def test_split_is_deterministic_per_seed(tiny):
    g, sp, _ = tiny
    again = make_tasks(g, sp.config)
    assert np.array_equal(again.node_split, sp.node_split)
    other = make_tasks(g, ProtocolConfig(3, 2, train_frac=0.6, seed=7))
    assert not np.array_equal(other.node_split, sp.node_split)


def test_strict_inductive_drops_test_nodes_sharing_val_events(tiny):
    g, sp, _ = tiny
    strict = make_tasks(g, ProtocolConfig(3, 2, train_frac=0.6, strict_inductive=True))
    for k in range(3):
        assert set(strict.test_nodes[k]) <= set(sp.test_nodes[k])
        va = sp.val_edges[k]
        assert not np.isin(strict.test_nodes[k], np.concatenate([g.src[va], g.dst[va]])).any()


def test_visible_labels_never_expose_val_or_test(tiny):
    g, sp, _ = tiny
    for k in range(3):
        vis = sp.visible_labels(g, k)
        hidden = sp.node_split != TRAIN
        assert (vis[hidden] == -1).all()
        assert (vis[sp.node_task > k] == -1).all()
        shown = vis >= 0
        assert np.array_equal(vis[shown], g.node_label[shown])
    mask = sp.eval_neighbor_mask()
    assert mask[np.concatenate(sp.test_nodes)].all() and mask[np.concatenate(sp.val_nodes)].all()


def test_bad_protocol_input():
    g = OpenTemporalGraph([0], [1], [0.0], [0, -1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="unlabelled"):
        make_tasks(g, ProtocolConfig(1, 2))
    g = OpenTemporalGraph([0], [1], [0.0], [0, 1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="task 1 has no nodes"):
        make_tasks(g, ProtocolConfig(2, 2))
    with pytest.raises(ValueError, match="n_task"):
        ProtocolConfig(0, 2)
    with pytest.raises(ValueError, match="train_frac"):
        ProtocolConfig(2, 2, train_frac=1.0)
    with pytest.raises(TypeError):
        make_tasks(g, {"n_task": 1})
