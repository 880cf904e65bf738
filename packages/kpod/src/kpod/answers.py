"""Answer normalisation and extraction (the "answer cleansing" every CoT distillation needs).

Numbers: ``"$1,000.50"`` -> ``"1000.5"``; ``"9 (apples)"`` -> ``"9"``; ``"3/4"`` -> ``"0.75"``.
Choices: ``"(B)"``, ``"answer is b"`` -> ``"B"``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from kpod.schema import KPODDataError

__all__ = ["extract_answer", "is_correct", "normalize_number"]

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?"
_NUM_RE = re.compile(_NUM)
_CUE_RE = re.compile(r"(?:answer is|answer:|####)\s*:?\s*(.*)", re.IGNORECASE | re.DOTALL)
_CHOICE_RE = re.compile(r"\(?\b([A-Ea-e])\b\)?")


def normalize_number(text: str) -> str | None:
    """The first number in ``text`` in canonical form (``"72"``, ``"0.5"``, ``"-3"``), or None.

    Commas between digit groups, currency signs and trailing units are dropped; a fraction
    ``a/b`` becomes its decimal value; integral values print without a decimal point.
    """
    m = _NUM_RE.search(text.replace("−", "-"))
    if m is None:
        return None
    s = m.group(0).replace("$", "").replace(" ", "").replace(",", "")
    try:
        if "/" in s:
            num, den = s.split("/")
            if int(den) == 0:
                return None
            value = Fraction(int(num), int(den))
        else:
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    out = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return out


def _join_split_digits(text: str) -> str:
    # tokenizers that split digits decode "72" as "7 2"; rejoin digit runs (and "1 , 000")
    return re.sub(r"(?<=\d) (?=[\d.,])|(?<=[.,]) (?=\d)", "", text)


def extract_answer(text: str, kind: str = "numeric") -> str | None:
    """The answer a generated text gives, or None when it gives none.

    Looks after the last "answer is" / "answer:" / "####" cue first; without a cue, takes the
    last number (numeric) or the last standalone letter A-E (choice) in the text.
    """
    if kind not in ("numeric", "choice", "text"):
        raise ValueError(f"kind must be numeric, choice or text, got {kind!r}")
    cues = list(_CUE_RE.finditer(text))
    tail = cues[-1].group(1) if cues else None
    if kind == "numeric":
        if tail is not None:
            tail = _join_split_digits(tail.split("\n")[0].strip())
            got = normalize_number(tail)
            if got is not None:
                return got
        nums = _NUM_RE.findall(text.replace("−", "-"))
        return normalize_number(nums[-1]) if nums else None
    if kind == "choice":
        src = tail.split("\n")[0] if tail is not None else text
        letters = _CHOICE_RE.findall(src)
        if not letters:
            return None
        return (letters[0] if tail is not None else letters[-1]).upper()
    if tail is not None:
        return tail.split("\n")[0].strip().rstrip(".").strip().lower() or None
    return None


def normalize_gold(answer: str, kind: str, *, where: str = "") -> str:
    """Canonical gold answer; raises :class:`KPODDataError` (naming ``where``) when unparseable."""
    if kind == "numeric":
        got = normalize_number(str(answer))
        if got is None:
            raise KPODDataError(f"{where}: cannot parse a number from the answer {answer!r}")
        return got
    if kind == "choice":
        s = str(answer).strip().strip("()").upper()
        if len(s) != 1 or not s.isalpha():
            raise KPODDataError(f"{where}: a choice answer must be one letter, got {answer!r}")
        return s
    s = str(answer).strip().lower()
    if not s:
        raise KPODDataError(f"{where}: empty answer")
    return s


def is_correct(pred: str | None, gold: str, kind: str = "numeric") -> bool:
    """Whether an extracted prediction equals the gold answer (numbers compared as values)."""
    if pred is None:
        return False
    if kind == "numeric":
        try:
            return abs(float(pred) - float(gold)) <= 1e-6 * max(1.0, abs(float(gold)))
        except ValueError:
            return False
    return pred.strip().lower() == gold.strip().lower()
