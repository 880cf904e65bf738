"""A DLRM-style CTR model written for ``torch.func`` (G-Meta Sec. 3: the meta-learned DLRM).

The model holds only the *dense* part (bottom MLP, pairwise dot interaction, top MLP); embedding
rows come in as an argument. That split is what hybrid parallelism needs: the dense parameters
are replicated on every rank (data parallel), the embedding table is row-sharded (model parallel,
:mod:`gmeta.embedding`), and the forward is a pure function of ``(dense params, embedding rows,
inputs)`` so :func:`torch.func.functional_call`, :func:`torch.func.grad` and
:func:`torch.func.vmap` compose for batched MAML inner loops.

Forward for ``N`` examples with ``F`` sparse fields of dimension ``D`` and ``Dd`` dense features::

    z     = bottom_mlp(x)                         [N, D]
    V     = [z, e_1, ..., e_F]                    [N, F+1, D]
    inter = upper triangle of V V^T (no diagonal) [N, (F+1)F/2]
    logit = top_mlp([z, inter])                   [N]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DLRM", "DLRMConfig"]


@dataclass(frozen=True)
class DLRMConfig:
    """Shape of the dense part of the DLRM.

    ``num_fields`` sparse features (one id each) of width ``embedding_dim``; ``num_dense``
    continuous features; hidden widths of the bottom MLP (its output is ``embedding_dim``) and of
    the top MLP (its output is one logit).
    """

    num_fields: int
    embedding_dim: int
    num_dense: int
    bottom: tuple[int, ...] = (32,)
    top: tuple[int, ...] = (32,)

    def __post_init__(self) -> None:
        for name in ("num_fields", "embedding_dim", "num_dense"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"DLRMConfig.{name} must be a positive int, got {v!r}")
        for name in ("bottom", "top"):
            v = tuple(getattr(self, name))
            if any(not isinstance(h, int) or h < 1 for h in v):
                raise ValueError(f"DLRMConfig.{name} must hold positive ints, got {v!r}")
            object.__setattr__(self, name, v)


def _mlp(sizes: list[int], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """The dense part of a DLRM (bottom MLP, dot interaction, top MLP); see the module docstring.

    ``forward(dense_x [..., N, Dd], emb [..., N, F, D]) -> logits [..., N]``. Call it through
    ``torch.func.functional_call(model, params, (dense_x, emb))`` to run it on adapted params.
    """

    def __init__(self, cfg: DLRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.bottom = _mlp([cfg.num_dense, *cfg.bottom, d], last_act=True)
        n_vec = cfg.num_fields + 1
        rows, cols = torch.triu_indices(n_vec, n_vec, offset=1)
        self.register_buffer("_tri_rows", rows, persistent=False)
        self.register_buffer("_tri_cols", cols, persistent=False)
        n_inter = n_vec * (n_vec - 1) // 2
        self.top = _mlp([d + n_inter, *cfg.top, 1], last_act=False)

    def forward(self, dense_x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.bottom(dense_x)  # [N, D]
        v = torch.cat([z.unsqueeze(-2), emb], dim=-2)  # [N, F+1, D]
        gram = v @ v.transpose(-1, -2)  # [N, F+1, F+1]
        inter = gram[..., self._tri_rows, self._tri_cols]
        return self.top(torch.cat([z, inter], dim=-1)).squeeze(-1)

    def dense_params(self) -> dict[str, torch.Tensor]:
        """The trainable dense parameters by name (the replicated, data-parallel part)."""
        return {k: v for k, v in self.named_parameters()}
