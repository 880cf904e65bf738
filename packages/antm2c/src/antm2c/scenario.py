"""Multi-scenario CTR models: one network serving all AntM2C scenes (scene id = task id).

All four share the same *wide* part as :class:`~antm2c.models.DeepFM` (first order + FM
pairwise term over the shared embeddings) and differ in how the *deep* part is shared across
scenes. Their bottom input is ``[flatten(E), bi_interaction(E)]``. Adding the bi-interaction
vector and the FM term is our choice: plain concatenation MLPs did not learn the planted
low-rank user x category signal within CPU budgets (see the README's deviations).

* :class:`SharedBottom`: shared MLP, one tower per scene (Caruana 1997);
* :class:`MMoE`: shared experts, one softmax gate and tower per scene (Ma et al. 2018);
* :class:`PLE`: shared and scene-specific experts in ``n_levels`` CGC extraction layers with
  per-scene gates (Tang et al. 2020);
* :class:`STAR`: star-topology FCN whose per-scene weights are ``W_shared * W_scene`` and biases
  ``b_shared + b_scene``, partitioned normalisation, and an auxiliary scene network added to the
  logit (Sheng et al. 2021, Eqs. 1-4).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from .features import Batch
from .models import MLP, CTRModel, FieldLayout, fm_interaction

__all__ = ["PLE", "STAR", "MMoE", "MultiScenarioModel", "SharedBottom"]


def _select(per_scene: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
    """per_scene [B, S, ...] -> rows' own scene [B, ...]."""
    idx = scene.view(-1, *([1] * (per_scene.dim() - 1))).expand(-1, 1, *per_scene.shape[2:])
    return per_scene.gather(1, idx).squeeze(1)


