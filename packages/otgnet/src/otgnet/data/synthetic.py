"""A synthetic open temporal graph whose knobs exercise each part of OTGNet (dossier B9.3).

Node ``v`` of class ``c`` in community ``q`` gets features
``x_v = R [u_c + B a_q + e_r ; a_q + e_a ; e_n]`` with ``R`` a random orthogonal mixing:

- class prototypes ``u_c`` (``class_scale``), new tasks' prototypes correlated with the previous
  task's (``prototype_overlap``: the forgetting pressure, since new classes sit near old ones);
- class-agnostic community offsets ``a_q`` (``comm_scale``), shared by all classes, which also bias
  the class subspace through ``B`` (``comm_bias``). Neighbours of *any* class in the same community
  reveal ``a_q`` and help remove that bias: the class-agnostic knowledge. Neighbours of another
  class also carry their own ``u_{c'}``: the class-relevant knowledge the bottleneck should strip.

Events run in time order, task by task; a source ``v`` (a node of the current task that has
arrived) links, with probability ``triadic_closure``, to a same-class neighbour of a same-class
neighbour it is not yet linked to (closing a triangle; when there is none it falls back to a
homophilous link); otherwise, with probability ``heterophily``, to a node of an *older* class
(another class of the same task in task 0; see ``hetero_partner``); otherwise to a node of its own
class. Every one of the three picks is in ``v``'s community with probability ``same_community``
(when it has a candidate there): triangles close more often between similar nodes, as in real
graphs, so a closed triad's ends share a community more often than an open triad's (the structure
the pattern loss learns).

``hetero_partner`` chooses the heterophilous partner:

- ``"older"`` (default; dossier B9.3 and the paper's picture of heterophilous events: a new-class
  node linking to an old-class node): a node of an older task (the other class of task 0 in task 0).
  A cross-class neighbour's class then tells a model "new vs old class", the very distinction
  class-incremental evaluation scores, so cross-class messages carry useful class information;
- ``"uniform"``: the partner's class is drawn uniformly among every *other* class present so far
  (the source's own task included), then a node of it (community preference as above). A
  cross-class neighbour's class is then (up to "not my class") unrelated to the centre's, while its
  class-specific features still pollute a plain message-passing model: the setting in which the
  bottleneck's premise can be tested. (In task 0 with two classes both rules pick the other class.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from otgnet.data.graph import OpenTemporalGraph

__all__ = ["CLOSURE", "HETERO", "HETERO_PARTNERS", "HOMO", "SyntheticConfig", "make_synthetic"]

HOMO, HETERO, CLOSURE = 0, 1, 2
HETERO_PARTNERS = ("older", "uniform")


@dataclass(frozen=True)
class SyntheticConfig:
    n_task: int = 3
    n_class: int = 2
    nodes_per_class: int = 40
    n_communities: int = 4
    d_class: int = 8
    d_comm: int = 8
    d_noise: int = 4
    class_scale: float = 1.0
    comm_scale: float = 2.0
    comm_bias: float = 1.0
    class_noise: float = 1.0
    comm_noise: float = 1.0
    heterophily: float = 0.3
    hetero_partner: str = "older"
    triadic_closure: float = 0.3
    same_community: float = 0.8
    prototype_overlap: float = 0.5
    events_per_node: float = 10.0
    task_duration: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_task", "n_class", "nodes_per_class", "n_communities", "d_class", "d_comm"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.d_noise, int) or self.d_noise < 0:
            raise ValueError(f"d_noise must be an integer >= 0, got {self.d_noise!r}")
        if self.n_class * self.n_task < 2:
            raise ValueError("need at least two classes in total")
        if self.nodes_per_class < 3:
            raise ValueError("nodes_per_class must be >= 3 (train/val/test split)")
        for name in ("heterophily", "triadic_closure", "same_community"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a probability, got {v}")
        if not 0.0 <= self.prototype_overlap < 1.0:
            raise ValueError(f"prototype_overlap must lie in [0, 1), got {self.prototype_overlap}")
        for name in ("class_scale", "comm_scale", "comm_bias", "class_noise", "comm_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.events_per_node <= 0:
            raise ValueError(f"events_per_node must be > 0, got {self.events_per_node}")
        if not isinstance(self.task_duration, int) or self.task_duration < 2:
            raise ValueError(f"task_duration must be an integer >= 2, got {self.task_duration!r}")
        if self.hetero_partner not in HETERO_PARTNERS:
            raise ValueError(
                f"hetero_partner must be one of {HETERO_PARTNERS}, got {self.hetero_partner!r}"
            )
        if self.n_task == 1 and self.n_class == 1:
            raise ValueError("need at least two classes")


def _pick(rng: np.random.Generator, pool: np.ndarray, comm: np.ndarray, q: int, p_same: float):
    """A node of ``pool``, from community ``q`` with probability ``p_same`` (when it has one)."""
    if pool.size == 0:
        return None
    same = pool[comm[pool] == q]
    if same.size and rng.random() < p_same:
        return int(rng.choice(same))
    other = pool[comm[pool] != q]
    return int(rng.choice(other if other.size else same))


def make_synthetic(config: SyntheticConfig | None = None) -> tuple[OpenTemporalGraph, dict]:
    """Generate ``(graph, latents)``. ``latents`` holds the ground truth: ``kind`` of each event
    (HOMO / HETERO / CLOSURE), ``closure_attempt`` (the closure coin came up),
    ``closure_had_same`` / ``closure_had_other`` (a closure event had a candidate in / outside the
    source's community), ``community``,
    ``arrival``, ``prototypes``, ``communities`` and the config."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    n_cls = cfg.n_task * cfg.n_class
    protos = np.zeros((n_cls, cfg.d_class))
    for c in range(n_cls):
        fresh = rng.normal(0.0, cfg.class_scale, cfg.d_class)
        if c >= cfg.n_class:
            rho = cfg.prototype_overlap
            protos[c] = rho * protos[c - cfg.n_class] + np.sqrt(1 - rho**2) * fresh
        else:
            protos[c] = fresh
    comms = rng.normal(0.0, cfg.comm_scale, (cfg.n_communities, cfg.d_comm))
    bias = rng.normal(0.0, cfg.comm_bias / np.sqrt(cfg.d_comm), (cfg.d_comm, cfg.d_class))

    n = n_cls * cfg.nodes_per_class
    label = np.repeat(np.arange(n_cls), cfg.nodes_per_class)
    perm = rng.permutation(n)  # node ids carry no class information
    label = label[perm]
    comm = rng.integers(0, cfg.n_communities, n)
    task_of = label // cfg.n_class
    dur = cfg.task_duration
    arrival = (task_of * dur + rng.integers(0, max(1, dur // 2), n)).astype(np.int64)

    d = cfg.d_class + cfg.d_comm + cfg.d_noise
    latent = np.concatenate(
        [
            protos[label] + comms[comm] @ bias + rng.normal(0, cfg.class_noise, (n, cfg.d_class)),
            comms[comm] + rng.normal(0, cfg.comm_noise, (n, cfg.d_comm)),
            rng.normal(0, 1.0, (n, cfg.d_noise)),
        ],
        axis=1,
    )
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (latent @ rot.T).astype(np.float32)

    adj: list[set[int]] = [set() for _ in range(n)]
    src, dst, ts, kind, attempt, cl_same, cl_other = [], [], [], [], [], [], []
    by_class = [np.flatnonzero(label == c) for c in range(n_cls)]
    for k in range(cfg.n_task):
        nodes_k = np.flatnonzero(task_of == k)
        order = nodes_k[np.argsort(arrival[nodes_k], kind="stable")]
        arr_sorted = arrival[order]
        seen = (k + 1) * cfg.n_class  # classes present by the end of task k
        n_ev = round(cfg.events_per_node * nodes_k.size / 2)
        times = np.sort(rng.integers(k * dur, (k + 1) * dur, n_ev))
        for tau in times:
            avail = order[: max(1, int(np.searchsorted(arr_sorted, tau, side="right")))]
            v = int(rng.choice(avail))
            c, q = int(label[v]), int(comm[v])
            target, kd = None, HOMO
            has_same = has_other = False
            coin_tc = rng.random() < cfg.triadic_closure
            if coin_tc:
                cand = {
                    w
                    for u in adj[v]
                    if label[u] == c
                    for w in adj[u]
                    if w != v and label[w] == c and w not in adj[v]
                }
                if cand:
                    cand_arr = np.fromiter(sorted(cand), np.int64, len(cand))
                    in_q = comm[cand_arr] == q
                    has_same, has_other = bool(in_q.any()), bool((~in_q).any())
                    target = _pick(rng, cand_arr, comm, q, cfg.same_community)
                    kd = CLOSURE
            if target is None and not coin_tc and rng.random() < cfg.heterophily:
                if cfg.hetero_partner == "uniform":
                    # class uniform over every other class present so far, own task included
                    others = [
                        j for j in range(seen) if j != c and (arrival[by_class[j]] <= tau).any()
                    ]
                    cj = others[int(rng.integers(len(others)))] if others else None
                    pool = by_class[cj] if cj is not None else by_class[c][:0]
                    pool = pool[arrival[pool] <= tau]
                elif k > 0:
                    pool = np.flatnonzero(task_of < k)
                else:
                    pool = nodes_k[(label[nodes_k] != c) & (arrival[nodes_k] <= tau)]
                target = _pick(rng, pool, comm, q, cfg.same_community)
                kd = HETERO
            if target is None:
                same = by_class[c]
                pool = same[(same != v) & (arrival[same] <= max(tau, arrival[v]))]
                if pool.size == 0:
                    pool = same[same != v]
                target, kd = _pick(rng, pool, comm, q, cfg.same_community), HOMO
            adj[v].add(target)
            adj[target].add(v)
            src.append(v)
            dst.append(target)
            ts.append(int(tau))
            kind.append(kd)
            attempt.append(coin_tc)
            cl_same.append(has_same and kd == CLOSURE)
            cl_other.append(has_other and kd == CLOSURE)
    graph = OpenTemporalGraph(
        np.array(src),
        np.array(dst),
        np.array(ts, dtype=np.float64),
        label,
        x,
        label_names=tuple(f"class{c}" for c in range(n_cls)),
        meta={"source": "synthetic", "config": asdict(cfg)},
    )
    latents = {
        "kind": np.array(kind),
        "closure_attempt": np.array(attempt),
        "closure_had_same": np.array(cl_same, bool),
        "closure_had_other": np.array(cl_other, bool),
        "community": comm,
        "arrival": arrival,
        "prototypes": protos,
        "communities": comms,
        "config": cfg,
    }
    return graph, latents
