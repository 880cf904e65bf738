"""Tokenise each example once and know, for every token, which part of the text it belongs to.

The training text follows the paper's template (Sec. 3.1)::

    Q: <question>
    A: Let's think step by step.
    <rationale>
    Therefore, the answer is <answer>.

Each token gets a segment id from its character offsets: ``PROMPT`` (-1) for everything before
the rationale, ``k >= 0`` for rationale step k (a token belongs to the step whose span its first non-space
character falls in, or to the step before the gap it falls in), ``ANSWER`` (-2) for the answer
sentence and the end-of-sequence token. Moving the first c steps of a rationale into the input
(Sec. 3.4) is then a change of *labels*, never a re-tokenisation (no tokenisation drift).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kpod.schema import CoTExample, KPODDataError
from kpod.steps import segment

__all__ = ["ANSWER", "PROMPT", "Encoded", "Template", "encode", "encode_all", "wants_bos"]

PROMPT = -1
ANSWER = -2


@dataclass(frozen=True)
class Template:
    """The text layout of one training/generation sequence.

    ``task_prefix`` is prepended to the question (distilling step-by-step uses ``"[label] "`` and
    ``"[rationale] "``). With ``with_rationale=False`` the sequence is prompt + answer
    (answer-only fine-tuning); with ``with_answer=False`` it is prompt + rationale.
    """

    question: str = "Q: {question}\nA:"
    cue: str = " Let's think step by step.\n"
    answer: str = "\nTherefore, the answer is {answer}."
    task_prefix: str = ""
    with_rationale: bool = True
    with_answer: bool = True

    def __post_init__(self) -> None:
        if "{question}" not in self.question or "{answer}" not in self.answer:
            raise ValueError("template needs {question} in question and {answer} in answer")
        if not (self.with_rationale or self.with_answer):
            raise ValueError("a template needs a rationale, an answer or both")

    def prompt(self, ex: CoTExample) -> str:
        """The text a student is given at generation time."""
        p = self.task_prefix + self.question.format(question=ex.question)
        return p + (self.cue if self.with_rationale else " ")

    def answer_only(self) -> Template:
        return Template(
            self.question, self.cue, self.answer.lstrip("\n"), self.task_prefix, False, True
        )


@dataclass
class Encoded:
    """One example tokenised once. Arrays are numpy int64/float32 of length ``len(input_ids)``."""

    id: str
    input_ids: np.ndarray
    offsets: np.ndarray  # (L, 2) character offsets into ``text``
    segment: np.ndarray  # PROMPT, ANSWER or step index
    text: str
    rationale_start: int  # character offset of the rationale in ``text``
    n_steps: int
    step_spans: list[tuple[int, int]] = field(default_factory=list)  # in rationale coordinates
    roles: np.ndarray | None = None  # 1 keypoint, 0 filler, -1 unlabelled (rationale tokens)
    answer_value_start: int = -1  # character offset of the answer value in ``text``
    rationale_end: int = -1  # character offset just after the rationale in ``text``

    @property
    def answer_label_mask(self) -> np.ndarray:
        """Tokens of the answer value and the final end-of-sequence token (Eq. 5's targets)."""
        if self.answer_value_start < 0:
            return np.zeros(len(self.input_ids), dtype=bool)
        starts = np.array(
            [s + len(self.text[s:e]) - len(self.text[s:e].lstrip()) for s, e in self.offsets]
        )
        m = (self.segment == ANSWER) & (starts >= self.answer_value_start)
        m[-1] = True
        return m

    @property
    def rationale_tokens(self) -> np.ndarray:
        """Indices of the rationale's tokens, in order."""
        return np.nonzero(self.segment >= 0)[0]

    def step_tokens(self, k: int) -> np.ndarray:
        return np.nonzero(self.segment == k)[0]

    def rationale_offsets(self) -> np.ndarray:
        """Character offsets of the rationale tokens relative to the rationale."""
        return self.offsets[self.rationale_tokens] - self.rationale_start


def wants_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself starts sequences with its BOS token (we follow it)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _tok_call(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode(
    ex: CoTExample,
    tokenizer: Any,
    template: Template | None = None,
    *,
    segment_mode: str = "sentence",
    add_bos: bool | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Tokenise ``ex`` with ``template`` and label every token with its segment.

    Raises :class:`KPODDataError` for an empty rationale (when the template needs one) or when the
    sequence exceeds ``max_length`` tokens (nothing is silently truncated).
    """
    template = template or Template()
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("kpod needs a fast tokenizer (offsets); got a slow one")
    prompt = template.prompt(ex)
    spans: list[tuple[int, int]] = []
    if template.with_rationale:
        spans = segment(ex.rationale, mode=segment_mode)
        if not spans:
            raise KPODDataError(f"example {ex.id}: empty rationale (no step to distil)")
        rationale = ex.rationale
    else:
        rationale = ""
    tail = template.answer.format(answer=ex.answer) if template.with_answer else ""
    text = prompt + rationale + tail
    r0, r1 = len(prompt), len(prompt) + len(rationale)
    value_start = r1 + template.answer.index("{answer}") if template.with_answer else -1
    ids, offs = _tok_call(tokenizer, text)
    seg = np.full(len(ids), PROMPT, dtype=np.int64)
    starts = np.array([s for s, _ in spans], dtype=np.int64) + r0
    for i, (s, e) in enumerate(offs):
        if e <= s:  # zero-width piece: attach to the previous token's segment
            seg[i] = seg[i - 1] if i else PROMPT
            continue
        piece = text[s:e]
        if piece.strip():  # a token with leading whitespace ("\nword", " word") goes by its word
            s += len(piece) - len(piece.lstrip())
        if s >= r1:
            seg[i] = ANSWER
        elif s >= r0 and spans:
            seg[i] = max(0, int(np.searchsorted(starts, s, side="right")) - 1)
    if add_bos is None:
        add_bos = wants_bos(tokenizer)
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
        offs = [(0, 0), *offs]
        seg = np.concatenate([[PROMPT], seg])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs an eos token")
    ids = [*ids, tokenizer.eos_token_id]
    offs = [*offs, (len(text), len(text))]
    seg = np.concatenate([seg, [ANSWER if template.with_answer else seg[-1]]])
    if max_length is not None and len(ids) > max_length:
        raise KPODDataError(f"example {ex.id}: {len(ids)} tokens exceed max_length={max_length}")
    offsets = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
    roles = None
    if ex.roles and template.with_rationale:
        roles = np.full(len(ids), -1, dtype=np.int64)
        for i in np.nonzero(seg >= 0)[0]:
            s, e = offsets[i] - r0
            for rs, re_, role in ex.roles:
                if s < re_ and e > rs and ex.rationale[max(s, rs) : min(e, re_)].strip():
                    roles[i] = 1 if role == "keypoint" else 0
                    break
    return Encoded(
        id=ex.id,
        input_ids=np.asarray(ids, dtype=np.int64),
        offsets=offsets,
        segment=seg,
        text=text,
        rationale_start=r0,
        n_steps=len(spans),
        step_spans=spans,
        roles=roles,
        answer_value_start=value_start,
        rationale_end=r1,
    )


def encode_all(
    examples: list[CoTExample], tokenizer: Any, template: Template | None = None, **kwargs: Any
) -> list[Encoded]:
    return [encode(ex, tokenizer, template, **kwargs) for ex in examples]
