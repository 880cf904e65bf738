"""The class-incremental task protocol (paper Sec. 3; official ``utils/data_processing.py``).

- The task of an event is ``max(label_src, label_dst) // n_class`` (``blurry``: its running
  maximum). The stream is cut at the first event whose task is ``>= n_task``. An event between a
  new-class node and an old-class node belongs to the *new* task: these heterophilous events are
  what the information bottleneck is for.
- Nodes are split 80 / 10 / 10 into train / val / test, per task (the task of a node is its class's
  task), with a seeded generator (default seed 2020, the official one).
- Train events touch no val/test node; val (test) events touch a val (test) node. Only *inductive*
  nodes are scored: test nodes, which never appear in a train event (the official code also drops
  test nodes that share an event with a val node: ``strict_inductive=True``).
- Evaluation neighbour lists never contain val/test nodes (:meth:`TaskSplit.eval_neighbor_mask`).

Deviation (documented in the README): the official code re-samples the node split independently
in every task, so a node seen as a test node in task k can be a train node in task k+1 (its label is
then trained on before task k is re-evaluated). Here a node's split is drawn once, in its own task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otgnet.data.graph import OpenTemporalGraph

__all__ = ["TEST", "TRAIN", "UNUSED", "VAL", "ProtocolConfig", "TaskSplit", "make_tasks"]

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1


@dataclass(frozen=True)
class ProtocolConfig:
    """``n_task`` tasks of ``n_class`` classes each; ``train_frac`` of each task's nodes train, then
    ``val_frac_of_rest`` of the rest val, the remainder test.

    ``strict_inductive=True`` scores, like the official code, only test (val) nodes that appear in
    no val (test) event of their task; by default every test node of the task is scored (none of
    them appears in a training event either way)."""

    n_task: int
    n_class: int
    blurry: bool = False
    seed: int = 2020
    train_frac: float = 0.8
    val_frac_of_rest: float = 0.5
    strict_inductive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n_task, int) or self.n_task < 1:
            raise ValueError(f"n_task must be an integer >= 1, got {self.n_task!r}")
        if not isinstance(self.n_class, int) or self.n_class < 1:
            raise ValueError(f"n_class must be an integer >= 1, got {self.n_class!r}")
        if not 0.0 < self.train_frac < 1.0:
            raise ValueError(f"train_frac must lie in (0, 1), got {self.train_frac}")
        if not 0.0 < self.val_frac_of_rest < 1.0:
            raise ValueError(f"val_frac_of_rest must lie in (0, 1), got {self.val_frac_of_rest}")

    @property
    def num_classes(self) -> int:
        return self.n_task * self.n_class


@dataclass(frozen=True, eq=False)
class TaskSplit:
    """Per-task event and node sets. Event index arrays are sorted (time order)."""

    config: ProtocolConfig
    edge_task: np.ndarray  # (E,) task of each event, -1 = cut from the stream
    node_split: np.ndarray  # (N,) TRAIN / VAL / TEST / UNUSED
    node_task: np.ndarray  # (N,) task of the node's class, -1 if unused
    task_edges: tuple[np.ndarray, ...]
    train_edges: tuple[np.ndarray, ...]
    val_edges: tuple[np.ndarray, ...]
    test_edges: tuple[np.ndarray, ...]
    val_nodes: tuple[
        np.ndarray, ...
    ]  # inductive val nodes of each task (scored for early stopping)
    test_nodes: tuple[np.ndarray, ...]  # inductive test nodes of each task (scored)

    @property
    def n_task(self) -> int:
        return self.config.n_task

    def classes_seen(self, task: int) -> int:
        """Number of classes known after task ``task`` (class-incremental head width)."""
        return (task + 1) * self.config.n_class

    def edges_upto(self, task: int) -> np.ndarray:
        """All kept events of tasks ``0..task`` in time order."""
        return np.flatnonzero((self.edge_task >= 0) & (self.edge_task <= task))

    def train_edges_upto(self, task: int) -> np.ndarray:
        return np.sort(np.concatenate(self.train_edges[: task + 1]))

    def eval_neighbor_mask(self) -> np.ndarray:
        """(N,) bool: nodes that evaluation neighbour lists must never return (all val/test nodes)."""
        return (self.node_split == VAL) | (self.node_split == TEST)

    def visible_labels(self, graph: OpenTemporalGraph, task: int) -> np.ndarray:
        """Labels a learner may use after seeing tasks ``0..task``: train nodes of those tasks keep
        their class, every other node gets ``-1``. Never reads a val/test node's label."""
        out = np.full(graph.num_nodes, -1, dtype=np.int64)
        keep = (self.node_split == TRAIN) & (self.node_task >= 0) & (self.node_task <= task)
        out[keep] = graph.node_label[keep]
        return out


