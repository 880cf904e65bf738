from dataclasses import replace

import numpy as np
import pytest
import torch
from otgnet import ContinualConfig, ContinualLearner, OTGNet, OTGNetConfig, TemporalNeighborFinder
from otgnet.continual import pseudo_labels
from otgnet.data import TEST, VAL, OpenTemporalGraph, ProtocolConfig, make_tasks
from otgnet.nn.memory import NodeMemory, _last_occurrence


def test_memory_last_write_wins_and_reset_is_reproducible():
    m = NodeMemory(5, 3, init_seed=1)
    init = m.emb.clone()
    m.write(torch.tensor([2, 4, 2]), torch.tensor([[1.0] * 3, [2.0] * 3, [3.0] * 3]))
    assert m.emb[2].tolist() == [3.0] * 3 and m.emb[4].tolist() == [2.0] * 3
    m.reset()
    assert torch.equal(m.emb, init)
    assert sorted(_last_occurrence(torch.tensor([5, 1, 5, 1, 7])).tolist()) == [2, 3, 4]


def hand_model(use_ib=True):
    # nodes 0, 1 of class 0; node 2 of class 1
    g = OpenTemporalGraph(
        [0, 1, 0], [1, 2, 1], [1.0, 2.0, 3.0], [0, 0, 1], np.eye(3, dtype=np.float32)
    )
    f = TemporalNeighborFinder(g.src, g.dst, g.t, 3)
    torch.manual_seed(0)
    m = OTGNet(
        torch.from_numpy(g.x), 2, OTGNetConfig(emb_dim=8, hidden=8, use_ib=use_ib, dropout=0.0)
    )
    return g, f, m.eval()


def _out(m, f, t):
    m.reset_state()
    e = m(
        torch.tensor([0]),
        torch.tensor([1]),
        torch.tensor([t]),
        torch.tensor([0]),
        f,
        torch.tensor([0, 0, 1]),
    )
    return torch.cat([e.logits_src, e.logits_dst], 1)


def test_bottleneck_applies_only_across_classes():
    _, f, m = hand_model()
    before_same, before_cross = _out(m, f, 1.5), _out(m, f, 3.0)
    with torch.no_grad():
        for p in m.ib.encoder.parameters():
            p.add_(1.0)
    # at t=1.5 every neighbour has the centre's class: the encoder is never used
    assert torch.equal(_out(m, f, 1.5), before_same)
    # at t=3 node 1 has neighbour 2 (class 1): its message goes through the encoder
    assert not torch.allclose(_out(m, f, 3.0), before_cross)
    # without the bottleneck the encoder is never used, across classes either
    _, _, m0 = hand_model(use_ib=False)
    ref = _out(m0, f, 3.0)
    with torch.no_grad():
        for p in m0.ib.encoder.parameters():
            p.add_(1.0)
    assert torch.equal(_out(m0, f, 3.0), ref)


def test_time_frequencies_fixed_by_default_and_ib_outside_main_optimizer():
    _, _, m = hand_model()
    names = {n for n, _ in m.named_parameters()}
    assert not any("time_enc" in n for n in names)  # the official GPU behaviour, deliberately
    ib = {id(p) for p in m.ib.parameters()}
    assert ib and not ib & {id(p) for p in m.main_parameters()}
    m2 = OTGNet(torch.zeros(3, 1), 2, OTGNetConfig(time_learnable=True))
    assert any("time_enc" in n for n, _ in m2.named_parameters())


def test_pseudo_labels_majority_of_labelled_neighbours():
    # node 3 (unknown) meets 0 (class 1), 1 (class 1), 2 (class 0); node 4 meets nobody labelled
    f = TemporalNeighborFinder([3, 3, 3, 4], [0, 1, 2, 5], [1.0, 2.0, 3.0, 4.0], 6)
    vis = np.array([1, 1, 0, -1, -1, -1])
    pl = pseudo_labels(vis, f, np.array([3, 4]), k=50)
    assert pl[3] == 1 and pl[4] == -1 and pl[0] == -1


