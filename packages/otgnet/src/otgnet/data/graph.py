"""The open temporal graph: a time-ordered edge stream with static node classes (paper Sec. 3).

Node ids are 0-based here (the official processed files are 1-based with a padding row 0; the
loaders in :mod:`otgnet.data.formats` convert). A node label of ``-1`` means "unlabelled".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["OpenTemporalGraph"]


def _as(a, dtype, name: str) -> np.ndarray:
    try:
        return np.array(a, dtype=dtype, copy=True, order="C")  # owned and writable
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert to {np.dtype(dtype).name}: {e}") from None


@dataclass(frozen=True, eq=False)
class OpenTemporalGraph:
    """An edge stream ``(src[e], dst[e], t[e])`` in time order over ``num_nodes`` nodes.

    Args:
        src, dst: endpoint ids in ``[0, num_nodes)``, shape ``(E,)``.
        t: timestamps, non-decreasing, finite, shape ``(E,)`` (stored as float64).
        node_label: class of each node (``-1`` = unlabelled), shape ``(N,)``.
        x: node features, shape ``(N, F)`` (``F`` may be 0).
        edge_attr: optional edge features ``(E, Fe)``.
        edge_label: optional per-event labels (JODIE/TGN state labels), shape ``(E,)``.
        label_names: optional class names, indexed by label.
    """

    src: np.ndarray
    dst: np.ndarray
    t: np.ndarray
    node_label: np.ndarray
    x: np.ndarray
    edge_attr: np.ndarray | None = None
    edge_label: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = _as(self.src, np.int64, "src")
        dst = _as(self.dst, np.int64, "dst")
        t = _as(self.t, np.float64, "t")
        lab = _as(self.node_label, np.int64, "node_label")
        x = _as(self.x, np.float32, "x")
        if src.ndim != 1 or dst.shape != src.shape or t.shape != src.shape:
            raise ValueError(
                f"src, dst and t must be 1-D of equal length, got {src.shape}, {dst.shape}, {t.shape}"
            )
        if lab.ndim != 1:
            raise ValueError(f"node_label must be 1-D, got shape {lab.shape}")
        n = lab.shape[0]
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"x must have shape (num_nodes={n}, F), got {x.shape}")
        if src.size:
            lo, hi = min(src.min(), dst.min()), max(src.max(), dst.max())
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"edge endpoints must lie in [0, {n}) (num_nodes from node_label), found {lo}..{hi}"
                )
            if not np.isfinite(t).all():
                raise ValueError("t holds non-finite timestamps")
            bad = np.flatnonzero(np.diff(t) < 0)
            if bad.size:
                raise ValueError(
                    f"edges must be in time order: t[{bad[0] + 1}]={t[bad[0] + 1]} < t[{bad[0]}]={t[bad[0]]}"
                )
        if (lab < -1).any():
            raise ValueError("node_label must be >= -1 (-1 = unlabelled)")
        if not np.isfinite(x).all():
            raise ValueError("x holds non-finite values")
        object.__setattr__(self, "src", src)
        object.__setattr__(self, "dst", dst)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "node_label", lab)
        object.__setattr__(self, "x", x)
        if self.edge_attr is not None:
            ea = _as(self.edge_attr, np.float32, "edge_attr")
            if ea.ndim == 1:
                ea = ea[:, None]
            if ea.ndim != 2 or ea.shape[0] != src.shape[0]:
                raise ValueError(
                    f"edge_attr must have shape (E={src.shape[0]}, Fe), got {ea.shape}"
                )
            if not np.isfinite(ea).all():
                raise ValueError("edge_attr holds non-finite values")
            object.__setattr__(self, "edge_attr", ea)
        if self.edge_label is not None:
            el = _as(self.edge_label, np.int64, "edge_label")
            if el.shape != src.shape:
                raise ValueError(f"edge_label must have shape {src.shape}, got {el.shape}")
            object.__setattr__(self, "edge_label", el)
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(s) for s in self.label_names))

    # ------------------------------------------------------------------ sizes and views
    @property
    def num_nodes(self) -> int:
        return int(self.node_label.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.node_label.max()) + 1 if self.num_nodes else 0

    @property
    def label_src(self) -> np.ndarray:
        return self.node_label[self.src]

    @property
    def label_dst(self) -> np.ndarray:
        return self.node_label[self.dst]

    def heterophily(self) -> float:
        """Fraction of events whose endpoints have different (known) classes."""
        ls, ld = self.label_src, self.label_dst
        known = (ls >= 0) & (ld >= 0)
        return float((ls[known] != ld[known]).mean()) if known.any() else float("nan")

    def subset_edges(self, idx: np.ndarray) -> OpenTemporalGraph:
        """The same nodes with only the events ``idx`` (kept in time order)."""
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        return OpenTemporalGraph(
            self.src[idx],
            self.dst[idx],
            self.t[idx],
            self.node_label,
            self.x,
            None if self.edge_attr is None else self.edge_attr[idx],
            None if self.edge_label is None else self.edge_label[idx],
            self.label_names,
            dict(self.meta),
        )

    # ------------------------------------------------------------------ PyG interop
    def to_temporal_data(self):
        """A :class:`torch_geometric.data.TemporalData` with ``label_src``/``label_dst`` per event,
        ``msg`` = edge features (zeros of width 1 when there are none), and the node table as
        ``node_x`` / ``node_label`` attributes."""
        from torch_geometric.data import TemporalData

        msg = self.edge_attr if self.edge_attr is not None else np.zeros((self.num_edges, 1))
        tt = lambda a, dtype=None: torch.tensor(np.asarray(a), dtype=dtype)  # noqa: E731 (a copy)
        kw = {}
        if self.edge_label is not None:
            kw["y"] = tt(self.edge_label)
        return TemporalData(
            src=tt(self.src),
            dst=tt(self.dst),
            t=tt(self.t),
            msg=tt(msg, torch.float32),
            label_src=tt(self.label_src),
            label_dst=tt(self.label_dst),
            node_x=tt(self.x),
            node_label=tt(self.node_label),
            **kw,
        )

    @classmethod
    def from_temporal_data(
        cls, data, x: np.ndarray | torch.Tensor | None = None, node_label=None
    ) -> OpenTemporalGraph:
        """Build from a ``TemporalData`` (``src``, ``dst``, ``t``, optional ``msg``/``y``); node
        features and labels come from the arguments or the ``node_x``/``node_label`` attributes."""
        keys = set(data.keys())
        for k in ("src", "dst", "t"):
            if k not in keys:
                raise ValueError(f"TemporalData has no {k!r}")
        if x is None:
            x = data.node_x if "node_x" in keys else None
        if node_label is None:
            node_label = data.node_label if "node_label" in keys else None
        n = int(max(int(data.src.max()), int(data.dst.max())) + 1) if data.src.numel() else 0
        if node_label is None:
            node_label = np.full(n if x is None else len(x), -1)
        if x is None:
            x = np.zeros((len(node_label), 0), dtype=np.float32)
        as_np = lambda v: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)  # noqa: E731
        return cls(
            as_np(data.src),
            as_np(data.dst),
            as_np(data.t),
            as_np(node_label),
            as_np(x),
            as_np(data.msg) if "msg" in keys else None,
            as_np(data.y) if "y" in keys else None,
        )
