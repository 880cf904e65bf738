"""Readers and writers for the formats temporal-graph users have on disk.

- OTGNet's processed format (official ``process_raw_data/**``): ``<name>.csv`` with columns
  ``u,i,label_u,label_name_u,label_i,label_name_i,ts,idx`` and ``<name>_node.npy`` (1-based node
  ids, row 0 of the feature matrix is padding).
- JODIE csv (Kumar et al. 2019; ``wikipedia.csv``, ``reddit.csv``, ``mooc.csv``): a header line, then
  ``user,item,timestamp,state_label,f1,...,fk``. Users and items are separate id spaces; items are
  shifted after the users. Labels are per-event binary *state* labels (kept as ``edge_label``), so
  the class-incremental protocol needs node labels passed in (``node_labels=``).
- TGN / DyGLib processed npy (``ml_<name>.csv`` with ``u,i,ts,label,idx``, ``ml_<name>.npy`` edge
  features and ``ml_<name>_node.npy`` node features, both with a padding row 0, 1-based ids).
- A parquet cache of an :class:`~otgnet.data.graph.OpenTemporalGraph` (``events.parquet``,
  ``nodes.parquet``, ``meta.json``), written atomically.

All readers convert to 0-based ids and raise ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from otgnet.data.graph import OpenTemporalGraph
from shared import atomic_write_bytes, atomic_write_text

__all__ = [
    "load_graph",
    "read_jodie_csv",
    "read_otgnet_csv",
    "read_tgn_npy",
    "save_graph",
    "write_otgnet_csv",
]

OTGNET_COLUMNS = ("u", "i", "label_u", "label_name_u", "label_i", "label_name_i", "ts", "idx")


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV file: {e}") from None


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array: {e}") from None
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D feature matrix, got shape {a.shape}")
    return a


def _int_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    try:
        v = pd.to_numeric(df[col], errors="raise")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: column {col!r} must be integer: {e}") from None
    if v.isna().any():
        raise ValueError(
            f"{path}: column {col!r} has missing values (row {int(v.isna().argmax())})"
        )
    a = v.to_numpy()
    if not np.all(a == np.round(a)):
        raise ValueError(f"{path}: column {col!r} must be integer")
    return a.astype(np.int64)


def _float_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    try:
        v = pd.to_numeric(df[col], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: column {col!r} must be numeric: {e}") from None
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: column {col!r} has missing or non-finite values")
    return v


def _node_labels_from_events(
    n: int, src: np.ndarray, dst: np.ndarray, ls: np.ndarray, ld: np.ndarray, path: Path
) -> np.ndarray:
    nodes = np.concatenate([src, dst])
    labs = np.concatenate([ls, ld])
    out = np.full(n, -1, dtype=np.int64)
    out[nodes] = labs
    clash = out[nodes] != labs
    if clash.any():
        v = int(nodes[clash][0])
        seen = sorted(set(labs[nodes == v].tolist()))
        raise ValueError(
            f"{path}: node labels must be static, but node {v + 1} (1-based) has labels {seen}"
        )
    if (labs < 0).any():
        raise ValueError(f"{path}: labels must be >= 0")
    return out


def _attach_labels(n: int, node_labels, path: Path) -> np.ndarray:
    if node_labels is None:
        return np.full(n, -1, dtype=np.int64)
    lab = np.asarray(node_labels)
    if lab.shape != (n,):
        raise ValueError(
            f"{path}: node_labels must have shape ({n},) (one per node), got {lab.shape}"
        )
    return lab.astype(np.int64)


def _sorted(src, dst, t, *rest):
    order = np.argsort(t, kind="stable")
    if np.all(order == np.arange(len(order))):
        return (src, dst, t, *rest)
    return tuple(None if a is None else a[order] for a in (src, dst, t, *rest))


# ---------------------------------------------------------------------------------- OTGNet


def read_otgnet_csv(csv_path: str | Path, node_npy: str | Path | None = None) -> OpenTemporalGraph:
    """Read OTGNet's processed ``<name>.csv`` (+ ``<name>_node.npy``, found beside it by default)."""
    path = Path(csv_path)
    df = _read_csv(path)
    missing = [c for c in OTGNET_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: not an OTGNet processed file: missing columns {missing} "
            f"(expected {', '.join(OTGNET_COLUMNS)})"
        )
    u, i = _int_column(df, "u", path), _int_column(df, "i", path)
    if len(u) and min(u.min(), i.min()) < 1:
        raise ValueError(
            f"{path}: node ids are 1-based in this format; found id {min(u.min(), i.min())}"
        )
    ls, ld = _int_column(df, "label_u", path), _int_column(df, "label_i", path)
    ts = _float_column(df, "ts", path)
    npy = Path(node_npy) if node_npy is not None else path.with_name(f"{path.stem}_node.npy")
    feats = _read_npy(npy)
    max_id = int(max(u.max(), i.max())) if len(u) else 0
    if feats.shape[0] < max_id + 1:
        raise ValueError(
            f"{npy}: {feats.shape[0]} rows, but {path} uses node id {max_id} "
            "(row 0 is padding, so it needs max id + 1 rows)"
        )
    n = feats.shape[0] - 1
    src, dst = u - 1, i - 1
    names: dict[int, str] = {}
    for lab_col, name_col in (("label_u", "label_name_u"), ("label_i", "label_name_i")):
        for lab, nm in zip(
            df[lab_col].to_numpy(), df[name_col].astype(str).to_numpy(), strict=True
        ):
            names.setdefault(int(lab), nm)
    labels = _node_labels_from_events(n, src, dst, ls, ld, path)
    src, dst, ts = _sorted(src, dst, ts)
    label_names = None
    if names:
        label_names = tuple(names.get(c, str(c)) for c in range(max(names) + 1))
    return OpenTemporalGraph(
        src,
        dst,
        ts,
        labels,
        feats[1:],
        label_names=label_names,
        meta={"source": "otgnet", "path": path.name},
    )


