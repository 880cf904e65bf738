"""Item and user texts as token ids (§3.2.2, Eq. 1-2).

Item ``v``: ``[CLS] w_1..w_K`` for an encoder, ``w_1..w_K </s>`` for a decoder, where the ``w``
are the tokens of the item text (``template``, default ``"{title}; "`` as the official code),
truncated to ``max_title_tokens`` (40).

User ``u``: the texts of the last ``history_len`` items, oldest first, concatenated without their
special tokens, with one special token for the whole sequence (front for an encoder, end for a
decoder). If the result exceeds ``max_user_tokens`` the *oldest* tokens are cut.

:func:`collate` pads a batch on the right or on the left; pooling in :mod:`llmrec.model` is
correct under both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["TitleTokens", "collate"]


class TitleTokens:
    """Token ids of every item text, computed once; index 0 (padding) is empty."""

    def __init__(
        self,
        tokenizer,
        titles: Sequence[str],
        *,
        template: str = "{title}; ",
        max_title_tokens: int = 40,
    ) -> None:
        if "{title}" not in template:
            raise ValueError(f"template must contain '{{title}}', got {template!r}")
        if max_title_tokens < 1:
            raise ValueError(f"max_title_tokens must be >= 1, got {max_title_tokens}")
        bad = [i for i, t in enumerate(titles) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(
                f"{len(bad)} item(s) have no title (first: item index {bad[0] + 1}); run the "
                f"pipeline's missing_title rule first"
            )
        texts = [template.format(title=t) for t in titles]
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        self.ids: list[list[int]] = [[]] + [list(x[:max_title_tokens]) for x in enc]
        self.template = template
        self.max_title_tokens = max_title_tokens

    def __len__(self) -> int:
        return len(self.ids) - 1

    def items(self, items: np.ndarray | Sequence[int]) -> list[list[int]]:
        return [self.ids[int(i)] for i in items]

    def users(self, hist: np.ndarray) -> list[list[int]]:
        out = []
        for row in np.asarray(hist):
            seq: list[int] = []
            for i in row:
                if i > 0:
                    seq.extend(self.ids[int(i)])
            out.append(seq)
        return out


def collate(
    seqs: Sequence[Sequence[int]],
    *,
    special_id: int,
    pad_id: int,
    kind: str,
    padding_side: str = "right",
    max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with the special token added as ``kind`` requires.

    An empty sequence becomes the special token alone (the documented empty-history rule).
    """
    if kind not in ("encoder", "decoder"):
        raise ValueError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    rows = []
    for s in seqs:
        s = list(s)
        if max_len is not None and len(s) > max_len - 1:
            s = s[len(s) - (max_len - 1) :]  # keep the most recent tokens
        rows.append([special_id, *s] if kind == "encoder" else [*s, special_id])
    width = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if padding_side == "right":
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        else:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask
