"""The keypoint view: a rationale with every token shaded by its learned weight (cf. Fig. 2)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

__all__ = ["keypoint_html"]


def _span(text: str, w: float) -> str:
    # white (w = 0) to deep orange (w = 1)
    g = int(255 - 150 * w)
    b = int(255 - 230 * w)
    return f'<span title="w={w:.3f}" style="background:rgb(255,{g},{b})">{html.escape(text)}</span>'


def keypoint_html(
    rationales: Sequence[str],
    offsets: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    *,
    titles: Sequence[str] | None = None,
) -> str:
    """A standalone HTML page: each rationale with its tokens coloured by weight.

    ``offsets[i]`` (n, 2) are token character spans in rationale i; ``weights[i]`` (n,) in [0, 1].
    """
    if not (len(rationales) == len(offsets) == len(weights)):
        raise ValueError("rationales, offsets and weights must have the same length")
    blocks = []
    for i, (r, offs, ws) in enumerate(zip(rationales, offsets, weights, strict=True)):
        offs = np.asarray(offs).reshape(-1, 2)
        ws = np.asarray(ws, dtype=float)
        if len(offs) != len(ws):
            raise ValueError(f"rationale {i}: {len(offs)} spans but {len(ws)} weights")
        if len(ws) and (ws.min() < 0 or ws.max() > 1):
            raise ValueError(f"rationale {i}: weights must lie in [0, 1]")
        parts, pos = [], 0
        for (s, e), w in sorted(zip(map(tuple, offs), ws, strict=True)):
            s, e = int(s), int(e)
            if s > pos:
                parts.append(html.escape(r[pos:s]))
            if e > max(s, pos):
                parts.append(_span(r[max(s, pos) : e], float(w)))
            pos = max(pos, e)
        parts.append(html.escape(r[pos:]))
        title = html.escape(titles[i]) if titles else f"example {i}"
        blocks.append(
            f"<h3>{title}</h3><p style='font-family:monospace;white-space:pre-wrap'>{''.join(parts)}</p>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>KPOD keypoint weights</title></head>"
        "<body><h2>Learned token weights (darker = kept more often)</h2>"
        + "".join(blocks)
        + "</body></html>\n"
    )
