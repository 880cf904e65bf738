"""Rationale token weighting by mask learning (Sec. 3.3, Eqs. 2-7).

* Eq. 2: ``e = Att(Emb(r))``: the student's (frozen, pre-trained) input embedding of the
  rationale tokens, then one self-attention layer (residual + LayerNorm: our choice).
* Eq. 3: ``w_j = sigmoid(f_w(e_j))``, ``f_w`` a two-layer MLP: the probability that token j is
  kept, i.e. its significance weight.
* Eq. 4: ``m_j = GumbelSoftmax(w_j)``: a straight-through *hard* binary Gumbel-softmax on the
  logits ``[log w, log(1-w)]`` (forward: exact 0/1; backward: the relaxed sample's gradient).
  The mask is applied at the embedding level, ``m_j Emb(r_j) + (1-m_j) e_mask`` with a learned
  mask vector, so the answer-prediction loss reaches ``f_w`` (replacing token ids after a
  threshold, as the public third-party code does, cuts that gradient).
* Eq. 5: ``L_p = -sum_k sum_j log P(y_j | y_<j, r[m]_<k, x)``: the answer is predicted by a
  transformer from the question and *every prefix* of the masked rationale. We sample
  ``prefixes`` cut points per example (the full length and every step end are always in) and
  rescale by ``L / n_cuts`` so ``L_p`` keeps the scale of the full sum (``prefixes=0``: all L).
* Eq. 6: ``L_m = sum_j m_j``; Eq. 7: ``L_k = L_p + alpha L_m`` (alpha = 0.5, App. A).

The price of a kept token (``WeightingConfig.alpha_scale``; the paper leaves the normalisation
of ``L_p`` and ``L_m`` open, so the same ``alpha`` means different trade-offs for different
predictors, answer lengths and prefix counts):

* ``"relative"`` (default): after the predictor warm-up we measure, on a fixed calibration set,
  how much answer NLL (Eq. 5, same prefixes) the whole rationale is worth to the predictor per
  token, ``g = sum_i [L_p(all masked) - L_p(all kept)] / sum_i L_i``, and charge ``alpha * g``
  per kept token. With alpha = 0.5 a token is worth keeping when it carries at least half the
  answer information of an average rationale token, whatever the loss scale. Measured on the
  quick synthetic task (values up to 20, a d=64 predictor): ``g`` ~ 0.04-0.11 nats per token
  (the small predictor gains little beyond copying the final result), so the literal charge of
  0.5 nats is 5-12x an average token's worth: the optimum of Eq. 7 is then to mask everything,
  and the weights collapsed (0.3.0: keep ratio 0, keypoint AUROC 0.41). ``g <= 0`` (a predictor
  that gains nothing from rationales) warns and falls back to the literal charge.
* ``"absolute"``: ``alpha`` nats per kept token, literally (0.3.0 behaviour).

Gradient of Eq. 7 with respect to the weights (``WeightingConfig.estimator``; the paper only
says "Gumbel-Softmax"):

* ``"straight_through"``: the relaxed sample's gradient (the paper's literal reading). At the
  scale we test it vanishes: the answer loss is flat in ``m_j`` around both 0 and 1 (we measured
  ``dL_p/dm`` ~ -0.2 on the final-result digits against alpha = 0.5 per kept token), so ``L_m``
  wins, every weight collapses to 0 and the most frequent tokens (digits) collapse first
  (keypoint AUROC 0.10 in 0.1.0).
* ``"score"`` (default): the same hard Gumbel samples (``samples`` per example), and the
  score-function gradient of ``E_m[L_p]`` with a leave-one-out baseline; token j is credited only
  with the prefixes that contain it. ``E[L_m] = sum_j w_j`` is differentiated exactly. This is an
  unbiased gradient of the paper's objective (tested against a closed form).

The predictor warm-up (``predictor_warmup`` steps, ``warmup_mode="random_mask"``) trains the
predictor alone, a stand-in for the paper's pre-trained FlanT5-Large predictor, on the inputs
Eq. 5 will give it: the same sampled prefixes, with tokens masked at random at a keep rate drawn
uniformly from (0, 1) per example (``warmup_keep="uniform"``, ``warmup_prefixes=True``). 0.3.0
warmed it up on whole rationales at the initial keep rate only (``warmup_keep="init"``,
``warmup_prefixes=False``): it learnt to copy the last number it sees, so at a mid-rationale
prefix a visible intermediate result *raised* its answer NLL (the whole rationale was worth
-0.7 nats per token under Eq. 5) and masking everything was optimal at any positive charge.

The answer predictor is any Hugging Face causal LM driven through ``inputs_embeds``; a linear
projection maps the student's embedding width to the predictor's (the paper pairs LLaMA
embeddings with FlanT5-Large layers and leaves this open). By default it is a copy of the
pre-distillation student.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kpod.encoding import ANSWER, PROMPT, Encoded
from shared import progress

__all__ = [
    "TokenWeighter",
    "WeightingConfig",
    "fit_weighting",
    "gumbel_keep_mask",
    "rationale_worth",
    "token_weights",
]


@dataclass(frozen=True)
class WeightingConfig:
    """Hyper-parameters of the weighting module and its trainer."""

    alpha: float = 0.5  # Eq. 7, App. A
    alpha_scale: str = "relative"  # "relative": alpha x the rationale's worth per token; "absolute"
    calibration_examples: int = 64  # examples measuring that worth (alpha_scale="relative")
    tau: float = 1.0  # Gumbel-softmax temperature (paper: not given)
    hard: bool = True  # straight-through hard mask (paper: m in {0, 1})
    estimator: str = "score"  # gradient of E[L_p] w.r.t. w: "score" or "straight_through"
    samples: int = 4  # masks sampled per example (score estimator, leave-one-out baseline)
    prefixes: int = 4  # sampled prefix cut points per example; 0 = every prefix (exact Eq. 5)
    heads: int = 4
    mlp_hidden: int = 128
    steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    predictor_lr: float = 3e-3
    predictor_warmup: int = 100  # steps training only the predictor (see warmup_mode)
    warmup_mode: str = "random_mask"  # or "full": unmasked whole rationales + their LM loss
    warmup_keep: str = "uniform"  # random_mask keep rate: U(0,1) per example, or "init" (init_keep)
    warmup_prefixes: bool = True  # warm up on Eq. 5's prefixes (False: whole rationales, 0.3.0)
    warmup_steps: int = 20  # then alpha ramps linearly from 0 over this many steps
    init_keep: float = 0.8  # initial keep probability (bias of the last MLP layer)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.tau <= 0:
            raise ValueError("alpha must be >= 0 and tau > 0")
        if self.prefixes < 0 or self.steps < 0 or self.batch_size < 1 or self.heads < 1:
            raise ValueError("prefixes, steps >= 0; batch_size, heads >= 1")
        if not 0 < self.init_keep < 1:
            raise ValueError("init_keep must be in (0, 1)")
        if self.lr <= 0 or self.predictor_lr < 0 or self.warmup_steps < 0:
            raise ValueError("lr > 0, predictor_lr >= 0, warmup_steps >= 0")
        if self.predictor_warmup < 0 or (self.predictor_warmup and self.predictor_lr == 0):
            raise ValueError("predictor_warmup must be >= 0 and needs predictor_lr > 0")
        if self.estimator not in ("score", "straight_through"):
            raise ValueError(
                f"estimator must be 'score' or 'straight_through', got {self.estimator!r}"
            )
        if self.samples < 1 or (self.estimator == "score" and self.samples < 2):
            raise ValueError("samples must be >= 2 with the score estimator (leave-one-out)")
        if self.warmup_keep not in ("uniform", "init"):
            raise ValueError(f"warmup_keep must be 'uniform' or 'init', got {self.warmup_keep!r}")
        if self.alpha_scale not in ("relative", "absolute"):
            raise ValueError(
                f"alpha_scale must be 'relative' or 'absolute', got {self.alpha_scale!r}"
            )
        if self.calibration_examples < 1:
            raise ValueError("calibration_examples must be >= 1")
        if self.warmup_mode not in ("random_mask", "full"):
            raise ValueError(
                f"warmup_mode must be 'random_mask' or 'full', got {self.warmup_mode!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gumbel_keep_mask(
    w: torch.Tensor, tau: float = 1.0, hard: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Eq. 4: a binary Gumbel-softmax sample of "keep" with probability ``w`` (same shape).

    Hard samples are exactly 0/1 in the forward pass and carry the relaxed sample's gradient.
    """
    eps = 1e-6
    w = w.clamp(eps, 1 - eps)
    logits = torch.stack([w.log(), (1 - w).log()], dim=-1)
    u = torch.rand(logits.shape, generator=generator, device="cpu").to(w.device)
    g = -torch.log(-torch.log(u.clamp(eps, 1 - eps)))
    soft = torch.softmax((logits + g) / tau, dim=-1)[..., 0]
    if not hard:
        return soft
    return (soft > 0.5).to(soft.dtype) - soft.detach() + soft


def _heads_for(d: int, wanted: int) -> int:
    h = max(1, min(wanted, d))
    while d % h:
        h -= 1
    return h


class TokenWeighter(nn.Module):
    """The weighting module of Sec. 3.3 with its answer predictor.

    Args:
        embedding: the student's input embedding (copied and frozen).
        predictor: a causal LM that accepts ``inputs_embeds`` (trained with the module).
        heads, mlp_hidden: the self-attention layer and the MLP ``f_w``.
        mask_token_id: initialises the mask vector from this token's embedding (else zeros).
        init_keep: initial keep probability.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        predictor: nn.Module,
        *,
        heads: int = 4,
        mlp_hidden: int = 128,
        mask_token_id: int | None = None,
        init_keep: float = 0.8,
    ) -> None:
        super().__init__()
        weight = embedding.weight.detach().clone().float()
        self.embed = nn.Embedding.from_pretrained(weight, freeze=True)
        d = weight.shape[1]
        self.attn = nn.MultiheadAttention(d, _heads_for(d, heads), batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1))
        with torch.no_grad():
            self.mlp[2].bias.fill_(math.log(init_keep / (1 - init_keep)))
        self.predictor = predictor
        pd = predictor.get_input_embeddings().embedding_dim
        self.proj = nn.Linear(d, pd)
        with torch.no_grad():
            if d == pd:  # start as the identity: the predictor reads the student's embeddings
                self.proj.weight.copy_(torch.eye(d))
                self.proj.bias.zero_()
        init = weight[mask_token_id] if mask_token_id is not None else torch.zeros(d)
        self.mask_embedding = nn.Parameter(init.clone())
        self._head_path: bool | None = None  # see _label_nll (None: not yet checked)
        self.calibration: dict[str, Any] = {}  # the charge per kept token (fit_weighting)

    def weights(self, r_ids: torch.Tensor, r_valid: torch.Tensor) -> torch.Tensor:
        """Eqs. 2-3: keep probabilities ``w`` (B, L) for padded rationale ids (B, L)."""
        x = self.embed(r_ids)
        a, _ = self.attn(x, x, x, key_padding_mask=~r_valid, need_weights=False)
        e = self.norm(x + a)
        return torch.sigmoid(self.mlp(e).squeeze(-1)) * r_valid

    def forward(
        self,
        batch: dict[str, Any],
        cfg: WeightingConfig,
        alpha: float,
        generator: torch.Generator,
        *,
        keep_all: bool = False,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eqs. 4-7 on a collated batch: ``L_k``, ``L_p``, ``L_m``, keep ratio and ``w``.

        ``mask`` (B, L) replaces the Gumbel sample (the predictor warm-up feeds random masks);
        ``keep_all`` feeds the unmasked rationale and adds the rationale's own next-token loss.
        """
        r_ids, r_valid = batch["r_ids"], batch["r_valid"]
        w = self.weights(r_ids, r_valid)
        score = cfg.estimator == "score" and not keep_all and mask is None
        K = cfg.samples if score else 1
        if keep_all:
            m = r_valid.to(w.dtype)
        elif mask is not None:
            m = mask.to(w.dtype) * r_valid
        elif score:  # K hard Gumbel samples per example, no pathwise gradient
            wk = w.detach().repeat_interleave(K, 0)
            m = gumbel_keep_mask(wk, cfg.tau, True, generator) * r_valid.repeat_interleave(K, 0)
        else:
            m = gumbel_keep_mask(w, cfg.tau, cfg.hard, generator) * r_valid
        if K > 1:  # rows of sample s of example i sit at i * K + s
            batch = dict(batch)
            for key in ("r_ids", "q_ids", "a_ids", "a_lab"):
                batch[key] = batch[key].repeat_interleave(K, 0)
            for key in ("q_len", "a_len", "cuts"):
                batch[key] = [x for x in batch[key] for _ in range(K)]
            r_ids, r_valid_k = batch["r_ids"], r_valid.repeat_interleave(K, 0)
        else:
            r_valid_k = r_valid
        emb_r = self.embed(r_ids)
        mixed = m.unsqueeze(-1) * emb_r + (1 - m.unsqueeze(-1)) * self.mask_embedding
        xr = self.proj(mixed)
        xq = self.proj(self.embed(batch["q_ids"]))
        pemb = self.predictor.get_input_embeddings()
        xa = pemb(batch["a_ids"])
        rows, labels, scales, owners, is_full = [], [], [], [], []
        for i, cuts in enumerate(batch["cuts"]):
            nq, na = int(batch["q_len"][i]), int(batch["a_len"][i])
            L = int(r_valid_k[i].sum())
            scale = 1.0 if cfg.prefixes == 0 else L / len(cuts)
            for k in cuts:
                rows.append(torch.cat([xq[i, :nq], xr[i, :k], xa[i, :na]], 0))
                lab = torch.full((nq + k + na,), -100, dtype=torch.long)
                tgt = batch["a_ids"][i, :na].cpu().clone()
                tgt[~batch["a_lab"][i, :na].cpu()] = -100
                lab[nq + k :] = tgt
                if keep_all:  # warm-up: also model the rationale itself (teaches reading it)
                    lab[nq : nq + k] = batch["r_ids"][i, :k].cpu()
                labels.append(lab)
                scales.append(scale)
                owners.append(i)
                is_full.append(k == L)
        T = max(r.shape[0] for r in rows)
        dev = xq.device
        X = torch.zeros(len(rows), T, xq.shape[-1], device=dev, dtype=xq.dtype)
        att = torch.zeros(len(rows), T, dtype=torch.long, device=dev)
        Y = torch.full((len(rows), T), -100, dtype=torch.long)
        for j, (r, lab) in enumerate(zip(rows, labels, strict=True)):
            X[j, : r.shape[0]] = r
            att[j, : r.shape[0]] = 1
            Y[j, : r.shape[0]] = lab
        Y = Y.to(dev)
        tgt = Y[:, 1:]
        nll = self._label_nll(X, att, tgt)
        per_row = nll.sum(1) * torch.tensor(scales, device=dev)
        B = w.shape[0]
        l_p = per_row.sum() / (B * K)
        l_m = m.sum() / (B * K)
        keep = m.sum() / r_valid_k.sum()
        full = torch.tensor(is_full, device=dev)
        l_full = nll.sum(1)[full].mean() if bool(full.any()) else l_p.new_zeros(())
        out = {"L_k": l_p + alpha * l_m, "L_p": l_p, "L_m": l_m, "keep": keep, "w": w,
               "L_full": l_full}  # fmt: skip
        if score:
            out["loss"] = l_p + self._score_surrogate(w, m, r_valid, per_row, owners, batch, K)
            out["loss"] = out["loss"] + alpha * (w * r_valid).sum() / B  # d E[L_m] / dw exactly
        return out

    def _label_nll(self, X: torch.Tensor, att: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Per-position NLL of the labelled targets ``tgt`` (R, T-1) (0 where ``-100``).

        The output head is applied only where a label is (the answer tokens): a predictor with
        a large vocabulary (SmolLM2: 49k) would otherwise materialise logits for every position
        of every prefix row (about 16 GB for GSM8K batches in 0.2.0). Checked once against the
        model's own logits; a predictor whose logits are not ``head(decoder(x))`` (soft-capping,
        scaling) falls back to the full forward pass.
        """
        sel = tgt != -100
        nll = torch.zeros(tgt.shape, device=X.device, dtype=torch.float32)
        if not bool(sel.any()):
            return nll + 0.0 * X.sum()  # keeps the graph connected
        logits = None
        if self._head_path is not False:
            dec = getattr(self.predictor, "get_decoder", lambda: None)()
            head = self.predictor.get_output_embeddings()
            if dec is not None and head is not None:
                h = dec(inputs_embeds=X, attention_mask=att).last_hidden_state[:, :-1]
                if self._head_path is None:  # first call: check one row
                    with torch.no_grad():
                        ref = self.predictor(inputs_embeds=X[:1], attention_mask=att[:1]).logits
                        ok = torch.allclose(head(h[:1]), ref[:, :-1], atol=1e-4, rtol=1e-3)
                    self._head_path = bool(ok)
                if self._head_path:
                    logits = head(h[sel])
            else:
                self._head_path = False
        if logits is None:
            logits = self.predictor(inputs_embeds=X, attention_mask=att).logits[:, :-1][sel]
        nll[sel] = nn.functional.cross_entropy(logits.float(), tgt[sel], reduction="none")
        return nll

    @staticmethod
    def _score_surrogate(w, m, r_valid, per_row, owners, batch, K) -> torch.Tensor:
        """Score-function (REINFORCE) surrogate of ``E_m[L_p]`` with a leave-one-out baseline.

        Token j only affects the prefixes that contain it (cuts ``k > j``), so its credit is the
        sum over those cuts of ``L_p(cut) - mean over the other samples``.
        """
        B, L = w.shape
        credit = torch.zeros(B * K, L, device=w.device)
        row = 0
        per = per_row.detach()
        for r, cuts in enumerate(batch["cuts"]):
            n = len(cuts)
            vals = per[row : row + n]
            cum = torch.zeros(L + 1, device=w.device)
            for k, v in zip(cuts, vals, strict=True):  # credit[j] = sum_{cuts k > j} L(k)
                cum[:k] += v
            credit[r] = cum[:L]
            row += n
        credit = credit.view(B, K, L)
        baseline = (credit.sum(1, keepdim=True) - credit) / (K - 1)
        adv = (credit - baseline).view(B * K, L)
        wk = w.repeat_interleave(K, 0).clamp(1e-6, 1 - 1e-6)
        logp = m * wk.log() + (1 - m) * (1 - wk).log()
        valid = r_valid.repeat_interleave(K, 0).to(w.dtype)
        return (logp * adv * valid).sum() / (B * K)


def _pad(seqs: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), T), pad, dtype=torch.long)
    valid = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        valid[i, : len(s)] = True
    return out, valid


def _cuts(enc: Encoded, prefixes: int, rng: np.random.Generator) -> list[int]:
    r = enc.rationale_tokens
    L = len(r)
    if prefixes == 0:
        return list(range(L + 1))
    seg = enc.segment[r]
    ends = {int(i) + 1 for i in np.nonzero(np.diff(seg))[0]} | {L}
    cuts = sorted(ends)
    if len(cuts) < prefixes:
        extra = [k for k in range(L) if k not in ends]
        take = min(prefixes - len(cuts), len(extra))
        cuts = sorted(cuts + list(rng.choice(extra, size=take, replace=False)))
    return [int(c) for c in cuts]


def collate_weighting(
    encs: list[Encoded], pad_id: int, prefixes: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Split each encoded example into question (prompt), rationale and answer pieces."""
    q = [e.input_ids[e.segment == PROMPT] for e in encs]
    r = [e.input_ids[e.rationale_tokens] for e in encs]
    a = [e.input_ids[e.segment == ANSWER] for e in encs]
    alab = [e.answer_label_mask[e.segment == ANSWER] for e in encs]
    q_ids, _ = _pad(q, pad_id)
    r_ids, r_valid = _pad(r, pad_id)
    a_ids, _ = _pad(a, pad_id)
    a_lab = torch.zeros_like(a_ids, dtype=torch.bool)
    for i, m in enumerate(alab):
        a_lab[i, : len(m)] = torch.as_tensor(m)
    return {
        "q_ids": q_ids,
        "q_len": [len(x) for x in q],
        "r_ids": r_ids,
        "r_valid": r_valid,
        "a_ids": a_ids,
        "a_len": [len(x) for x in a],
        "a_lab": a_lab,
        "cuts": [_cuts(e, prefixes, rng) for e in encs],
    }


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def rationale_worth(
    module: TokenWeighter, encoded: list[Encoded], cfg: WeightingConfig, pad_id: int = 0
) -> float:
    """Answer NLL (Eq. 5, ``cfg.prefixes`` cuts) that whole rationales save the predictor, per
    rationale token: ``sum_i [L_p,i(all masked) - L_p,i(all kept)] / sum_i L_i``.

    Deterministic in ``cfg.seed``; both passes see the same cuts. ``alpha_scale="relative"``
    charges ``alpha`` times this per kept token (see the module docstring).
    """
    was = module.training
    module.eval()
    rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    dev = next(module.parameters()).device
    gain, tokens = 0.0, 0.0
    for s in range(0, len(encoded), cfg.batch_size):
        chunk = encoded[s : s + cfg.batch_size]
        batch = _to(collate_weighting(chunk, pad_id, cfg.prefixes, rng), dev)
        keep = batch["r_valid"].float()
        kept = module(batch, cfg, 0.0, gen, mask=keep)["L_p"]
        masked = module(batch, cfg, 0.0, gen, mask=torch.zeros_like(keep))["L_p"]
        gain += float(masked - kept) * len(chunk)
        tokens += float(keep.sum())
    module.train(was)
    return gain / max(tokens, 1.0)


