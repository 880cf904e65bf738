"""Named systems, seeds in parallel processes, and the aggregation the bench and demo report.

Systems (all on the same graph and split, per seed):

| name | model | replay |
|---|---|---|
| ``otgnet`` | OTGNet (bottleneck, class-IL head, pseudo-labels) | triads, importance + diversity |
| ``otgnet_no_ib`` | OTGNet without the bottleneck (full messages across classes) | triads |
| ``otgnet_random_triads`` | OTGNet | triads chosen uniformly at random |
| ``otgnet_random_edges`` | OTGNet | uniformly drawn events, as many as triad selection stores |
| ``otgnet_oracle_head`` | OTGNet with the official label-routed ``task_il_oracle`` head | triads |
| ``otgnet_oracle_gate`` | OTGNet whose gate reads every node's true label (official; diagnostic) | triads |
| ``tgn_ft`` | TGN (PyG ``TGNMemory`` + ``TransformerConv``), fine-tuned task after task | none |
| ``tgn_random_replay`` | TGN | uniformly drawn events, as many as triad selection stores |

Seeds run in a ``ProcessPoolExecutor`` with the ``spawn`` start method, each worker capped to one
torch thread (and one BLAS thread), so ``workers`` processes use ``workers`` cores.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from otgnet.data.protocol import ProtocolConfig
from otgnet.data.synthetic import SyntheticConfig

__all__ = ["SYSTEMS", "Job", "aggregate", "run_job", "run_jobs", "system_configs"]

SYSTEMS = (
    "otgnet",
    "otgnet_no_ib",
    "otgnet_random_triads",
    "otgnet_random_edges",
    "otgnet_oracle_head",
    "otgnet_oracle_gate",
    "tgn_ft",
    "tgn_random_replay",
)


@dataclass(frozen=True)
class Job:
    """One run: a system on a synthetic graph (generator seed = ``seed``) with training seed ``seed``."""

    system: str
    seed: int
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    protocol: ProtocolConfig = field(default_factory=lambda: ProtocolConfig(3, 2))
    train: dict = field(default_factory=dict)  # ContinualConfig overrides
    model: dict = field(default_factory=dict)  # OTGNetConfig / TGNConfig overrides
    tag: str = ""

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose from {SYSTEMS}")


def system_configs(system: str, train: dict | None = None, model: dict | None = None):
    """``(ContinualConfig, model config)`` of a named system, with overrides applied."""
    from otgnet.continual import ContinualConfig
    from otgnet.nn.model import OTGNetConfig

    train, model = dict(train or {}), dict(model or {})
    base = {
        "otgnet": ({"model": "otgnet", "replay": "triad"}, {}),
        "otgnet_no_ib": ({"model": "otgnet", "replay": "triad"}, {"use_ib": False}),
        "otgnet_random_triads": ({"model": "otgnet", "replay": "random_triads"}, {}),
        "otgnet_random_edges": ({"model": "otgnet", "replay": "random_edges"}, {}),
        "otgnet_oracle_head": ({"model": "otgnet", "replay": "triad"}, {"head": "task_il_oracle"}),
        "otgnet_oracle_gate": ({"model": "otgnet", "replay": "triad", "gate": "oracle"}, {}),
        "tgn_ft": ({"model": "tgn", "replay": "none"}, {}),
        "tgn_random_replay": ({"model": "tgn", "replay": "random_edges"}, {}),
    }
    if system not in base:
        raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
    tr, md = base[system]
    cc = ContinualConfig(**{**train, **tr})
    if cc.model == "otgnet":
        keys = set(OTGNetConfig.__dataclass_fields__)
        mc = OTGNetConfig(**{k: v for k, v in model.items() if k in keys}, **md)
    else:
        from otgnet.nn.tgn import TGNConfig

        keys = set(TGNConfig.__dataclass_fields__)
        mc = TGNConfig(**{k: v for k, v in model.items() if k in keys and k not in md}, **md)
    return cc, mc


def run_job(job: Job) -> dict:
    """Build the graph and split, train the system, return its measurements (a plain dict)."""
    import torch

    from otgnet.continual import ContinualLearner
    from otgnet.data.protocol import make_tasks
    from otgnet.data.synthetic import make_synthetic

    torch.set_num_threads(1)
    graph, _ = make_synthetic(replace(job.synthetic, seed=job.seed))
    split = make_tasks(graph, job.protocol)
    cc, mc = system_configs(job.system, {**job.train, "seed": job.seed}, job.model)
    learner = ContinualLearner(graph, split, cc, mc)
    res = learner.fit()
    out = res.to_dict()
    out.update(system=job.system, seed=job.seed, tag=job.tag, heterophily=graph.heterophily())
    out["buffer_node_fraction"] = buffer_node_fraction(learner)
    e = learner.buffer.edges
    cross = graph.label_src[e] != graph.label_dst[e]
    out["buffer_cross_class_fraction"] = float(cross.mean()) if len(e) else float("nan")
    return out


def buffer_node_fraction(learner) -> float:
    """Distinct train nodes touched by the replay buffer's events over the train nodes of the tasks
    the buffer covers (all but the last): how much of the past the replay budget spans. NaN
    without replay."""
    from otgnet.data.protocol import TRAIN

    buf, sp, g = learner.buffer, learner.split, learner.graph
    if not len(buf):
        return float("nan")
    e = buf.edges
    touched = np.unique(np.concatenate([g.src[e], g.dst[e]]))
    past = (sp.node_split == TRAIN) & (sp.node_task >= 0) & (sp.node_task < sp.n_task - 1)
    return float(past[touched].sum() / max(1, past.sum()))


def _init_worker() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def run_jobs(
    jobs: Sequence[Job], workers: int = 2, on_done: Callable[[dict], None] | None = None
) -> list[dict]:
    """Run ``jobs`` (in ``workers`` spawned processes; in-process when ``workers == 1``), results
    in the order of ``jobs``. A failing job raises its error here, with the job named."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[dict | None] = [None] * len(jobs)
    if workers == 1:
        for i, j in enumerate(jobs):
            results[i] = run_job(j)
            if on_done:
                on_done(results[i])
        return results  # type: ignore[return-value]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as ex:
        futs = {ex.submit(run_job, j): i for i, j in enumerate(jobs)}
        for f in as_completed(futs):
            i = futs[f]
            try:
                results[i] = f.result()
            except Exception as e:
                for g in futs:
                    g.cancel()
                raise RuntimeError(f"job {jobs[i].system} seed {jobs[i].seed} failed: {e}") from e
            if on_done:
                on_done(results[i])
    return results  # type: ignore[return-value]


