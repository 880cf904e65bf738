import json

import numpy as np
import pandas as pd
import pytest
import torch
from otgnet.data import (
    OpenTemporalGraph,
    load_graph,
    read_jodie_csv,
    read_otgnet_csv,
    read_tgn_npy,
    save_graph,
    write_otgnet_csv,
)


def small_graph():
    return OpenTemporalGraph(
        src=[0, 1, 2, 0],
        dst=[1, 2, 3, 3],
        t=[1.0, 2.0, 2.0, 5.0],
        node_label=[0, 0, 1, 2],
        x=np.arange(8, dtype=np.float32).reshape(4, 2),
        label_names=("a", "b", "c"),
    )


def test_graph_validation_errors():
    with pytest.raises(ValueError, match="time order"):
        OpenTemporalGraph([0, 1], [1, 0], [2.0, 1.0], [0, 1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        OpenTemporalGraph([0, 5], [1, 0], [1.0, 2.0], [0, 1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="x must have shape"):
        OpenTemporalGraph([0], [1], [1.0], [0, 1], np.zeros((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        OpenTemporalGraph([0], [1], [np.nan], [0, 1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="equal length"):
        OpenTemporalGraph([0, 1], [1], [1.0], [0, 1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match=">= -1"):
        OpenTemporalGraph([0], [1], [1.0], [0, -2], np.zeros((2, 1)))


def test_temporal_data_roundtrip():
    g = small_graph()
    d = g.to_temporal_data()
    assert d.num_events == 4
    assert torch.equal(d.label_src, torch.tensor([0, 0, 1, 0]))
    assert torch.equal(d.label_dst, torch.tensor([0, 1, 2, 2]))
    g2 = OpenTemporalGraph.from_temporal_data(d)
    assert np.array_equal(g2.src, g.src) and np.array_equal(g2.node_label, g.node_label)
    assert np.allclose(g2.x, g.x)
    assert g.heterophily() == pytest.approx(3 / 4)


def test_otgnet_csv_roundtrip(tmp_path):
    g = small_graph()
    write_otgnet_csv(g, tmp_path, "toy")
    df = pd.read_csv(tmp_path / "toy.csv")
    assert list(df.columns) == [
        "u",
        "i",
        "label_u",
        "label_name_u",
        "label_i",
        "label_name_i",
        "ts",
        "idx",
    ]
    assert df.u.min() == 1  # 1-based on disk
    assert np.load(tmp_path / "toy_node.npy").shape == (5, 2)  # padding row 0
    g2 = read_otgnet_csv(tmp_path / "toy.csv")
    assert np.array_equal(g2.src, g.src) and np.array_equal(g2.dst, g.dst)
    assert np.array_equal(g2.node_label, g.node_label)
    assert np.allclose(g2.x, g.x)
    assert g2.label_names == ("a", "b", "c")


def test_otgnet_csv_hand_written_fixture(tmp_path):
    # the official column order; unsorted times get sorted; node 4 never appears -> label -1
    (tmp_path / "d.csv").write_text(
        "u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n"
        "1,2,0,cats,1,dogs,10,1\n"
        "2,3,1,dogs,1,dogs,5,2\n"
    )
    np.save(tmp_path / "d_node.npy", np.ones((5, 3), np.float32))
    g = read_otgnet_csv(tmp_path / "d.csv")
    assert g.num_nodes == 4
    assert list(g.t) == [5.0, 10.0]
    assert list(g.src) == [1, 0] and list(g.dst) == [2, 1]
    assert list(g.node_label) == [0, 1, 1, -1]
    assert g.label_names == ("cats", "dogs")


@pytest.mark.parametrize(
    "body, match",
    [
        ("u,i,ts\n1,2,3\n", "missing columns"),
        ("u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n0,2,0,a,0,a,1,1\n", "1-based"),
        (
            "u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n1,2,0,a,0,a,1,1\n1,2,1,b,0,a,2,2\n",
            "static",
        ),
        ("u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n1,9,0,a,0,a,1,1\n", "rows"),
        ("u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n1,x,0,a,0,a,1,1\n", "integer"),
    ],
)
def test_otgnet_csv_bad_input(tmp_path, body, match):
    (tmp_path / "d.csv").write_text(body)
    np.save(tmp_path / "d_node.npy", np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=match):
        read_otgnet_csv(tmp_path / "d.csv")


def test_otgnet_missing_and_corrupt_npy(tmp_path):
    (tmp_path / "d.csv").write_text(
        "u,i,label_u,label_name_u,label_i,label_name_i,ts,idx\n1,2,0,a,0,a,1,1\n"
    )
    with pytest.raises(ValueError, match="no such file"):
        read_otgnet_csv(tmp_path / "d.csv")
    (tmp_path / "d_node.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="npy"):
        read_otgnet_csv(tmp_path / "d.csv")


def test_jodie_csv_fixture(tmp_path):
    p = tmp_path / "wiki.csv"
    p.write_text(
        "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
        "0,0,0.0,0,0.1,0.2\n"
        "1,0,3.0,1,0.3,0.4\n"
        "0,1,7.0,0,0.5,0.6\n"
    )
    g = read_jodie_csv(p)
    assert g.num_nodes == 4  # 2 users + 2 items
    assert list(g.src) == [0, 1, 0] and list(g.dst) == [2, 2, 3]  # items shifted by #users
    assert list(g.edge_label) == [0, 1, 0]
    assert np.allclose(g.edge_attr, [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    assert (g.node_label == -1).all()
    g2 = read_jodie_csv(p, node_labels=[0, 1, 2, 2])
    assert list(g2.node_label) == [0, 1, 2, 2]
    with pytest.raises(ValueError, match="shape"):
        read_jodie_csv(p, node_labels=[0, 1])
    bad = tmp_path / "bad.csv"
    bad.write_text("h\n0,1\n")
    with pytest.raises(ValueError, match="at least 4 columns"):
        read_jodie_csv(bad)


def test_tgn_npy_fixture(tmp_path):
    pd.DataFrame(
        {
            "u": [1, 2, 1],
            "i": [3, 3, 4],
            "ts": [0.0, 1.0, 2.0],
            "label": [0, 0, 1],
            "idx": [1, 2, 3],
        }
    ).to_csv(tmp_path / "ml_toy.csv")  # with the unnamed index column, as TGN writes it
    np.save(tmp_path / "ml_toy.npy", np.arange(8, dtype=np.float32).reshape(4, 2))
    np.save(tmp_path / "ml_toy_node.npy", np.zeros((5, 3), np.float32))
    g = read_tgn_npy(tmp_path, "toy")
    assert g.num_nodes == 4
    assert list(g.src) == [0, 1, 0] and list(g.dst) == [2, 2, 3]
    assert np.allclose(g.edge_attr, [[2, 3], [4, 5], [6, 7]])  # rows by idx, padding row 0
    assert list(g.edge_label) == [0, 0, 1]
    np.save(tmp_path / "ml_toy.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="edge index"):
        read_tgn_npy(tmp_path, "toy")
    with pytest.raises(ValueError, match="no such file"):
        read_tgn_npy(tmp_path, "other")


def test_parquet_roundtrip_and_corruption(tmp_path):
    g = OpenTemporalGraph(
        [0, 1],
        [1, 2],
        [1.0, 2.0],
        [0, 1, 1],
        np.ones((3, 2)),
        edge_attr=np.eye(2),
        edge_label=[1, 0],
    )
    save_graph(g, tmp_path / "g")
    g2 = load_graph(tmp_path / "g")
    for a in ("src", "dst", "t", "node_label", "x", "edge_attr", "edge_label"):
        assert np.array_equal(getattr(g2, a), getattr(g, a)), a
    with pytest.raises(ValueError, match="not a prepared graph"):
        load_graph(tmp_path)
    (tmp_path / "g" / "events.parquet").write_bytes(b"PAR1 corrupted")
    with pytest.raises(ValueError, match="parquet"):
        load_graph(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    meta["num_edges"] = 5
    save_graph(g, tmp_path / "h")
    (tmp_path / "h" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="disagree"):
        load_graph(tmp_path / "h")