def fit_weighting(
    encoded: list[Encoded],
    student: nn.Module,
    tokenizer: Any,
    cfg: WeightingConfig | None = None,
    *,
    predictor: nn.Module | None = None,
    show_progress: bool = False,
) -> tuple[TokenWeighter, list[dict[str, float]]]:
    """Train the weighting module with Eq. 7 on encoded training examples.

    ``predictor`` defaults to a deep copy of ``student``; the student itself is not changed.
    The first ``predictor_warmup`` steps train the predictor (and projection) to predict the
    answer from Eq. 5's prefixes, randomly masked at a keep rate drawn from U(0, 1) per example
    (``warmup_mode="full"``: unmasked whole rationales, plus the rationale's own next-token
    loss), so that it can read answers before masks are learned (the paper's predictor is a pre-trained FlanT5-Large; a fresh one
    lets ``L_m`` mask everything). Then ``steps`` steps of Eq. 7, each kept token charged
    ``alpha`` times the rationale's measured worth per token (:func:`rationale_worth`, measured
    once after the warm-up on ``calibration_examples`` examples; ``alpha_scale="absolute"``:
    ``alpha`` itself). Returns the trained module (``module.calibration`` holds the measured
    worth and the charge) and a history of ``{"step", "L_k", "L_p", "L_m", "keep", "L_full",
    "alpha"}`` (``L_full``: answer NLL from the whole masked rationale; ``alpha``: the charge
    per kept token at that step, ramped in over ``warmup_steps``).
    """
    cfg = cfg or WeightingConfig()
    if not encoded:
        raise ValueError("fit_weighting needs at least one encoded example")
    if any(e.answer_value_start < 0 for e in encoded):
        raise ValueError("the weighting module needs examples encoded with their answers")
    device = torch.device(cfg.device)
    predictor = copy.deepcopy(student) if predictor is None else predictor
    # the module's layers draw their initial values from cfg.seed, not from the process's
    # global generator (torch seeds that one at random per process: runs were not repeatable)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        module = TokenWeighter(
            student.get_input_embeddings(),
            predictor,
            heads=cfg.heads,
            mlp_hidden=cfg.mlp_hidden,
            mask_token_id=getattr(tokenizer, "mask_token_id", None),
            init_keep=cfg.init_keep,
        ).to(device)
    module.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    own = [
        p
        for n, p in module.named_parameters()
        if not n.startswith("predictor.") and p.requires_grad
    ]
    groups = [{"params": own, "lr": cfg.lr}]
    if cfg.predictor_lr > 0:
        groups.append({"params": list(module.predictor.parameters()), "lr": cfg.predictor_lr})
    else:
        module.predictor.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    history: list[dict[str, float]] = []
    order = rng.permutation(len(encoded))
    pos = 0
    calib_idx = np.random.default_rng(cfg.seed + 1).permutation(len(encoded))
    calib_set = [encoded[i] for i in calib_idx[: cfg.calibration_examples]]
    price = cfg.alpha  # per kept token ("relative": set at the first step of Eq. 7)
    module.calibration = {"alpha_scale": cfg.alpha_scale}
    if cfg.alpha_scale == "absolute":
        module.calibration["alpha_per_token"] = price
    for step in progress(
        range(cfg.predictor_warmup + cfg.steps) if cfg.steps else [],
        desc="weighting",
        disable=not show_progress or None,
    ):
        if pos + cfg.batch_size > len(order):
            order, pos = rng.permutation(len(encoded)), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        warm = step < cfg.predictor_warmup
        batch = collate_weighting([encoded[i] for i in idx], pad, cfg.prefixes, rng)
        full = warm and cfg.warmup_mode == "full"
        if warm and (full or not cfg.warmup_prefixes):  # whole rationales only (0.3.0)
            batch["cuts"] = [[c[-1]] for c in batch["cuts"]]
        batch = _to(batch, device)
        rand = None
        if warm and not full:  # random keep/mask, no gradient to f_w
            u = torch.rand(batch["r_ids"].shape, generator=gen).to(device)
            if cfg.warmup_keep == "uniform":  # every mask density Eq. 7 may reach, 0 to 1
                rate = torch.rand(u.shape[0], 1, generator=gen).to(device)
                rand = (u < rate).float()
            else:
                rand = (u < cfg.init_keep).float()
        j = step - cfg.predictor_warmup
        if j == 0 and cfg.alpha_scale == "relative":
            worth = rationale_worth(module, calib_set, cfg, pad)
            if worth > 0:
                price = cfg.alpha * worth
            else:
                warnings.warn(
                    f"the answer predictor gains nothing from whole rationales after its warm-up "
                    f"(worth {worth:.4f} nats per token on {len(calib_set)} examples): charging "
                    f"alpha={cfg.alpha} per kept token as is; expect every weight to collapse "
                    f"(train the predictor longer: predictor_warmup)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            module.calibration = {"alpha_scale": "relative", "alpha_per_token": price,
                                  "worth_per_token": worth, "examples": len(calib_set)}  # fmt: skip
        alpha = price * min(1.0, (j + 1) / cfg.warmup_steps) if cfg.warmup_steps else price
        out = module(batch, cfg, 0.0 if warm else alpha, gen, keep_all=full, mask=rand)
        opt.zero_grad(set_to_none=True)
        out.get("loss", out["L_k"]).backward()
        for g in groups:  # separately: the predictor's large L_p gradient must not shrink f_w's
            torch.nn.utils.clip_grad_norm_(g["params"], 1.0)
        opt.step()
        history.append(
            {k: float(out[k].detach()) for k in ("L_k", "L_p", "L_m", "keep", "L_full")}
            | {"step": step, "alpha": 0.0 if warm else alpha}
        )
    module.eval()
    return module, history


@torch.no_grad()
def token_weights(
    module: TokenWeighter, encoded: list[Encoded], *, batch_size: int = 64, pad_id: int = 0
) -> list[np.ndarray]:
    """Eq. 3 weights ``w`` (float32) of every rationale token of every example, in token order."""
    module.eval()
    dev = next(module.parameters()).device
    out: list[np.ndarray] = []
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s : s + batch_size]
        r_ids, valid = _pad([e.input_ids[e.rationale_tokens] for e in chunk], pad_id)
        w = module.weights(r_ids.to(dev), valid.to(dev)).cpu().numpy()
        out.extend(w[i, : int(valid[i].sum())].astype(np.float32) for i in range(len(chunk)))
    return out