def _permute_hidden_labels(g, sp, seed):
    """Same graph, but every val/test node's class re-drawn within its own task's classes."""
    rng = np.random.default_rng(seed)
    lab = g.node_label.copy()
    c = sp.config.n_class
    hidden = np.flatnonzero((sp.node_split == TEST) | (sp.node_split == VAL))
    lab[hidden] = (lab[hidden] // c) * c + rng.integers(0, c, len(hidden))
    return OpenTemporalGraph(g.src, g.dst, g.t, lab, g.x)


def test_no_test_label_reaches_the_gate_or_the_predictions(tiny):
    g, sp, _ = tiny
    cfg = ContinualConfig(epochs=1, patience=0, replay="triad", mem_size=2, seed=0)
    mc = OTGNetConfig(emb_dim=16, hidden=16, ib_hidden=16)
    lr = ContinualLearner(g, sp, cfg, mc)
    lr.train_task(0)
    lr.train_task(1)
    g2 = _permute_hidden_labels(g, sp, 1)
    assert not np.array_equal(g2.node_label, g.node_label)
    sp2 = make_tasks(g2, sp.config)
    assert np.array_equal(sp2.node_split, sp.node_split) and np.array_equal(
        sp2.edge_task, sp.edge_task
    )
    lr2 = ContinualLearner(g2, sp2, cfg, mc)
    lr2.model.load_state_dict(lr.model.state_dict())
    lr2.task = lr.task
    for task in (0, 1):
        f = lr._eval_finder(task)
        assert torch.equal(lr.gate_labels(task, f), lr2.gate_labels(task, f))
        assert torch.equal(lr.predict(task), lr2.predict(task))
    # the permutation did change test labels of the evaluated tasks (so the check had teeth)
    touched = np.concatenate([sp.test_nodes[0], sp.test_nodes[1]])
    assert (g.node_label[touched] != g2.node_label[touched]).any()


def test_oracle_gate_reads_test_labels_and_only_when_named(tiny):
    """``gate="oracle"`` (the official behaviour, a diagnostic) reads every seen node's true label:
    its gate is always right and it does change when test labels are permuted; the default gate's
    pseudo-labels are right less often."""
    g, sp, _ = tiny
    mc = OTGNetConfig(emb_dim=16, hidden=16, ib_hidden=16)
    cfg = ContinualConfig(epochs=1, patience=0, replay="none", seed=0, gate="oracle")
    lr = ContinualLearner(g, sp, cfg, mc)
    lr.train_task(0)
    lr.train_task(1)
    f = lr._eval_finder(1)
    gl = lr.gate_labels(1, f).numpy()
    seen = (sp.node_task >= 0) & (sp.node_task <= 1)
    assert np.array_equal(gl[seen], g.node_label[seen]) and (gl[~seen] == -1).all()
    assert lr.gate_accuracy() == [100.0, 100.0]
    g2 = _permute_hidden_labels(g, sp, 1)
    lr2 = ContinualLearner(g2, make_tasks(g2, sp.config), cfg, mc)
    assert not torch.equal(lr2.gate_labels(1, f), lr.gate_labels(1, f))
    vis = ContinualLearner(g, sp, replace(cfg, gate="visible"), mc)
    vis.task = 1
    acc = vis.gate_accuracy()
    assert len(acc) == 2 and all(0 <= a <= 100 for a in acc) and min(acc) < 100
    with pytest.raises(ValueError, match="gate"):
        ContinualConfig(gate="labels")


def test_model_config_errors():
    with pytest.raises(ValueError, match="head"):
        OTGNetConfig(head="multi")
    with pytest.raises(ValueError, match="dropout"):
        OTGNetConfig(dropout=1.0)
    with pytest.raises(ValueError, match="emb_dim"):
        OTGNetConfig(emb_dim=0)
    with pytest.raises(ValueError, match="x must be"):
        OTGNet(torch.zeros(3), 2)
    with pytest.raises(ValueError):
        make_tasks(
            OpenTemporalGraph([0], [1], [0.0], [0, 0], np.zeros((2, 1))),
            ProtocolConfig(1, 1, train_frac=0.0),
        )