def _edge_tasks(graph: OpenTemporalGraph, cfg: ProtocolConfig) -> np.ndarray:
    ls, ld = graph.label_src, graph.label_dst
    if ((ls < 0) | (ld < 0)).any():
        e = int(np.flatnonzero((ls < 0) | (ld < 0))[0])
        raise ValueError(
            "the class-incremental protocol needs a class for every node: event "
            f"{e} ({graph.src[e]} -> {graph.dst[e]}) touches an unlabelled node (label -1). "
            "Attach node labels (e.g. read_jodie_csv(..., node_labels=...)) or drop those events."
        )
    task = np.maximum(ls, ld) // cfg.n_class
    if cfg.blurry:
        task = np.maximum.accumulate(task) if task.size else task
    over = np.flatnonzero(task >= cfg.n_task)
    if over.size:
        task = task.copy()
        task[over[0] :] = -1
    return task.astype(np.int64)


def make_tasks(graph: OpenTemporalGraph, config: ProtocolConfig) -> TaskSplit:
    """Cut ``graph`` into ``config.n_task`` class-incremental tasks (see the module docstring)."""
    if not isinstance(config, ProtocolConfig):
        raise TypeError(f"config must be a ProtocolConfig, got {type(config).__name__}")
    edge_task = _edge_tasks(graph, config)
    kept = edge_task >= 0
    n = graph.num_nodes
    present = np.zeros(n, dtype=bool)
    present[graph.src[kept]] = True
    present[graph.dst[kept]] = True
    node_task = np.full(n, -1, dtype=np.int64)
    node_task[present] = graph.node_label[present] // config.n_class
    node_split = np.full(n, UNUSED, dtype=np.int64)
    for k in range(config.n_task):
        nodes = np.flatnonzero(node_task == k)  # sorted, so the split only depends on the seed
        if nodes.size == 0:
            raise ValueError(
                f"task {k} has no nodes: the stream holds no event of classes "
                f"{k * config.n_class}..{(k + 1) * config.n_class - 1} before the cut "
                f"(n_task={config.n_task}, n_class={config.n_class})"
            )
        rng = np.random.default_rng([config.seed, k])
        perm = rng.permutation(nodes)
        n_train = int(config.train_frac * len(perm))
        n_val = int(config.val_frac_of_rest * (len(perm) - n_train))
        node_split[perm[:n_train]] = TRAIN
        node_split[perm[n_train : n_train + n_val]] = VAL
        node_split[perm[n_train + n_val :]] = TEST
    ss, sd = node_split[graph.src], node_split[graph.dst]
    task_edges, train_e, val_e, test_e, val_n, test_n = [], [], [], [], [], []
    for k in range(config.n_task):
        in_k = edge_task == k
        tr = np.flatnonzero(in_k & (ss == TRAIN) & (sd == TRAIN))
        va = np.flatnonzero(in_k & ((ss == VAL) | (sd == VAL)))
        te = np.flatnonzero(in_k & ((ss == TEST) | (sd == TEST)))
        task_edges.append(np.flatnonzero(in_k))
        train_e.append(tr)
        val_e.append(va)
        test_e.append(te)

        def nodes_of(idx: np.ndarray) -> np.ndarray:
            return np.unique(np.concatenate([graph.src[idx], graph.dst[idx]]))

        tr_nodes, va_nodes, te_nodes = nodes_of(tr), nodes_of(va), nodes_of(te)
        own = node_task == k
        ind_val = va_nodes[(node_split[va_nodes] == VAL) & own[va_nodes]]
        ind_test = te_nodes[(node_split[te_nodes] == TEST) & own[te_nodes]]
        ind_val = np.setdiff1d(ind_val, tr_nodes)
        ind_test = np.setdiff1d(ind_test, tr_nodes)
        if config.strict_inductive:
            ind_val, ind_test = np.setdiff1d(ind_val, te_nodes), np.setdiff1d(ind_test, va_nodes)
        val_n.append(ind_val)
        test_n.append(ind_test)
    return TaskSplit(
        config,
        edge_task,
        node_split,
        node_task,
        tuple(task_edges),
        tuple(train_e),
        tuple(val_e),
        tuple(test_e),
        tuple(val_n),
        tuple(test_n),
    )
