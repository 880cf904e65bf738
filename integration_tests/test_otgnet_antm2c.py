"""otgnet + antm2c: an AntM2C click log (synthetic, in the real CSV layout) read as a temporal
interaction graph: users and items become nodes, impressions become time-ordered events with the
click as the event label and the scene of the item as its class. The graph goes through otgnet's
parquet cache, PyG's ``TemporalData``, the temporal neighbour finder, and one forward/backward of
OTGNet and of the TGN baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

antm2c = pytest.importorskip("antm2c")
otgnet = pytest.importorskip("otgnet")


def test_antm2c_click_log_as_open_temporal_graph(tmp_path):
    import torch

    antm2c.generate(
        tmp_path / "raw",
        antm2c.SynthConfig(n_rows=1500, n_users=60, n_items=80),
        progress_bar=False,
    )
    df = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "raw").glob("antm2c_synth_part*"))])
    df["t"] = pd.to_datetime(df["log_time"]).astype("int64") // 10**9
    df = df.sort_values("t", kind="stable")
    users = {u: k for k, u in enumerate(sorted(df["user_id"].unique()))}
    items = {i: k + len(users) for k, i in enumerate(sorted(df["item_id"].unique()))}
    src = df["user_id"].map(users).to_numpy()
    dst = df["item_id"].map(items).to_numpy()
    n = len(users) + len(items)
    # an item's class: the scene it is shown in most; users: their most frequent scene
    label = np.zeros(n, dtype=np.int64)
    for col, ids in (("user_id", users), ("item_id", items)):
        mode = df.groupby(col)["scene"].agg(lambda s: s.value_counts().index[0])
        label[[ids[k] for k in mode.index]] = mode.to_numpy().astype(np.int64)
    label -= label.min()
    g = otgnet.OpenTemporalGraph(
        src,
        dst,
        df["t"].to_numpy(float),
        label,
        np.zeros((n, 0), np.float32),
        edge_label=df["label"].to_numpy(),
    )
    assert g.num_edges == 1500

    otgnet.save_graph(g, tmp_path / "graph")
    g2 = otgnet.load_graph(tmp_path / "graph")
    assert np.array_equal(g2.src, g.src) and np.array_equal(g2.edge_label, g.edge_label)
    data = g2.to_temporal_data()
    assert data.num_events == 1500 and int(data.y.sum()) == int(df["label"].sum())

    finder = otgnet.TemporalNeighborFinder(g.src, g.dst, g.t, n)
    nb = finder.before(g.src[-50:], g.t[-50:], 5)
    assert (
        nb.times[nb.mask] < torch.from_numpy(g.t[-50:]).unsqueeze(1).expand(-1, 5)[nb.mask]
    ).all()

    k = g.num_classes
    s, d = torch.from_numpy(g.src[:200]), torch.from_numpy(g.dst[:200])
    t, e = torch.from_numpy(g.t[:200]), torch.arange(200)
    y = torch.from_numpy(g.node_label)
    for model in (
        otgnet.OTGNet(torch.zeros(n, 0), k, otgnet.OTGNetConfig(emb_dim=16, hidden=16)),
        otgnet.TGNClassifier(torch.zeros(n, 0), k, otgnet.TGNConfig(memory_dim=16, time_dim=4)),
    ):
        out = model(s, d, t, e, finder, y)
        loss = torch.nn.functional.cross_entropy(out.logits_src, y[s])
        loss.backward()
        assert torch.isfinite(loss)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
