"""The class-incremental training loop (official ``train.py``), for OTGNet and the baselines.

For each task ``i``: train on its train events (plus the replay buffer, in every batch) for up to
``epochs`` epochs with early stopping on validation accuracy; evaluate every task seen so far (row
``i`` of the accuracy matrix); then, if replay is on, add task ``i``'s replay set to the buffer.

Evaluation replays the stream of tasks ``0..i`` from a freshly initialised memory, with
neighbour lists that never contain val/test nodes, and scores each val/test node by its
prediction at its *last* event (node-level accuracy, dossier B5), over all classes seen so far
(class-incremental). The memory a learner ends with is the only state it keeps across tasks: no
per-task memory snapshot is restored for old tasks (the official code restores one: dossier B3).

Labels a learner sees: train nodes of the tasks seen so far (:meth:`TaskSplit.visible_labels`).
The bottleneck's gate compares those labels, and k-NN pseudo-labels (majority of labelled
neighbours over the whole stream so far) for nodes without one. A test node's label is read only
to score it (and by the explicitly named ``head="task_il_oracle"``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from otgnet.data.graph import OpenTemporalGraph
from otgnet.data.protocol import TaskSplit
from otgnet.metrics import average_accuracy, average_forgetting
from otgnet.nn.model import OTGNet, OTGNetConfig
from otgnet.nn.neighbors import TemporalNeighborFinder
from otgnet.replay.buffer import ReplayBuffer, pattern_loss
from otgnet.replay.selection import greedy_select, head_gradient_scores, node_importance
from otgnet.replay.triads import mine_triads

__all__ = [
    "MODELS",
    "REPLAYS",
    "ContinualConfig",
    "ContinualLearner",
    "RunResult",
    "pseudo_labels",
]

MODELS = ("otgnet", "tgn")
REPLAYS = ("none", "triad", "random_triads", "random_edges")
GATES = ("visible", "oracle")


@dataclass(frozen=True)
class ContinualConfig:
    """Training protocol. Official values: epochs 500 / patience 100 (far beyond a CPU test),
    batch 300, lr 1e-4 (Reddit) / 5e-3 (Yelp) / 1e-3 (Taobao), 10 triads per class and type,
    1000 candidates, gamma 20, pattern weight 0.5, replay ratio 0.5."""

    model: str = "otgnet"
    replay: str = "triad"
    epochs: int = 10
    patience: int = 3
    batch_size: int = 50
    lr: float = 5e-3
    mem_size: int = 10  # triads per class per type (closed, open)
    n_candidates: int = 1000
    gamma: float = 20.0
    radius: float | None = None
    pattern_rho: float = 0.5
    replay_ratio: float = 0.5
    influence_sign: str = "aligned"
    val_on: str = "seen"
    pseudo_labels: bool = True
    gate: str = "visible"  # "oracle": the official behaviour, true labels of every node
    restore_triad_memory: bool = True
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.replay not in REPLAYS:
            raise ValueError(f"replay must be one of {REPLAYS}, got {self.replay!r}")
        for name in ("epochs", "batch_size", "mem_size", "n_candidates"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.replay_ratio <= 1.0:
            raise ValueError(f"replay_ratio must lie in [0, 1], got {self.replay_ratio}")
        if self.gamma < 0 or self.pattern_rho < 0:
            raise ValueError("gamma and pattern_rho must be >= 0")
        if self.radius is not None and self.radius < 0:
            raise ValueError("radius must be >= 0")
        if self.influence_sign not in ("aligned", "official"):
            raise ValueError(
                f"influence_sign must be 'aligned' or 'official', got {self.influence_sign!r}"
            )
        if self.val_on not in ("seen", "current"):
            raise ValueError(f"val_on must be 'seen' or 'current', got {self.val_on!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r}: {e}") from None


@dataclass
class RunResult:
    """What a continual run measured. ``acc`` is the (T, T) test accuracy matrix in %."""

    acc: np.ndarray
    val: np.ndarray
    ap: float
    af: float
    af_standard: float
    train_events: int = 0
    train_seconds: float = 0.0
    epochs: list[int] = field(default_factory=list)
    buffer_edges: list[int] = field(default_factory=list)
    n_test_nodes: list[int] = field(default_factory=list)
    gate_acc: list[float] = field(default_factory=list)  # see ContinualLearner.gate_accuracy

    @property
    def events_per_s(self) -> float:
        return self.train_events / self.train_seconds if self.train_seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["acc"] = self.acc.tolist()
        d["val"] = self.val.tolist()
        d["events_per_s"] = self.events_per_s
        return d


def _chunks(idx: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for s in range(0, len(idx), size):
        yield idx[s : s + size]


def pseudo_labels(
    visible: np.ndarray, finder: TemporalNeighborFinder, nodes: np.ndarray, k: int
) -> np.ndarray:
    """Majority label among the up-to-``k`` most recent *labelled* neighbours (over the finder's
    whole stream) for each of ``nodes``; ``-1`` when none is labelled (official ``pseudo_gen.py``,
    ``pmethod='knn'``, here over visible labels only). Ties go to the smallest label."""
    out = np.full(len(visible), -1, dtype=np.int64)
    if len(nodes) == 0:
        return out
    nb = finder.all_time(nodes, k)
    lab = torch.from_numpy(visible)[nb.nodes]
    ok = nb.mask & (lab >= 0)
    c = int(max(visible.max(), 0)) + 1
    votes = torch.zeros(len(nodes), c, dtype=torch.long)
    votes.scatter_add_(1, lab.clamp_min(0), ok.long())
    has = votes.sum(1) > 0
    out[np.asarray(nodes)[has.numpy()]] = votes.argmax(1)[has].numpy()
    return out


class ContinualLearner:
    """Runs the protocol of the module docstring for one model and replay strategy."""

    def __init__(
        self,
        graph: OpenTemporalGraph,
        split: TaskSplit,
        config: ContinualConfig | None = None,
        model_config=None,
    ) -> None:
        self.graph, self.split = graph, split
        self.config = cfg = config or ContinualConfig()
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        n_cls = split.config.num_classes
        if graph.num_classes > n_cls and (graph.node_label[split.node_task >= 0] >= n_cls).any():
            raise ValueError("split and graph disagree on the number of classes")
        x = torch.from_numpy(graph.x)
        ea = None if graph.edge_attr is None else torch.from_numpy(graph.edge_attr)
        if cfg.model == "otgnet":
            mc = model_config or OTGNetConfig()
            if not isinstance(mc, OTGNetConfig):
                raise TypeError("model 'otgnet' needs an OTGNetConfig")
            self.model = OTGNet(x, n_cls, mc, edge_attr=ea, seed=cfg.seed)
        else:
            from otgnet.nn.tgn import TGNClassifier, TGNConfig

            mc = model_config or TGNConfig()
            if not isinstance(mc, TGNConfig):
                raise TypeError("model 'tgn' needs a TGNConfig")
            self.model = TGNClassifier(x, n_cls, mc, edge_attr=ea, seed=cfg.seed)
        self.model_config = mc
        self.model.to(self.device)
        self.buffer = ReplayBuffer()
        self.rng = np.random.default_rng(cfg.seed)
        self.labels = torch.from_numpy(graph.node_label)
        self._src = torch.from_numpy(graph.src)
        self._dst = torch.from_numpy(graph.dst)
        self._t = torch.from_numpy(graph.t)
        self.task = -1

    # ------------------------------------------------------------------ helpers
    @property
    def head(self) -> str:
        return getattr(self.model_config, "head", "class_il")

    def _batch(self, idx: np.ndarray):
        i = torch.from_numpy(idx)
        return self._src[i], self._dst[i], self._t[i], i

    def _train_finder(self, task: int) -> TemporalNeighborFinder:
        e = self.split.train_edges_upto(task)
        g = self.graph
        return TemporalNeighborFinder(g.src[e], g.dst[e], g.t[e], g.num_nodes, eid=e)

    def _eval_finder(self, task: int) -> TemporalNeighborFinder:
        e = self.split.edges_upto(task)
        g = self.graph
        return TemporalNeighborFinder(
            g.src[e], g.dst[e], g.t[e], g.num_nodes, eid=e, exclude=self.split.eval_neighbor_mask()
        )

    def gate_labels(self, task: int, finder: TemporalNeighborFinder) -> torch.Tensor:
        """Labels the bottleneck gate may compare after task ``task``: visible labels, plus k-NN
        pseudo-labels for the nodes without one. Never reads a val/test node's label, except with
        the explicitly named ``gate="oracle"`` (the official code's behaviour: the true label of
        every node of the tasks seen so far, test nodes included; a diagnostic, not a learner)."""
        if self.config.gate == "oracle":
            nt = self.split.node_task
            seen = (nt >= 0) & (nt <= task)
            return torch.from_numpy(np.where(seen, self.graph.node_label, -1).astype(np.int64))
        vis = self.split.visible_labels(self.graph, task)
        if self.config.pseudo_labels and self.config.model == "otgnet":
            unknown = np.flatnonzero((vis < 0) & (self.split.node_task >= 0))
            pl = pseudo_labels(vis, finder, unknown, self.model_config.knn)
            vis = np.where(vis >= 0, vis, pl)
        return torch.from_numpy(vis)

    def gate_accuracy(self, task: int | None = None) -> list[float]:
        """Diagnostic (reads test labels only to score): % of each seen task's test nodes whose
        gate label after task ``task`` (a k-NN pseudo-label: test nodes have no visible label)
        is their true class. A wrong one makes the bottleneck strip the node's same-class
        neighbours and pass its other-class ones in full. Empty for models without a gate."""
        task = self.task if task is None else task
        if self.config.model != "otgnet" or task < 0:
            return []
        gl = self.gate_labels(task, self._eval_finder(task)).numpy()
        out = []
        for nodes in self.split.test_nodes[: task + 1]:
            ok = gl[nodes] == self.graph.node_label[nodes]
            out.append(100.0 * float(ok.mean()) if len(nodes) else float("nan"))
        return out

    def _predict(self, logits: torch.Tensor, nodes: torch.Tensor, n_seen: int) -> torch.Tensor:
        lg = logits[:, :n_seen]
        if self.head == "task_il_oracle":
            c = self.split.config.n_class
            task = self.labels[nodes.cpu()].to(lg.device) // c  # the oracle: the true label's task
            cols = task.unsqueeze(1) * c + torch.arange(c, device=lg.device)
            return torch.gather(lg, 1, cols.clamp_max(n_seen - 1)).argmax(1) + task * c
        return lg.argmax(1)

    def _loss(self, logits: torch.Tensor, nodes: torch.Tensor, n_seen: int) -> torch.Tensor:
        y = self.labels[nodes.cpu()].to(logits.device)
        if self.head == "task_il_oracle":
            c = self.split.config.n_class
            task = y // c
            cols = task.unsqueeze(1) * c + torch.arange(c, device=logits.device)
            return F.cross_entropy(torch.gather(logits, 1, cols), y - task * c)
        return F.cross_entropy(logits[:, :n_seen], y)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, task: int | None = None) -> torch.Tensor:
        """(N,) predicted class of every node at its last event in the stream of tasks
        ``0..task`` (``-1`` for nodes without an event), from a fresh memory."""
        task = self.task if task is None else task
        if task < 0:
            raise RuntimeError("nothing trained yet: call fit() (or train_task) first")
        if task >= self.split.n_task:
            raise ValueError(f"task {task} out of range (n_task={self.split.n_task})")
        finder = self._eval_finder(task)
        gl = self.gate_labels(task, finder)
        n_seen = self.split.classes_seen(task)
        m = self.model
        m.eval()
        m.reset_state()
        pred = torch.full((self.graph.num_nodes,), -1, dtype=torch.long)
        for idx in _chunks(self.split.edges_upto(task), self.config.batch_size):
            s, d, t, e = self._batch(idx)
            out = m(s, d, t, e, finder, gl)
            ps = self._predict(out.logits_src, s, n_seen).cpu()
            pd_ = self._predict(out.logits_dst, d, n_seen).cpu()
            nodes = torch.stack([s, d], 1).reshape(-1)
            p = torch.stack([ps, pd_], 1).reshape(-1)
            last = _last_occurrence(nodes)
            pred[nodes[last]] = p[last]
        return pred

    def evaluate(self, task: int | None = None) -> dict[str, np.ndarray]:
        """Node-level accuracy (%) on each seen task's val and test nodes after task ``task``."""
        task = self.task if task is None else task
        pred = self.predict(task)
        res = {}
        for kind, sets in (("val", self.split.val_nodes), ("test", self.split.test_nodes)):
            acc = np.full(task + 1, np.nan)
            for j in range(task + 1):
                nodes = torch.from_numpy(sets[j])
                if len(nodes):
                    acc[j] = 100.0 * float((pred[nodes] == self.labels[nodes]).float().mean())
            res[kind] = acc
        return res

    # ------------------------------------------------------------------ training
    def train_task(self, task: int, progress: Callable | None = None) -> dict:
        """Train task ``task`` (tasks must come in order), evaluate, update the buffer."""
        if task != self.task + 1:
            raise RuntimeError(
                f"tasks must be trained in order: expected task {self.task + 1}, got {task}"
            )
        if task >= self.split.n_task:
            raise ValueError(f"task {task} out of range (n_task={self.split.n_task})")
        cfg, m = self.config, self.model
        finder = self._train_finder(task)
        gl = self.gate_labels(task, finder)
        opt = self.make_optimizer()
        best, best_state, bad, n_ep = -np.inf, None, 0, 0
        events, seconds = 0, 0.0
        for ep in range(cfg.epochs):
            t0 = time.perf_counter()
            n_ev, loss = self.train_epoch(task, ep, finder, gl, opt)
            events += n_ev
            seconds += time.perf_counter() - t0
            n_ep = ep + 1
            ev = self.evaluate_val(task)
            score = float(np.nanmean(ev)) if cfg.val_on == "seen" else float(ev[task])
            if progress is not None:
                progress(task, ep, float(loss), score)
            if score > best:
                best, bad = score, 0
                best_state = copy.deepcopy(m.state_dict())
            else:
                bad += 1
                if bad > cfg.patience:
                    break
        if best_state is not None:
            m.load_state_dict(best_state)
        self.task = task
        info = {"epochs": n_ep, "events": events, "seconds": seconds, "best_val": best}
        if task < self.split.n_task - 1 and cfg.replay != "none":
            info["buffer_added"] = self._update_buffer(task, finder, gl)
        return info

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.main_parameters(), lr=self.config.lr)

    def train_epoch(self, task: int, epoch: int, finder, gate_labels, opt) -> tuple[int, float]:
        """One epoch over task ``task``'s train events (plus the buffer in every batch), from a
        fresh memory. Returns (events processed, last batch loss)."""
        cfg, m = self.config, self.model
        n_seen = self.split.classes_seen(task)
        replay = self.buffer.edges if len(self.buffer) else None
        gl = gate_labels
        events, loss = 0, torch.zeros(())
        m.train()
        m.reset_state()
        for idx in _chunks(self.split.train_edges[task], cfg.batch_size):
            if replay is not None and cfg.restore_triad_memory and self.buffer.snapshot is not None:
                m.memory.restore(torch.from_numpy(self.buffer.nodes), self.buffer.snapshot)
            s, d, t, e = self._batch(idx)
            out = m(s, d, t, e, finder, gl)
            loss = 0.5 * (
                self._loss(out.logits_src, s, n_seen) + self._loss(out.logits_dst, d, n_seen)
            )
            events += len(idx)
            if replay is not None:
                rs, rd, rt, re_ = self._batch(replay)
                r = m(rs, rd, rt, re_, finder, gl, write_memory=False)
                lr_ = 0.5 * (
                    self._loss(r.logits_src, rs, n_seen) + self._loss(r.logits_dst, rd, n_seen)
                )
                loss = (1 - cfg.replay_ratio) * loss + cfg.replay_ratio * lr_
                events += len(replay)
                if cfg.pattern_rho > 0 and (
                    len(self.buffer.pos_pairs) or len(self.buffer.neg_pairs)
                ):
                    view = m.memory.emb.clone()
                    nodes = torch.cat([rs, rd]).to(view.device)
                    vals = torch.cat([r.mem_src, r.mem_dst])
                    last = _last_occurrence(nodes)
                    view = view.index_put((nodes[last],), vals[last])
                    loss = loss + cfg.pattern_rho * pattern_loss(
                        view, self.buffer.pos_pairs, self.buffer.neg_pairs
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m.detach()
            m.ib_step(epoch)
        return events, float(loss.detach())

    def evaluate_val(self, task: int) -> np.ndarray:
        saved = self.task
        self.task = task
        try:
            return self.evaluate(task)["val"]
        finally:
            self.task = saved

    def fit(self, progress: Callable | None = None) -> RunResult:
        """Train every task in order; returns the accuracy matrix and AP/AF."""
        t_n = self.split.n_task
        acc = np.full((t_n, t_n), np.nan)
        val = np.full((t_n, t_n), np.nan)
        events, seconds, epochs, buf = 0, 0.0, [], []
        for k in range(self.task + 1, t_n):
            info = self.train_task(k, progress)
            ev = self.evaluate(k)
            acc[k, : k + 1] = ev["test"]
            val[k, : k + 1] = ev["val"]
            events += info["events"]
            seconds += info["seconds"]
            epochs.append(info["epochs"])
            buf.append(len(self.buffer))
        filled = np.where(np.isnan(acc) & np.tril(np.ones_like(acc, bool)), 0.0, acc)
        return RunResult(
            acc=acc,
            val=val,
            ap=average_accuracy(filled),
            af=average_forgetting(filled),
            af_standard=average_forgetting(filled, include_final=False),
            train_events=events,
            train_seconds=seconds,
            epochs=epochs,
            buffer_edges=buf,
            n_test_nodes=[len(x) for x in self.split.test_nodes],
            gate_acc=self.gate_accuracy() if self.task >= 0 else [],
        )

    # ------------------------------------------------------------------ replay buffer
    @torch.no_grad()
    def _task_pass(self, task: int, finder, gl):
        """One pass over the task's train events from a fresh memory: per-sample head inputs,
        probabilities, labels and nodes (for the influence scores) and the final memory."""
        m, n_seen = self.model, self.split.classes_seen(task)
        m.eval()
        m.reset_state()
        hs, ps, ys, ns = [], [], [], []
        for idx in _chunks(self.split.train_edges[task], self.config.batch_size):
            s, d, t, e = self._batch(idx)
            out = m(s, d, t, e, finder, gl)
            # interleave src/dst per event so "first occurrence" follows the stream
            hs.append(torch.stack([out.hidden_src, out.hidden_dst], 1).flatten(0, 1))
            lg = torch.stack([out.logits_src, out.logits_dst], 1).flatten(0, 1)
            ps.append(torch.softmax(lg[:, :n_seen], 1))
            nodes = torch.stack([s, d], 1).reshape(-1)
            ys.append(self.labels[nodes])
            ns.append(nodes)
        h, p, y, n = (torch.cat(v) for v in (hs, ps, ys, ns))
        return h, p, y.to(p.device), n

    def _update_buffer(self, task: int, finder, gl) -> int:
        """Add task ``task``'s replay set to the buffer; returns the number of events added.

        ``random_edges`` draws uniformly from the task's train events exactly as many events as
        triad selection (importance + diversity, under the same model) stores for this task, so
        the two replays compare at an equal budget of replayed events."""
        cfg = self.config
        sel = self._select_triads(task, finder, gl, randomly=cfg.replay == "random_triads")
        if cfg.replay == "random_edges":
            train_e = self.split.train_edges[task]
            budget = min(len(sel["edges"]), len(train_e))
            pick = self.rng.choice(train_e, budget, replace=False) if budget else train_e[:0]
            self.buffer.add(pick)
            return len(pick)
        if not len(sel["edges"]):
            return 0
        self.buffer.add(
            sel["edges"],
            sel["pos"],
            sel["neg"],
            sel["nodes"] if sel["snapshot"] is not None else None,
            sel["snapshot"],
            n_triads=sel["n_triads"],
        )
        return len(sel["edges"])

    def _select_triads(self, task: int, finder, gl, randomly: bool = False) -> dict:
        """Triads of task ``task`` (per class, ``mem_size`` closed and ``mem_size`` open ones), by
        greedy importance + diversity (Sec. 4.2) or, with ``randomly``, uniformly. Returns their
        distinct events, pattern pairs, nodes and the nodes' memory snapshot."""
        cfg, g, sp = self.config, self.graph, self.split
        c0, c1 = task * sp.config.n_class, (task + 1) * sp.config.n_class
        train_e = sp.train_edges[task]
        mem = self.model.memory.emb if isinstance(self.model, OTGNet) else None
        imp = None
        if not randomly:
            h, p, y, n = self._task_pass(task, finder, gl)
            if self.head == "task_il_oracle":
                h = h.new_zeros(len(h), 1)  # importance not defined over routed heads: uniform
            scores = head_gradient_scores(h, p, y).cpu().numpy()
            imp = node_importance(n.cpu().numpy(), scores, g.num_nodes, cfg.influence_sign)
        elif mem is not None:
            self._task_pass(task, finder, gl)  # the memory the snapshot keeps
        added_edges, pos, neg, tri_nodes, n_tri = [], [], [], [], 0
        ls, ld = g.label_src[train_e], g.label_dst[train_e]
        for c in range(c0, c1):
            e = train_e[(ls == c) & (ld == c)]
            tri = mine_triads(
                g.src[e],
                g.dst[e],
                g.t[e],
                e,
                max_candidates=20 * cfg.n_candidates,
                seed=cfg.seed + c,
            )
            for closed in (True, False):
                sub = tri.take(np.flatnonzero(tri.closed == closed))
                if len(sub) == 0:
                    continue
                if imp is None:
                    sel = self.rng.choice(len(sub), min(cfg.mem_size, len(sub)), replace=False)
                else:
                    importance = imp[sub.nodes].mean(1)
                    if mem is not None:
                        emb = mem[torch.from_numpy(sub.nodes).to(mem.device)].mean(1).cpu().numpy()
                    else:
                        emb = g.x[sub.nodes].mean(1)
                    sel = greedy_select(
                        importance, emb, cfg.mem_size, cfg.gamma, cfg.radius, cfg.n_candidates
                    )
                chosen = sub.take(sel)
                n_tri += len(chosen)
                added_edges.append(chosen.edges.ravel())
                ends = chosen.nodes[:, [0, 2]]
                (pos if closed else neg).append(ends)
                tri_nodes.append(chosen.nodes.ravel())
        empty = np.zeros(0, np.int64)
        edges = np.unique(np.concatenate(added_edges)) if added_edges else empty
        nodes = np.unique(np.concatenate(tri_nodes)) if tri_nodes else empty
        snap = None
        if mem is not None and len(nodes):
            snap = mem[torch.from_numpy(nodes).to(mem.device)].clone()
        return {
            "edges": edges,
            "pos": np.concatenate(pos) if pos else None,
            "neg": np.concatenate(neg) if neg else None,
            "nodes": nodes,
            "snapshot": snap,
            "n_triads": n_tri,
        }


def _last_occurrence(ids: torch.Tensor) -> torch.Tensor:
    from otgnet.nn.memory import _last_occurrence as lo

    return lo(ids)
