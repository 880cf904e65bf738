"""Step difficulty (Sec. 3.4, Eq. 8) under the pre-distillation student.

``d_k = - sum_{j in step k} w^_j log P(r_j | r_<j, x; theta_s)`` with ``w^ = softmax(w)`` inside
step k (``normalize="softmax"``, the paper). Because ``w^`` sums to one inside a step, ``d_k`` is a
weighted *mean* token NLL. ``temperature`` sharpens the softmax (``softmax(w / T)``; the paper's
is T = 1, under which ``exp(w)`` lies in (1, e) and the weighting is mild by construction).
``normalize="uniform"`` gives the unweighted mean NLL (the "w.o.-sig-dif" ablation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kpod.encoding import Encoded

__all__ = ["NORMALIZE", "step_difficulty", "token_nll"]

NORMALIZE = ("softmax", "uniform", "weighted_mean")


@torch.no_grad()
def token_nll(
    model: torch.nn.Module,
    encoded: list[Encoded],
    *,
    pad_id: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Per-token NLL ``-log P(t_j | t_<j)`` for every token of every sequence (index 0 gets 0)."""
    model.eval()
    out: list[np.ndarray] = []
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s : s + batch_size]
        T = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        att = torch.zeros(len(chunk), T, dtype=torch.long)
        for i, e in enumerate(chunk):
            ids[i, : len(e.input_ids)] = torch.as_tensor(e.input_ids)
            att[i, : len(e.input_ids)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
        for i, e in enumerate(chunk):
            out.append(np.concatenate([[0.0], nll[i, : len(e.input_ids) - 1]]).astype(np.float32))
    return out


def step_difficulty(
    model: torch.nn.Module,
    encoded: list[Encoded],
    weights: list[np.ndarray] | None,
    *,
    normalize: str = "softmax",
    temperature: float = 1.0,
    pad_id: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
    nll: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Eq. 8: the difficulty of every step of every example (``float64`` arrays of ``n_steps``).

    ``weights[i]`` are the rationale-token weights of example i (token order, as from
    :func:`kpod.weighting.token_weights`); ``None`` requires ``normalize="uniform"``.
    ``nll`` may pass precomputed :func:`token_nll` values.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    if weights is None and normalize != "uniform":
        raise ValueError("weights are needed unless normalize='uniform'")
    if weights is not None and len(weights) != len(encoded):
        raise ValueError(f"{len(weights)} weight arrays for {len(encoded)} examples")
    if nll is None:
        nll = token_nll(model, encoded, pad_id=pad_id, batch_size=batch_size, device=device)
    out = []
    for i, e in enumerate(encoded):
        rt = e.rationale_tokens
        seg = e.segment[rt]
        tok_nll = nll[i][rt].astype(np.float64)
        if weights is not None and len(weights[i]) != len(rt):
            raise ValueError(f"example {e.id}: {len(weights[i])} weights for {len(rt)} tokens")
        w = None if weights is None else np.asarray(weights[i], dtype=np.float64)
        d = np.zeros(e.n_steps)
        for k in range(e.n_steps):
            sel = seg == k
            if not sel.any():
                continue
            if normalize == "uniform":
                a = np.full(sel.sum(), 1.0 / sel.sum())
            elif normalize == "softmax":
                z = w[sel] / temperature
                a = np.exp(z - z.max())
                a /= a.sum()
            else:
                a = w[sel] / max(w[sel].sum(), 1e-12)
            d[k] = float((a * tok_nll[sel]).sum())
        out.append(d)
    return out


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation with average ranks for ties."""
    import pandas as pd

    xs, ys = pd.Series(np.asarray(x, float)), pd.Series(np.asarray(y, float))
    return float(xs.rank().corr(ys.rank()))
