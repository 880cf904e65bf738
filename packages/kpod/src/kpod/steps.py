"""Rationale step segmentation (Sec. 3.4: "steps are split on the symbol '.'"), made robust.

A plain split on "." breaks decimals ("0.83 hours"), currency ("$9.96"), abbreviations ("Mr.
Smith"), numbered lists ("1. First ...") and GSM8K's calculator annotations ("<<12/60=0.2>>").
:func:`segment` returns character spans of the steps; callers tokenise the whole text once and
assign tokens to steps by their character offsets, so no step is ever re-tokenised.

Rules (``mode="sentence"``, the default):

* a boundary is a newline, or ``.``/``!``/``?`` followed by whitespace or the end of the text;
* never inside ``<<...>>``; never a ``.`` between digits; never after a known abbreviation or a
  single capital initial; never after a list number at the start of a line ("1.", "Step 2.");
* a segment holding no letter or digit (e.g. a lone "Step 1:" header line) joins the next one;
* the final "Therefore, the answer is ..." / "#### 72" sentence is not a step
  (``drop_answer=True``).

``mode="period"`` is the paper's literal rule (split after every ``.``), kept for comparison;
``mode="line"`` splits on newlines only.
"""

from __future__ import annotations

import re

__all__ = ["SEGMENT_MODES", "segment", "steps_text"]

SEGMENT_MODES = ("sentence", "period", "line")

_ABBREV = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "jr",
    "sr",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "no",
    "approx",
    "min",
    "hr",
    "hrs",
    "ft",
    "oz",
    "lb",
    "lbs",
    "sq",
    "mt",
    "prof",
}
_ANSWER_RE = re.compile(
    r"^\s*(?:####|(?:so,?\s+|thus,?\s+|hence,?\s+)?(?:therefore,?\s+)?the\s+(?:final\s+)?answer\s+is\b)",
    re.IGNORECASE,
)
_LIST_RE = re.compile(r"(?:^|\n)[ \t]*(?:step\s*)?\d{1,3}$", re.IGNORECASE)


def _protected(text: str) -> list[bool]:
    prot = [False] * len(text)
    for m in re.finditer(r"<<.*?>>", text, flags=re.DOTALL):
        for i in range(m.start(), m.end()):
            prot[i] = True
    return prot


def _is_boundary(text: str, i: int, prot: list[bool]) -> bool:
    ch = text[i]
    if prot[i]:
        return False
    if ch == "\n":
        return True
    if ch not in ".!?":
        return False
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt and not nxt.isspace():
        return False  # "0.83", "e.g.x", "$9.96": no whitespace after the dot
    if ch == ".":
        j = i
        while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
            j -= 1
        word = text[j:i].lower()
        if word in _ABBREV:
            return False
        if len(word) == 1 and text[j].isupper() and (j == 0 or text[j - 1] == " "):
            return False  # an initial "J. Smith"
        if _LIST_RE.search(text[:i]):
            return False  # "1. first step", "Step 2. ..."
    return True


def segment(
    rationale: str, *, mode: str = "sentence", drop_answer: bool = True
) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the steps of ``rationale``, in order.

    Spans exclude surrounding whitespace, never overlap, and every letter or digit of the
    rationale (except a dropped answer sentence) lies in exactly one span. Returns ``[]`` for a
    rationale without any letter or digit.
    """
    if mode not in SEGMENT_MODES:
        raise ValueError(f"mode must be one of {SEGMENT_MODES}, got {mode!r}")
    prot = _protected(rationale)
    raw: list[tuple[int, int]] = []
    start = 0
    for i, ch in enumerate(rationale):
        if mode == "line":
            cut = ch == "\n"
        elif mode == "period":
            cut = ch == "." or ch == "\n"
        else:
            cut = _is_boundary(rationale, i, prot)
        if cut:
            raw.append((start, i + 1 if ch != "\n" else i))
            start = i + 1
    raw.append((start, len(rationale)))
    # strip whitespace
    spans = []
    for s, e in raw:
        while s < e and rationale[s].isspace():
            s += 1
        while e > s and rationale[e - 1].isspace():
            e -= 1
        if s < e:
            spans.append((s, e))
    # merge contentless segments ("Step 1:", "-", "1.") into the next one
    merged: list[tuple[int, int]] = []
    pending: int | None = None
    for s, e in spans:
        has_content = any(c.isalnum() for c in rationale[s:e])
        is_header = bool(
            re.fullmatch(r"\s*(?:step\s*\d+\s*[:.)]?|\d+\s*[.)])\s*", rationale[s:e], re.IGNORECASE)
        )
        if not has_content or is_header:
            pending = s if pending is None else pending
            continue
        merged.append((pending if pending is not None else s, e))
        pending = None
    if pending is not None and merged:
        merged[-1] = (merged[-1][0], spans[-1][1])
    if (
        drop_answer
        and len(merged) > 1
        and _ANSWER_RE.match(rationale[merged[-1][0] : merged[-1][1]])
    ):
        merged.pop()
    return merged


def steps_text(rationale: str, **kwargs) -> list[str]:
    """The text of each step (convenience over :func:`segment`)."""
    return [rationale[s:e] for s, e in segment(rationale, **kwargs)]