def write_otgnet_csv(graph: OpenTemporalGraph, directory: str | Path, name: str) -> Path:
    """Write ``graph`` as OTGNet's processed ``<name>.csv`` + ``<name>_node.npy`` (atomic)."""
    if not name or "/" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    out = Path(directory)
    names = graph.label_names or ()
    lname = lambda a: [names[x] if 0 <= x < len(names) else str(x) for x in a.tolist()]  # noqa: E731
    df = pd.DataFrame(
        {
            "u": graph.src + 1,
            "i": graph.dst + 1,
            "label_u": graph.label_src,
            "label_name_u": lname(graph.label_src),
            "label_i": graph.label_dst,
            "label_name_i": lname(graph.label_dst),
            "ts": graph.t,
            "idx": np.arange(1, graph.num_edges + 1),
        }
    )
    atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    feats = np.concatenate([np.zeros((1, graph.x.shape[1]), np.float32), graph.x])
    buf = io.BytesIO()
    np.save(buf, feats)
    atomic_write_bytes(out / f"{name}_node.npy", buf.getvalue())
    return out / f"{name}.csv"


# ---------------------------------------------------------------------------------- JODIE


def read_jodie_csv(path: str | Path, node_labels=None) -> OpenTemporalGraph:
    """Read a JODIE csv (``user,item,timestamp,state_label,features...`` after a header line).

    Node ids: users ``0..U-1``, items ``U..U+I-1``. ``edge_label`` holds the state labels and
    ``edge_attr`` the features. ``node_labels`` (length ``U + I``) attaches static node classes;
    without it every node is unlabelled.
    """
    p = Path(path)
    df = _read_csv(p, header=None, skiprows=1)
    if df.shape[1] < 4:
        raise ValueError(
            f"{p}: a JODIE csv has at least 4 columns (user, item, timestamp, state_label), "
            f"found {df.shape[1]}"
        )
    user, item = _int_column(df, 0, p), _int_column(df, 1, p)
    ts = _float_column(df, 2, p)
    state = _int_column(df, 3, p)
    if len(user) and min(user.min(), item.min()) < 0:
        raise ValueError(f"{p}: user and item ids must be >= 0")
    feats = df.iloc[:, 4:]
    try:
        feats = feats.apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{p}: feature columns must be numeric: {e}") from None
    n_user = int(user.max()) + 1 if len(user) else 0
    n_item = int(item.max()) + 1 if len(item) else 0
    n = n_user + n_item
    src, dst, ts, state, feats = _sorted(user, item + n_user, ts, state, feats)
    return OpenTemporalGraph(
        src,
        dst,
        ts,
        _attach_labels(n, node_labels, p),
        np.zeros((n, 0), np.float32),
        edge_attr=feats if feats.shape[1] else None,
        edge_label=state,
        meta={"source": "jodie", "path": p.name, "num_users": n_user},
    )


# ---------------------------------------------------------------------------------- TGN / DyGLib


