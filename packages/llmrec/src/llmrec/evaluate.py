"""Evaluation protocols (§4.1.3, §4.3.2, §4.4.2): sampled and full ranking, per domain, on the
Same/Mix/Diff subsets, on cold items and on zero-shot domains.

A recommender here is anything with ``user_vectors(hist) -> [E, d]`` and
``item_vectors() -> [N+1, d]`` (scores are inner products): :class:`llmrec.model.LLMRec` and
:class:`llmrec.sasrec.SASRec` both are.

* ``sampled``: the positive against fixed negatives from its domain (:mod:`llmrec.negatives`),
  padded slots masked;
* ``full``: the positive against every other item of its domain (``scope="domain"``) or of the
  whole catalogue (``scope="all"``), the scorer's catalogue cache computed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from .metrics import metric_table, rank_of_positive
from .mixing import Examples, history_subsets
from .preprocess import RecData

__all__ = ["Recommender", "evaluate", "full_ranks", "groups_for", "sampled_ranks"]


class Recommender(Protocol):
    def user_vectors(self, hist: np.ndarray) -> torch.Tensor: ...

    def item_vectors(self) -> torch.Tensor: ...


def sampled_ranks(
    users: torch.Tensor,
    items: torch.Tensor,
    targets: np.ndarray,
    negatives: np.ndarray,
    ties: str = "pessimistic",
) -> torch.Tensor:
    """Ranks against sampled negatives (0 = padding, masked)."""
    t = torch.as_tensor(targets, device=items.device)
    n = torch.as_tensor(negatives, device=items.device)
    pos = (users * items[t]).sum(1)
    neg = torch.einsum("ed,end->en", users, items[n])
    return rank_of_positive(pos.float().cpu(), neg.float().cpu(), (n > 0).cpu(), ties)


def full_ranks(
    users: torch.Tensor,
    items: torch.Tensor,
    targets: np.ndarray,
    item_domain: np.ndarray,
    scope: str = "domain",
    ties: str = "pessimistic",
    chunk: int = 512,
) -> torch.Tensor:
    """Ranks against every other item (of the target's domain, or of the catalogue)."""
    if scope not in ("domain", "all"):
        raise ValueError(f"scope must be 'domain' or 'all', got {scope!r}")
    dom = torch.as_tensor(item_domain, device=items.device)
    out = []
    for s in range(0, len(targets), chunk):
        t = torch.as_tensor(targets[s : s + chunk], device=items.device)
        sc = users[s : s + chunk] @ items.T  # [c, N+1]
        valid = torch.ones_like(sc, dtype=torch.bool)
        valid[:, 0] = False
        valid[torch.arange(len(t)), t] = False
        if scope == "domain":
            valid &= dom[None, :] == dom[t][:, None]
        pos = sc[torch.arange(len(t)), t]
        out.append(rank_of_positive(pos.float().cpu(), sc.float().cpu(), valid.cpu(), ties))
    return torch.cat(out) if out else torch.zeros(0)


def groups_for(
    data: RecData,
    ex: Examples,
    *,
    mixed_hist: np.ndarray | None = None,
    cold_max_count: int = 0,
) -> dict[str, np.ndarray]:
    """Boolean masks: ``overall``, ``domain=<name>``, ``same``/``mix``/``diff`` (from the user-mixed
    histories ``mixed_hist``, default ``ex.hist``), ``cold`` (target seen at most
    ``cold_max_count`` times in training) and ``warm``."""
    groups = {"overall": np.ones(len(ex), dtype=bool)}
    td = data.item_domain[ex.targets]
    for i, name in enumerate(data.domains):
        groups[f"domain={name}"] = td == i
    h = ex if mixed_hist is None else Examples(ex.users, ex.targets, mixed_hist)
    groups.update(history_subsets(data, h))
    counts = data.train_counts()[ex.targets]
    groups["cold"] = counts <= cold_max_count
    groups["warm"] = ~groups["cold"]
    return groups


def evaluate(
    model: Recommender,
    data: RecData,
    ex: Examples,
    *,
    protocol: str = "sampled",
    negatives: np.ndarray | None = None,
    scope: str = "domain",
    ks: Iterable[int] = (1, 10),
    groups: Mapping[str, np.ndarray] | None = None,
    ties: str = "pessimistic",
    item_vectors: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``ex`` for every group (default :func:`groups_for`).

    Returns ``{"protocol", "ranks", "groups": {name: {"recall@1", ..., "n"}}}``; groups with no
    example are left out. ``item_vectors`` reuses a catalogue cache computed by the caller.
    """
    if protocol not in ("sampled", "full"):
        raise ValueError(f"protocol must be 'sampled' or 'full', got {protocol!r}")
    if protocol == "sampled":
        if negatives is None:
            raise ValueError("protocol='sampled' needs negatives (see sample_eval_negatives)")
        if len(negatives) != len(ex):
            raise ValueError(f"{len(negatives)} negative rows for {len(ex)} examples")
    items = model.item_vectors() if item_vectors is None else item_vectors
    users = model.user_vectors(ex.hist).to(items.device)
    if protocol == "sampled":
        ranks = sampled_ranks(users, items, ex.targets, negatives, ties)
    else:
        ranks = full_ranks(users, items, ex.targets, data.item_domain, scope, ties)
    groups = groups_for(data, ex) if groups is None else groups
    table = {}
    for name, m in groups.items():
        m = np.asarray(m, dtype=bool)
        if m.any():
            table[name] = metric_table(ranks[torch.as_tensor(m)], ks)
    return {"protocol": protocol, "scope": scope, "ranks": ranks, "groups": table}