def aggregate(results: Sequence[dict]) -> dict[str, dict]:
    """Per (tag, system): mean and std of AP, AF, events/s, and the mean accuracy matrix."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        key = f"{r['tag']}:{r['system']}" if r.get("tag") else r["system"]
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        ap = np.array([r["ap"] for r in rs])
        af = np.array([r["af"] for r in rs])
        eps = np.array([r["events_per_s"] for r in rs])
        gate = [np.nanmean(r["gate_acc"]) for r in rs if r.get("gate_acc")]
        with warnings.catch_warnings():  # the upper triangle is NaN by construction
            warnings.simplefilter("ignore", RuntimeWarning)
            acc = np.nanmean(np.stack([np.asarray(r["acc"], float) for r in rs]), 0)
        out[key] = {
            "n": len(rs),
            "seeds": [r["seed"] for r in rs],
            "ap_mean": float(ap.mean()),
            "ap_std": float(ap.std(ddof=1)) if len(rs) > 1 else 0.0,
            "af_mean": float(af.mean()),
            "af_std": float(af.std(ddof=1)) if len(rs) > 1 else 0.0,
            "ap": ap.tolist(),
            "af": af.tolist(),
            "events_per_s_mean": float(np.nanmean(eps)),
            "gate_acc_mean": float(np.mean(gate)) if gate else float("nan"),
            "acc_mean": acc.tolist(),
        }
    return out


def job_dict(job: Job) -> dict:
    return asdict(job)