def read_tgn_npy(directory: str | Path, name: str, node_labels=None) -> OpenTemporalGraph:
    """Read TGN/DyGLib ``ml_<name>.csv`` + ``ml_<name>.npy`` + ``ml_<name>_node.npy``.

    If the csv also carries OTGNet's ``label_u``/``label_i`` columns they become the node classes;
    otherwise ``node_labels`` (length = number of nodes) does, or every node is unlabelled.
    """
    d = Path(directory)
    csv, enpy, nnpy = d / f"ml_{name}.csv", d / f"ml_{name}.npy", d / f"ml_{name}_node.npy"
    df = _read_csv(csv)
    if df.columns[0].startswith("Unnamed") or df.columns[0] == "":
        df = df.drop(columns=df.columns[0])
    missing = [c for c in ("u", "i", "ts", "label", "idx") if c not in df.columns]
    if missing:
        raise ValueError(f"{csv}: not a TGN/DyGLib ml_ file: missing columns {missing}")
    u, i = _int_column(df, "u", csv), _int_column(df, "i", csv)
    idx = _int_column(df, "idx", csv)
    ts = _float_column(df, "ts", csv)
    state = _int_column(df, "label", csv)
    if len(u) and min(u.min(), i.min()) < 1:
        raise ValueError(
            f"{csv}: node ids are 1-based in this format; found {min(u.min(), i.min())}"
        )
    efeat, nfeat = _read_npy(enpy), _read_npy(nnpy)
    if len(idx) and (idx.min() < 0 or idx.max() >= efeat.shape[0]):
        raise ValueError(
            f"{enpy}: {efeat.shape[0]} rows, but {csv} refers to edge index {idx.max()}"
        )
    max_id = int(max(u.max(), i.max())) if len(u) else 0
    if nfeat.shape[0] < max_id + 1:
        raise ValueError(f"{nnpy}: {nfeat.shape[0]} rows, but {csv} uses node id {max_id}")
    n = nfeat.shape[0] - 1
    src, dst = u - 1, i - 1
    if "label_u" in df.columns and "label_i" in df.columns:
        labels = _node_labels_from_events(
            n, src, dst, _int_column(df, "label_u", csv), _int_column(df, "label_i", csv), csv
        )
    else:
        labels = _attach_labels(n, node_labels, csv)
    ea = efeat[idx].astype(np.float32)
    src, dst, ts, state, ea = _sorted(src, dst, ts, state, ea)
    return OpenTemporalGraph(
        src,
        dst,
        ts,
        labels,
        nfeat[1:],
        edge_attr=ea if ea.shape[1] else None,
        edge_label=state,
        meta={"source": "tgn", "name": name},
    )


# ---------------------------------------------------------------------------------- parquet


def _table_bytes(df: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def save_graph(graph: OpenTemporalGraph, directory: str | Path) -> Path:
    """Write ``events.parquet``, ``nodes.parquet`` and ``meta.json`` into ``directory``
    (each atomically; ``meta.json`` last, so a directory without it is incomplete)."""
    d = Path(directory)
    ev = {"src": graph.src, "dst": graph.dst, "t": graph.t}
    if graph.edge_label is not None:
        ev["edge_label"] = graph.edge_label
    if graph.edge_attr is not None:
        for j in range(graph.edge_attr.shape[1]):
            ev[f"ea_{j}"] = graph.edge_attr[:, j]
    nodes = {"label": graph.node_label}
    for j in range(graph.x.shape[1]):
        nodes[f"x_{j}"] = graph.x[:, j]
    atomic_write_bytes(d / "events.parquet", _table_bytes(pd.DataFrame(ev)))
    atomic_write_bytes(d / "nodes.parquet", _table_bytes(pd.DataFrame(nodes)))
    meta = {
        "format": "otgnet-graph",
        "version": 1,
        "num_nodes": graph.num_nodes,
        "num_edges": graph.num_edges,
        "label_names": list(graph.label_names) if graph.label_names else None,
        "meta": graph.meta,
    }
    atomic_write_text(d / "meta.json", json.dumps(meta, indent=1, default=str))
    return d


def load_graph(directory: str | Path) -> OpenTemporalGraph:
    """Read a directory written by :func:`save_graph`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = Path(directory)
    mp = d / "meta.json"
    if not mp.is_file():
        raise ValueError(
            f"{d}: no meta.json: not a prepared graph (run `python -m otgnet prepare`)"
        )
    try:
        meta = json.loads(mp.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{mp}: corrupt: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != "otgnet-graph":
        raise ValueError(f"{mp}: not an otgnet graph description")
    try:
        ev = pq.read_table(d / "events.parquet").to_pandas()
        nd = pq.read_table(d / "nodes.parquet").to_pandas()
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{d}: cannot read the parquet files: {e}") from None
    if len(ev) != meta.get("num_edges") or len(nd) != meta.get("num_nodes"):
        raise ValueError(
            f"{d}: sizes disagree with meta.json ({len(ev)} events / {len(nd)} nodes vs "
            f"{meta.get('num_edges')} / {meta.get('num_nodes')})"
        )
    ea_cols = sorted((c for c in ev.columns if c.startswith("ea_")), key=lambda c: int(c[3:]))
    x_cols = sorted((c for c in nd.columns if c.startswith("x_")), key=lambda c: int(c[2:]))
    return OpenTemporalGraph(
        ev["src"].to_numpy(),
        ev["dst"].to_numpy(),
        ev["t"].to_numpy(),
        nd["label"].to_numpy(),
        nd[x_cols].to_numpy(dtype=np.float32) if x_cols else np.zeros((len(nd), 0), np.float32),
        edge_attr=ev[ea_cols].to_numpy(dtype=np.float32) if ea_cols else None,
        edge_label=ev["edge_label"].to_numpy() if "edge_label" in ev.columns else None,
        label_names=tuple(meta["label_names"]) if meta.get("label_names") else None,
        meta=meta.get("meta") or {},
    )
