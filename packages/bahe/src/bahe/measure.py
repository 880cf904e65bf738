"""Deterministic cost counters for one training step: FLOPs and saved-activation bytes.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``. The trap (dossier §7.11): on CPU
the counter does **not** see attention computed by SDPA (``scaled_dot_product_attention`` has
no CPU FLOP formula registered there, so only the linear layers are counted). Models measured
here must therefore use ``attn_implementation="eager"``, where attention is explicit
``matmul``/``bmm`` that the counter sees; :func:`count_flops` refuses an SDPA model unless told
otherwise, and :func:`bert_forward_flops` gives the closed form a test checks it against.

Saved-activation bytes come from ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd keeps for backward, deduplicated by storage and with parameters excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "attention_implementations",
    "bert_forward_flops",
    "count_flops",
    "saved_activation_bytes",
]


def attention_implementations(model: nn.Module) -> set[str]:
    """The attention implementations configured on ``model`` and its sub-models."""
    out = set()
    for m in model.modules():
        cfg = getattr(m, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        if impl is not None:
            out.add(str(impl))
    return out


def count_flops(
    fn: Callable[[], Any], model: nn.Module | None = None, *, allow_sdpa: bool = False
) -> int:
    """Total FLOPs of running ``fn()`` (forward, backward, whatever it does), counted exactly.

    With ``model`` given, refuse SDPA attention (uncounted on CPU) unless ``allow_sdpa``.
    """
    if model is not None and not allow_sdpa:
        impls = attention_implementations(model) - {"eager"}
        if impls:
            raise ValueError(
                f"attention implementation(s) {sorted(impls)} are not counted by FlopCounterMode on "
                "CPU (SDPA attention FLOPs are missed): build the model with "
                "attn_implementation='eager' for FLOP counts, or pass allow_sdpa=True"
            )
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def bert_forward_flops(n_layers: int, batch: int, seq: int, hidden: int, intermediate: int) -> int:
    """Closed-form forward FLOPs of ``n_layers`` BERT layers over ``[batch, seq]`` tokens
    (matmuls only, 2 FLOPs per multiply-add): Q, K, V and output projections
    ``4 * 2*b*s*h*h``, attention scores and weighted sum ``2 * 2*b*s*s*h``, feed-forward
    ``2 * 2*b*s*h*i``."""
    b, s, h, i = batch, seq, hidden, intermediate
    per_layer = 4 * 2 * b * s * h * h + 2 * 2 * b * s * s * h + 2 * 2 * b * s * h * i
    return n_layers * per_layer


def saved_activation_bytes(fn: Callable[[], Any], model: nn.Module | None = None) -> int:
    """Bytes of distinct tensors autograd saves for backward while ``fn()`` runs (forward only
    is enough), excluding ``model``'s parameters; tensors sharing a storage count once."""
    params = set()
    if model is not None:
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in params and ptr != 0:
                seen[ptr] = max(seen.get(ptr, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return int(sum(seen.values()))
