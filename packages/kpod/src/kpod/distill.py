"""Distillation objectives and the trainer (Sec. 3.4-3.5, Eqs. 1, 14, 15; Alg. 1 step 5).

One trainer, four methods (``DistillConfig.method``):

* ``"kpod"`` - Eq. 15: ``-sum_{j in output steps} w_j log P(r_j | r_<j, x)`` plus the answer NLL,
  where at epoch e <= T the first ``c_i(e)`` steps of question i are part of the *input* (no
  loss) and the rest is generated (progressive schedule). Ablations: ``use_weights=False``
  ("w.o.-sig": Eq. 14 with the schedule), ``progressive=False`` ("w.o.-prog": weights on the whole
  rationale).
* ``"cot"`` - standard CoT distillation, Eq. 1: uniform weights, whole rationale, plus answer.
* ``"answer_only"`` - fine-tuning on question -> answer.
* ``"step_by_step"`` - distilling step-by-step (Hsieh et al. 2023): two tasks with prefixes
  ``[label]`` / ``[rationale]``; ``sbs_alpha * L_label + (1 - sbs_alpha) * L_rationale``; the label
  task is used at inference.

Token weights are stored with character offsets in rationale coordinates and mapped onto the
student's tokens by character overlap (:func:`align_weights`), so a weighting computed with one
tokenizer serves a student with another; for the same tokenizer the mapping is the identity.
Any Hugging Face causal LM or encoder-decoder (seq2seq) student works; ``lora_rank > 0`` wraps it
in LoRA adapters through ``peft``. Loss: sum over target tokens, mean over examples (the paper's
sums); ``weight_norm="mean"`` rescales each example's rationale weights to mean 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from kpod.encoding import ANSWER, PROMPT, Encoded, Template, encode
from kpod.schedule import Schedule
from kpod.schema import CoTExample, KPODDataError
from shared import progress

__all__ = [
    "METHODS",
    "DistillConfig",
    "DistillTrainer",
    "align_weights",
    "causal_targets",
    "method_template",
    "weighted_nll",
]

METHODS = ("kpod", "cot", "answer_only", "step_by_step")


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one distillation run."""

    method: str = "kpod"
    use_weights: bool = True
    progressive: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    weight_norm: str = "none"
    step_start: str = "token"  # "answer": each output step's first token gets answer_weight
    answer_weight: float = 1.0
    sbs_alpha: float = 0.5
    lora_rank: int = 0
    lora_alpha: float = 16.0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.answer_weight < 0:
            raise ValueError("lr > 0, weight_decay >= 0, answer_weight >= 0")
        if self.weight_norm not in ("none", "mean"):
            raise ValueError("weight_norm must be 'none' or 'mean'")
        if self.step_start not in ("token", "answer"):
            raise ValueError(f"step_start must be 'token' or 'answer', got {self.step_start!r}")
        if not 0 <= self.sbs_alpha <= 1:
            raise ValueError("sbs_alpha must be in [0, 1]")
        if self.lora_rank < 0 or self.max_grad_norm <= 0:
            raise ValueError("lora_rank >= 0 and max_grad_norm > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_template(method: str, base: Template | None = None) -> Template:
    """The template a method trains and generates with (the label task for step-by-step)."""
    base = base or Template()
    if method in ("answer_only", "step_by_step"):
        t = base.answer_only()
        if method == "step_by_step":
            t = Template(t.question, t.cue, t.answer, "[label] ", False, True)
        return t
    return base


def align_weights(
    enc: Encoded, src_offsets: np.ndarray, src_weights: np.ndarray, default: float = 1.0
) -> np.ndarray:
    """Weights for ``enc``'s rationale tokens from weights of another tokenisation.

    ``src_offsets`` (n, 2) are character spans in *rationale* coordinates. A target token with
    the same span as a source token takes its weight; otherwise the overlap-weighted mean of the
    source tokens over its non-space characters; a token without such overlap (pure whitespace)
    takes the weight of the source token it overlaps or lies nearest to.
    """
    src = np.asarray(src_offsets, dtype=np.int64).reshape(-1, 2)
    sw = np.asarray(src_weights, dtype=np.float64)
    if len(src) != len(sw):
        raise ValueError(f"{len(src)} source spans but {len(sw)} weights")
    tgt = enc.rationale_offsets()
    if len(src) == len(tgt) and (src == tgt).all():
        return sw.astype(np.float32)
    if len(src) == 0:
        return np.full(len(tgt), default, dtype=np.float32)
    rat = enc.text[enc.rationale_start : enc.rationale_end if enc.rationale_end >= 0 else None]
    exact = {(int(a), int(b)): w for (a, b), w in zip(src, sw, strict=True)}
    out = []
    for s, e in tgt:
        s, e = int(s), int(e)
        if (s, e) in exact:
            out.append(exact[(s, e)])
            continue
        lo, hi = max(0, s), min(len(rat), e)
        chars = [i for i in range(lo, hi) if not rat[i].isspace()]
        num = den = 0.0
        for (a, b), w in zip(src, sw, strict=True):
            ov = sum(1 for i in chars if a <= i < b)
            num, den = num + ov * w, den + ov
        if den > 0:
            out.append(num / den)
            continue
        ovl = (src[:, 0] < e) & (src[:, 1] > s)
        if ovl.any():
            out.append(float(sw[ovl].mean()))
        else:
            dist = np.minimum(np.abs(src[:, 0] - s), np.abs(src[:, 1] - e))
            out.append(float(sw[int(dist.argmin())]))
    return np.asarray(out, dtype=np.float32)


def causal_targets(
    enc: Encoded,
    c: int,
    weights: np.ndarray | None,
    *,
    answer_weight: float = 1.0,
    weight_norm: str = "none",
    step_start: str = "token",
) -> np.ndarray:
    """Per-token loss weights of a causal-LM sequence at stage ``c`` (0 = no loss).

    Tokens of steps ``>= c`` get their rationale weight (1 without weights); answer tokens get
    ``answer_weight``; the prompt and the first ``c`` steps get 0 (they are input).
    ``step_start="answer"``: the first token of every output step also gets ``answer_weight``.
    That token is where the student decides between another step and the answer sentence; with
    the token's own weight there (Eq. 15 as written) the two continuations are weighted
    differently and the learnt stop probability is biased (see the package README).
    """
    lw = np.zeros(len(enc.input_ids), dtype=np.float32)
    rt = enc.rationale_tokens
    if weights is not None and len(weights) != len(rt):
        raise ValueError(f"example {enc.id}: {len(weights)} weights for {len(rt)} rationale tokens")
    w = np.ones(len(rt), dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    out_sel = enc.segment[rt] >= c
    if weight_norm == "mean" and out_sel.any():
        w = w / max(float(w[out_sel].mean()), 1e-12)
    lw[rt[out_sel]] = w[out_sel]
    if step_start == "answer":
        for k in range(c, enc.n_steps):
            first = enc.step_tokens(k)
            if len(first):
                lw[first[0]] = answer_weight
    lw[enc.segment == ANSWER] = answer_weight
    lw[0] = 0.0  # nothing predicts the first token
    if not (lw > 0).any():
        raise KPODDataError(f"example {enc.id}: no token carries loss at stage c={c}")
    return lw


def weighted_nll(logits: torch.Tensor, ids: torch.Tensor, lw: torch.Tensor) -> torch.Tensor:
    """``sum_j lw_j * -log P(ids_j | ids_<j)`` per sequence (causal shift inside), shape (B,)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (nll * lw[:, 1:]).sum(1)


def _pad_batch(seqs: list[np.ndarray], lws: list[np.ndarray], pad: int) -> tuple[torch.Tensor, ...]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    att = torch.zeros(len(seqs), T, dtype=torch.long)
    lw = torch.zeros(len(seqs), T)
    for i, (s, w) in enumerate(zip(seqs, lws, strict=True)):
        ids[i, : len(s)] = torch.as_tensor(s)
        att[i, : len(s)] = 1
        lw[i, : len(s)] = torch.as_tensor(w)
    return ids, att, lw


def _seq2seq_pair(
    enc: Encoded,
    c: int,
    weights: np.ndarray | None,
    tokenizer: Any,
    answer_weight: float,
    step_start: str = "token",
) -> tuple[list[int], list[int], np.ndarray]:
    """Encoder input = text before step c; decoder target = the rest, weights by offsets."""
    rt = enc.rationale_tokens
    if c < enc.n_steps:
        cut = enc.rationale_start + enc.step_spans[c][0]
    else:
        cut = int(enc.offsets[enc.segment == ANSWER][0][0])
    src, tgt_text = enc.text[:cut], enc.text[cut:]
    x = tokenizer(src, add_special_tokens=True)["input_ids"]
    t = tokenizer(tgt_text, add_special_tokens=True, return_offsets_mapping=True)
    y, offs = list(t["input_ids"]), t["offset_mapping"]
    w_src = np.ones(len(rt), np.float32) if weights is None else np.asarray(weights, np.float32)
    r_offs = enc.rationale_offsets()
    lw = np.zeros(len(y), dtype=np.float32)
    for j, (s, e) in enumerate(offs):
        if e <= s or s + cut >= enc.rationale_end:  # eos / answer sentence
            lw[j] = answer_weight
            continue
        gs, ge = s + cut - enc.rationale_start, e + cut - enc.rationale_start
        ov = [w for (rs, re_), w in zip(r_offs, w_src, strict=True) if rs < ge and re_ > gs]
        lw[j] = float(np.mean(ov)) if ov else 1.0
    if step_start == "answer":  # the first target token reaching into each output step
        for k in range(c, enc.n_steps):
            start = enc.rationale_start + enc.step_spans[k][0] - cut
            j = next((j for j, (_, e) in enumerate(offs) if e > start), None)
            if j is not None:
                lw[j] = answer_weight
    return x, y, lw


class DistillTrainer:
    """Trains a student with one of :data:`METHODS` (Alg. 1 step 5: epoch = stage).

    Args:
        model: a Hugging Face causal LM or encoder-decoder model (trained in place unless LoRA).
        tokenizer: its fast tokenizer.
        cfg: :class:`DistillConfig`.
        template: the CoT text layout (:class:`kpod.encoding.Template`).
    """

    def __init__(
        self, model: Any, tokenizer: Any, cfg: DistillConfig, template: Template | None = None
    ):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.template = template or Template()
        self.seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lcfg = LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules="all-linear",
                task_type="SEQ_2_SEQ_LM" if self.seq2seq else "CAUSAL_LM",
            )
            with torch.random.fork_rng(devices=[]):  # adapters initialised from cfg.seed
                torch.manual_seed(cfg.seed)
                model = get_peft_model(model, lcfg)
        self.model = model.to(cfg.device)
        self.rank, self.world = 0, 1
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # data parallel over torch.distributed (gloo on CPU, nccl with CUDA): each rank takes
            # every world-th example of each global batch; DDP averages the gradients
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if cfg.batch_size % self.world:
                raise ValueError(
                    f"batch_size {cfg.batch_size} must be divisible by the world size {self.world}"
                )
            dev = torch.device(cfg.device)
            self.model = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._opt = torch.optim.AdamW(self._params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser state, epoch and history (the model is saved separately)."""
        return {"epoch": self.epoch, "history": list(self.history), "opt": self._opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._opt.load_state_dict(state["opt"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])

    # ------------------------------------------------------------------ data
    def _items(
        self, examples: list[CoTExample], weights: dict[str, np.ndarray] | None
    ) -> list[dict[str, Any]]:
        cfg, tok = self.cfg, self.tokenizer
        items = []
        for ex in examples:
            if cfg.method in ("kpod", "cot"):
                enc = encode(ex, tok, self.template)
                w = None
                if cfg.method == "kpod" and cfg.use_weights:
                    if weights is None or ex.id not in weights:
                        raise KPODDataError(
                            f"method 'kpod' needs token weights for example {ex.id}"
                        )
                    w = weights[ex.id]
                items.append({"enc": enc, "w": w})
            elif cfg.method == "answer_only":
                items.append(
                    {
                        "enc": encode(ex, tok, method_template("answer_only", self.template)),
                        "w": None,
                    }
                )
            else:
                lab = encode(ex, tok, method_template("step_by_step", self.template))
                rt = Template(
                    self.template.question,
                    self.template.cue,
                    self.template.answer,
                    "[rationale] ",
                    True,
                    False,
                )
                items.append({"enc": lab, "w": None, "rat": encode(ex, tok, rt)})
        return items

    # ------------------------------------------------------------------ train
    def train(
        self,
        examples: list[CoTExample],
        *,
        weights: dict[str, np.ndarray] | None = None,
        schedule: Schedule | None = None,
        show_progress: bool = False,
        epochs: int | None = None,
        on_epoch_end: Any = None,
    ) -> list[dict[str, float]]:
        """Train for ``epochs`` (default ``cfg.epochs``) more epochs; returns the history.

        ``weights`` maps example id -> rationale-token weights aligned to this tokenizer's
        encoding (see :func:`align_weights`). ``schedule`` (rows in ``examples`` order) is
        required for ``kpod`` with ``progressive=True``. ``on_epoch_end(trainer)`` is called after
        every epoch (checkpointing).
        """
        cfg = self.cfg
        if not examples:
            raise ValueError("no training examples")
        prog = cfg.method == "kpod" and cfg.progressive
        if prog and schedule is None:
            raise ValueError("method 'kpod' with progressive=True needs a schedule")
        if prog and schedule.c.shape[1] != len(examples):
            raise ValueError(
                f"schedule has {schedule.c.shape[1]} questions, got {len(examples)} examples"
            )
        items = self._items(examples, weights)
        if self.seq2seq and cfg.method == "step_by_step":
            raise NotImplementedError("step_by_step is implemented for causal LMs")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        params, opt = self._params, self._opt
        dev = torch.device(cfg.device)
        n_epochs = cfg.epochs if epochs is None else epochs
        self.model.train()
        bar = progress(
            total=n_epochs * ((len(items) + cfg.batch_size - 1) // cfg.batch_size),
            desc=f"distill {cfg.method}",
            disable=not show_progress or None,
        )
        for _ in range(n_epochs):
            self.epoch += 1
            c_all = schedule.input_steps(self.epoch) if prog else np.zeros(len(items), np.int64)
            # one generator per epoch: a run resumed at epoch e sees the same batches
            order = np.random.default_rng([cfg.seed, self.epoch]).permutation(len(items))
            tot, out_tokens, n_b = 0.0, 0, 0
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b : b + cfg.batch_size][self.rank :: self.world]
                if len(idx) == 0:  # a short last batch: every rank must still join the all-reduce
                    idx = order[b : b + 1]
                loss, ntok = self._batch_loss(
                    [items[i] for i in idx], [int(c_all[i]) for i in idx], pad, dev
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                tot += float(loss.detach())
                out_tokens += ntok
                n_b += 1
                bar.update(1)
            rec = {"epoch": self.epoch, "loss": tot / max(1, n_b), "target_tokens": out_tokens,
                   "mean_input_steps": float(np.mean(c_all))}  # fmt: skip
            self.history.append(rec)
            if on_epoch_end is not None:
                on_epoch_end(self)
        bar.close()
        self.model.eval()
        return self.history

    @property
    def unwrapped(self) -> Any:
        """The student without a DDP wrapper (for saving and generation)."""
        return getattr(self.model, "module", self.model)

    def _batch_loss(self, items, cs, pad, dev) -> tuple[torch.Tensor, int]:
        cfg = self.cfg
        if self.seq2seq:
            xs, ys, lws = zip(
                *(
                    _seq2seq_pair(
                        it["enc"], c, it["w"], self.tokenizer, cfg.answer_weight, cfg.step_start
                    )
                    for it, c in zip(items, cs, strict=True)
                ),
                strict=True,
            )
            X, Xa, _ = _pad_batch([np.asarray(x) for x in xs], [np.zeros(len(x)) for x in xs], pad)
            Y, Ya, LW = _pad_batch([np.asarray(y) for y in ys], list(lws), pad)
            labels = Y.masked_fill(Ya == 0, -100).to(dev)
            out = self.model(input_ids=X.to(dev), attention_mask=Xa.to(dev), labels=labels)
            logp = torch.log_softmax(out.logits.float(), -1)
            nll = -logp.gather(-1, Y.to(dev).unsqueeze(-1)).squeeze(-1)
            return (nll * LW.to(dev)).sum(1).mean(), int((LW > 0).sum())
        seqs, lws = [], []
        for it, c in zip(items, cs, strict=True):
            seqs.append(it["enc"].input_ids)
            lws.append(
                causal_targets(
                    it["enc"],
                    c,
                    it["w"],
                    answer_weight=cfg.answer_weight,
                    weight_norm=cfg.weight_norm,
                    step_start=cfg.step_start,
                )
            )
        ids, att, lw = _pad_batch(seqs, lws, pad)
        logits = self.model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits
        loss = weighted_nll(logits, ids.to(dev), lw.to(dev)).mean()
        ntok = int((lw > 0).sum())
        if cfg.method == "step_by_step":
            rseqs = [it["rat"].input_ids for it in items]
            rlws = []
            for it in items:
                e = it["rat"]
                w = np.zeros(len(e.input_ids), np.float32)
                w[e.segment >= 0] = 1.0
                w[-1] = 1.0  # eos after the rationale
                rlws.append(w)
            rids, ratt, rlw = _pad_batch(rseqs, rlws, pad)
            rlogits = self.model(input_ids=rids.to(dev), attention_mask=ratt.to(dev)).logits
            rloss = weighted_nll(rlogits, rids.to(dev), rlw.to(dev)).mean()
            loss = cfg.sbs_alpha * loss + (1 - cfg.sbs_alpha) * rloss
            ntok += int((rlw > 0).sum())
        return loss, ntok


_ = PROMPT  # re-exported segment ids live in kpod.encoding
