"""Training and evaluation examples under the three mixing strategies of §4.3.1.

* ``"user"`` (the paper's SPIAO): one chronological sequence per user across all domains; the
  history of an example is the user's previous items, whatever their domain.
* ``"domain"`` (S²PIAO): one sequence per user *and* domain, all pooled into one training set;
  the history holds only previous items of the target's domain.
* ``"single"``: as ``"domain"`` but only the examples whose target is in one domain (one model
  per domain).

Leave-one-out (§4.1.1): the last item of each user's merged sequence is the test target, the
second last the validation target; **every prefix** of the rest is a training example (by default
a prefix needs at least one history item under the example's mixing strategy, ``min_history=1``;
``min_history=0`` also keeps examples with an empty history, encoded from the special token alone,
so that a per-domain model learns what to do for a user new to a domain). Histories keep the most
recent ``history_len`` items.

Evaluation examples are the same users and targets under every strategy (only the history
differs), so results are comparable. Rule for an empty evaluation history (a "Diff" user under
``"domain"``/``"single"`` mixing): it is kept, and the user is encoded from the special token alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .preprocess import RecData

__all__ = ["MIXES", "Examples", "build_examples", "history_subsets"]

MIXES = ("user", "domain", "single")


@dataclass
class Examples:
    """Examples as arrays: ``users`` [E], ``targets`` [E] (item indices), ``hist`` [E, H]
    (item indices, most recent last, left-padded with 0)."""

    users: np.ndarray
    targets: np.ndarray
    hist: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, mask_or_idx: np.ndarray) -> Examples:
        return Examples(self.users[mask_or_idx], self.targets[mask_or_idx], self.hist[mask_or_idx])

    def history_lengths(self) -> np.ndarray:
        return (self.hist > 0).sum(1)


def build_examples(
    data: RecData,
    split: str,
    *,
    mix: str = "user",
    domain: str | None = None,
    history_len: int = 10,
    exclude_domains: Sequence[str] = (),
    users: np.ndarray | None = None,
    min_history: int = 1,
) -> Examples:
    """Examples of ``split`` (``"train"``, ``"valid"``, ``"test"``) under ``mix``.

    ``exclude_domains`` (zero-shot domains): for the training split, examples whose target is in
    one of them are dropped and their items are removed from training histories.
    ``users`` restricts to those user indices (e.g. a validation sample).
    ``min_history`` (training split only): the fewest history items an example needs (1, the
    paper's prefixes; 0 keeps empty histories too, every position from the first one on).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    if mix == "single" and domain is None:
        raise ValueError("mix='single' needs domain=")
    if mix != "single" and domain is not None:
        raise ValueError("domain= is only meaningful with mix='single'")
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    if min_history not in (0, 1):
        raise ValueError(f"min_history must be 0 or 1, got {min_history}")
    dom_filter = data.domain_index(domain) if domain is not None else None
    excl = {data.domain_index(x) for x in exclude_domains}
    idom = data.item_domain
    U, T, H = [], [], []
    user_ids = range(data.n_users) if users is None else [int(u) for u in users]
    for u in user_ids:
        s = data.seqs[u]
        L = len(s)
        if split == "train":
            positions = range(L - 2)  # the history-length rule is applied below
        elif split == "valid":
            positions = (L - 2,)
        else:
            positions = (L - 1,)
        for t in positions:
            tgt = int(s[t])
            td = int(idom[tgt])
            if dom_filter is not None and td != dom_filter:
                continue
            if split == "train" and td in excl:
                continue
            h = s[:t]
            if mix != "user":
                h = h[idom[h] == td]
            if split == "train" and excl:
                h = h[~np.isin(idom[h], list(excl))]
            if split == "train" and len(h) < min_history:
                continue
            U.append(u)
            T.append(tgt)
            H.append(h[-history_len:])
    hist = np.zeros((len(T), history_len), dtype=np.int64)
    for i, h in enumerate(H):
        if len(h):
            hist[i, history_len - len(h) :] = h
    return Examples(
        np.asarray(U, dtype=np.int64).reshape(-1), np.asarray(T, dtype=np.int64).reshape(-1), hist
    )


def history_subsets(data: RecData, ex: Examples) -> dict[str, np.ndarray]:
    """Boolean masks of §4.3.2 over ``ex`` (use user-mixed histories): ``same`` (every history
    item in the target's domain), ``mix`` (some), ``diff`` (none)."""
    td = data.item_domain[ex.targets][:, None]
    present = ex.hist > 0
    in_dom = (data.item_domain[ex.hist] == td) & present
    n_in, n = in_dom.sum(1), present.sum(1)
    return {
        "same": (n > 0) & (n_in == n),
        "mix": (n_in > 0) & (n_in < n),
        "diff": n_in == 0,
    }