class MultiScenarioModel(CTRModel):
    """Base of the scene-aware models: wide part + ``deep(h0, scene) -> [B]``."""

    name = "multi"

    def __init__(self, layout: FieldLayout, embed_dim: int = 16) -> None:
        super().__init__(layout, embed_dim)
        self.d_bottom = (self.n_fields + 1) * embed_dim
        self.n_scenes = layout.n_scenes

    def deep(self, h0: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def logit(self, batch: Batch) -> torch.Tensor:
        e = self.embed(batch)
        bi = fm_interaction(e)
        h0 = torch.cat([e.flatten(1), bi], 1)
        scene = batch["scene"].clamp(0, self.n_scenes - 1)
        return self.linear_logit(batch) + bi.sum(-1) + self.deep(h0, scene)


class SharedBottom(MultiScenarioModel):
    name = "sharedbottom"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        bottom: Sequence[int] = (256, 128),
        tower: Sequence[int] = (64,),
    ) -> None:
        super().__init__(layout, embed_dim)
        self.bottom = MLP(self.d_bottom, bottom)
        self.towers = nn.ModuleList(
            MLP(self.bottom.d_out, tower, out=1) for _ in range(self.n_scenes)
        )

    def deep(self, h0: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        h = self.bottom(h0)
        return _select(torch.cat([t(h) for t in self.towers], 1), scene)


class MMoE(MultiScenarioModel):
    name = "mmoe"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        n_experts: int = 4,
        expert: Sequence[int] = (128, 64),
        tower: Sequence[int] = (32,),
    ) -> None:
        super().__init__(layout, embed_dim)
        self.experts = nn.ModuleList(MLP(self.d_bottom, expert) for _ in range(n_experts))
        self.gates = nn.Linear(self.d_bottom, self.n_scenes * n_experts)
        self.towers = nn.ModuleList(
            MLP(self.experts[0].d_out, tower, out=1) for _ in range(self.n_scenes)
        )
        self.n_experts = n_experts

    def deep(self, h0: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        ex = torch.stack([e(h0) for e in self.experts], 1)  # [B, E, h]
        g = self.gates(h0).view(-1, self.n_scenes, self.n_experts)
        g = torch.softmax(_select(g, scene), -1)  # [B, E]
        mixed = (g.unsqueeze(-1) * ex).sum(1)
        out = torch.cat([t(mixed) for t in self.towers], 1)
        return _select(out, scene)


class PLE(MultiScenarioModel):
    name = "ple"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        n_levels: int = 1,
        n_shared: int = 2,
        n_specific: int = 1,
        expert: Sequence[int] = (128, 64),
        tower: Sequence[int] = (32,),
    ) -> None:
        super().__init__(layout, embed_dim)
        s = self.n_scenes
        self.n_levels, self.n_shared, self.n_specific = n_levels, n_shared, n_specific
        self.levels = nn.ModuleList()
        d_in = self.d_bottom
        for _ in range(n_levels):
            lvl = nn.ModuleDict(
                {
                    "shared": nn.ModuleList(MLP(d_in, expert) for _ in range(n_shared)),
                    "specific": nn.ModuleList(MLP(d_in, expert) for _ in range(s * n_specific)),
                    "gate": nn.Linear(d_in, s * (n_shared + n_specific)),
                }
            )
            self.levels.append(lvl)
            d_in = lvl["shared"][0].d_out
        self.towers = nn.ModuleList(MLP(d_in, tower, out=1) for _ in range(s))

    def deep(self, h0: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        s, k = self.n_scenes, self.n_specific
        h = h0
        for lvl in self.levels:
            shared = torch.stack([e(h) for e in lvl["shared"]], 1)  # [B, Es, d]
            spec = torch.stack([e(h) for e in lvl["specific"]], 1)  # [B, S*k, d]
            spec = spec.view(len(h), s, k, -1)
            own = _select(spec, scene)  # [B, k, d]
            cand = torch.cat([own, shared], 1)
            g = lvl["gate"](h).view(-1, s, k + self.n_shared)
            g = torch.softmax(_select(g, scene), -1)
            h = (g.unsqueeze(-1) * cand).sum(1)
        return _select(torch.cat([t(h) for t in self.towers], 1), scene)


class _PartitionedNorm(nn.Module):
    """Partitioned normalisation (STAR Eq. 2): batch statistics per scene in training, per-scene
    moving averages at inference; scale ``gamma * gamma_s``, shift ``beta + beta_s``."""

    def __init__(self, d: int, n_scenes: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))
        self.gamma_s = nn.Parameter(torch.ones(n_scenes, d))
        self.beta_s = nn.Parameter(torch.zeros(n_scenes, d))
        self.register_buffer("mean", torch.zeros(n_scenes, d))
        self.register_buffer("var", torch.ones(n_scenes, d))
        self.momentum, self.eps, self.n_scenes = momentum, eps, n_scenes

    def forward(self, x: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for s in range(self.n_scenes):
            m = scene == s
            if not m.any():
                continue
            xs = x[m]
            if self.training and xs.shape[0] > 1:
                mu, var = xs.mean(0), xs.var(0, unbiased=False)
                with torch.no_grad():
                    self.mean[s].lerp_(mu.detach(), self.momentum)
                    self.var[s].lerp_(var.detach(), self.momentum)
            else:
                mu, var = self.mean[s], self.var[s]
            xn = (xs - mu) / torch.sqrt(var + self.eps)
            out[m] = xn * (self.gamma * self.gamma_s[s]) + self.beta + self.beta_s[s]
        return out


class STAR(MultiScenarioModel):
    name = "star"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        hidden: Sequence[int] = (256, 128),
        aux_hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__(layout, embed_dim)
        s = self.n_scenes
        self.pn = _PartitionedNorm(self.d_bottom, s)
        dims = [self.d_bottom, *hidden, 1]
        self.w_shared = nn.ParameterList()
        self.b_shared = nn.ParameterList()
        self.w_scene = nn.ParameterList()
        self.b_scene = nn.ParameterList()
        for a, b in itertools.pairwise(dims):
            w = torch.empty(b, a)
            nn.init.kaiming_uniform_(w, a=5**0.5)
            self.w_shared.append(nn.Parameter(w))
            self.b_shared.append(nn.Parameter(torch.zeros(b)))
            self.w_scene.append(nn.Parameter(torch.ones(s, b, a)))
            self.b_scene.append(nn.Parameter(torch.zeros(s, b)))
        self.scene_emb = nn.Embedding(s, embed_dim)
        self.aux = MLP(embed_dim + self.d_bottom, aux_hidden, out=1)

    def deep(self, h0: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        x = self.pn(h0, scene)
        out = torch.empty(len(x), device=x.device, dtype=x.dtype)
        n_layers = len(self.w_shared)
        for s in range(self.n_scenes):
            m = scene == s
            if not m.any():
                continue
            h = x[m]
            for i in range(n_layers):
                w = self.w_shared[i] * self.w_scene[i][s]
                h = h @ w.T + self.b_shared[i] + self.b_scene[i][s]
                if i < n_layers - 1:
                    h = torch.relu(h)
            out[m] = h.squeeze(-1)
        aux = self.aux(torch.cat([self.scene_emb(scene), h0], 1)).squeeze(-1)
        return out + aux
