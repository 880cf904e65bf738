"""The example record every loader produces, and the data error every loader raises.

Sec. 3.1: a dataset of questions x with answers y and a teacher rationale r per question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANSWER_KINDS", "CoTExample", "KPODDataError"]

ANSWER_KINDS = ("numeric", "choice", "text")
ROLES = ("keypoint", "filler")


class KPODDataError(ValueError):
    """Bad input data: the message names the file, the line (1-based) and what is wrong."""


@dataclass(frozen=True)
class CoTExample:
    """One question with its teacher rationale and gold answer.

    Args:
        id: unique within a dataset.
        question: the question text x (for multiple choice, choices already appended).
        rationale: the teacher rationale r (no trailing "the answer is ..." sentence).
        answer: the gold answer y as text (normalised number for ``kind="numeric"``,
            a letter for ``"choice"``).
        kind: ``"numeric"``, ``"choice"`` or ``"text"``; decides answer extraction.
        choices: answer options (``"choice"`` only), in label order.
        source, split: provenance.
        roles: character spans ``(start, end, role)`` in ``rationale`` with a known role
            (``"keypoint"`` or ``"filler"``); only the synthetic task has them.
        step_hardness: planted hardness of each rationale step (synthetic task only).
    """

    id: str
    question: str
    rationale: str
    answer: str
    kind: str = "numeric"
    choices: tuple[str, ...] = ()
    source: str = ""
    split: str = ""
    roles: tuple[tuple[int, int, str], ...] = ()
    step_hardness: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise KPODDataError(f"example id must be a non-empty string, got {self.id!r}")
        if not self.question.strip():
            raise KPODDataError(f"example {self.id}: empty question")
        if not str(self.answer).strip():
            raise KPODDataError(f"example {self.id}: empty answer")
        if self.kind not in ANSWER_KINDS:
            raise KPODDataError(f"example {self.id}: kind must be one of {ANSWER_KINDS}")
        for s, e, role in self.roles:
            if not (0 <= s < e <= len(self.rationale)) or role not in ROLES:
                raise KPODDataError(f"example {self.id}: bad role span {(s, e, role)}")

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "rationale": self.rationale,
            "answer": self.answer,
            "kind": self.kind,
            "choices": list(self.choices),
            "source": self.source,
            "split": self.split,
            "role_start": [r[0] for r in self.roles],
            "role_end": [r[1] for r in self.roles],
            "role": [r[2] for r in self.roles],
            "step_hardness": list(self.step_hardness),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CoTExample:
        roles = tuple(
            (int(s), int(e), str(r))
            for s, e, r in zip(row["role_start"], row["role_end"], row["role"], strict=True)
        )
        return cls(
            id=str(row["id"]),
            question=row["question"],
            rationale=row["rationale"],
            answer=str(row["answer"]),
            kind=row["kind"],
            choices=tuple(row["choices"]),
            source=row["source"],
            split=row["split"],
            roles=roles,
            step_hardness=tuple(float(x) for x in row["step_hardness"]),
        )
