"""Loaders for the data sets KPOD uses (Sec. 4.1) and for generic teacher rationales.

Every loader returns ``list[CoTExample]`` and raises :class:`KPODDataError` naming the file and
the 1-based line (jsonl) or record index (json/xml) of a bad record: malformed JSON, a missing
field, an empty rationale or an answer that does not parse.

* :func:`load_gsm8k` - GSM8K jsonl ``{"question", "answer"}``; the answer holds the rationale,
  calculator annotations ``<<48/2=24>>`` and a final ``#### 72`` line. The gold rationale can
  stand in for a teacher's when no teacher rationales are at hand.
* :func:`load_svamp` - SVAMP json ``[{"Body", "Question", "Equation", "Answer", "ID"?}]``.
* :func:`load_asdiv` - ASDiv xml (``<Problem ID><Body/><Question/><Answer>9 (apples)</Answer>
  <Formula/>``) or the same fields as json.
* :func:`load_csqa` - CommonsenseQA jsonl (``question.stem``, ``question.choices``,
  ``answerKey``); rationale from a ``rationale`` field or a teacher file.
* :func:`load_mcckd` - MCC-KD json ``[{"instruction", "output": [rationales], "label"}]``
  (the splits and GPT-3.5 rationales KPOD uses); one example per (question, rationale).
* :func:`load_rationales_jsonl` - generic ``{"id", "question", "rationale", "answer"}`` jsonl,
  with a column mapping.
* :func:`attach_teacher` - join teacher outputs ``{"id", "rationale", "teacher_answer"?}`` by id,
  optionally keeping only rationales whose answer matches the gold one (Sec. A5.9 choice).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kpod.answers import extract_answer, is_correct, normalize_gold
from kpod.schema import CoTExample, KPODDataError

__all__ = [
    "attach_teacher",
    "load_asdiv",
    "load_csqa",
    "load_dataset",
    "load_gsm8k",
    "load_mcckd",
    "load_rationales_jsonl",
    "load_svamp",
    "strip_calculator",
]

_CALC_RE = re.compile(r"<<[^<>]*>>")
_ANSWER_SENTENCE_RE = re.compile(
    r"\s*(?:therefore,?\s+)?the\s+(?:final\s+)?answer\s+is\b.*$", re.IGNORECASE | re.DOTALL
)


def strip_calculator(text: str) -> str:
    """Remove GSM8K calculator annotations ``<<48/2=24>>``."""
    return _CALC_RE.sub("", text)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise KPODDataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise KPODDataError(f"{path}, line {n}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise KPODDataError(f"{path}, line {n}: expected a JSON object")
            yield n, rec


def _read_json_list(path: Path) -> list[Any]:
    if not path.is_file():
        raise KPODDataError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KPODDataError(f"{path}: malformed JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(doc, list):
        raise KPODDataError(f"{path}: expected a JSON list of records")
    return doc


def _field(rec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in rec or rec[key] is None:
        raise KPODDataError(f"{where}: missing field {key!r}")
    return rec[key]


def _rationale(text: str, where: str) -> str:
    r = _ANSWER_SENTENCE_RE.sub("", text).strip()
    if not any(c.isalnum() for c in r):
        raise KPODDataError(f"{where}: empty rationale")
    return r


def load_gsm8k(
    path: str | Path, *, split: str = "", keep_calculator: bool = False, limit: int | None = None
) -> list[CoTExample]:
    """GSM8K jsonl -> examples whose rationale is the gold solution (annotations stripped)."""
    path = Path(path)
    out = []
    for n, rec in _iter_jsonl(path):
        where = f"{path}, line {n}"
        q, a = str(_field(rec, "question", where)), str(_field(rec, "answer", where))
        if "####" not in a:
            raise KPODDataError(f"{where}: the answer has no '#### <number>' final line")
        body, final = a.rsplit("####", 1)
        gold = normalize_gold(final, "numeric", where=where)
        r = body if keep_calculator else strip_calculator(body)
        out.append(
            CoTExample(
                id=str(rec.get("id", f"{split or 'gsm8k'}-{n}")),
                question=q.strip(),
                rationale=_rationale(r, where),
                answer=gold,
                source="gsm8k",
                split=split,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def load_svamp(path: str | Path, *, split: str = "") -> list[CoTExample]:
    """SVAMP json; the rationale is the equation ("( 3 + 5 )") unless a teacher's is attached."""
    path = Path(path)
    out = []
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path}, record {i}"
        if not isinstance(rec, dict):
            raise KPODDataError(f"{where}: expected a JSON object")
        body, qn = str(_field(rec, "Body", where)), str(_field(rec, "Question", where))
        gold = normalize_gold(str(_field(rec, "Answer", where)), "numeric", where=where)
        eq = str(rec.get("Equation", "")).strip()
        out.append(
            CoTExample(
                id=str(rec.get("ID", f"svamp-{i}")),
                question=f"{body.strip()} {qn.strip()}",
                rationale=f"{eq} = {gold}." if eq else "",
                answer=gold,
                source="svamp",
                split=split,
            )
        )
    return out


def load_asdiv(path: str | Path, *, split: str = "") -> list[CoTExample]:
    """ASDiv xml (or json with the same field names)."""
    path = Path(path)
    records: list[tuple[str, dict[str, str]]] = []
    if path.suffix.lower() == ".xml":
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            raise KPODDataError(f"{path}: cannot parse XML ({e})") from None
        for i, p in enumerate(root.iter("Problem")):
            rec = {c.tag: (c.text or "") for c in p}
            records.append((p.get("ID", f"asdiv-{i}"), rec))
    else:
        for i, rec in enumerate(_read_json_list(path)):
            if not isinstance(rec, dict):
                raise KPODDataError(f"{path}, record {i}: expected a JSON object")
            records.append((str(rec.get("ID", f"asdiv-{i}")), rec))
    out = []
    for i, (pid, rec) in enumerate(records):
        where = f"{path}, record {i} ({pid})"
        body, qn = str(_field(rec, "Body", where)), str(_field(rec, "Question", where))
        ans = str(_field(rec, "Answer", where))
        gold = normalize_gold(ans, "numeric", where=where)
        formula = str(rec.get("Formula", "")).strip()
        out.append(
            CoTExample(
                id=pid,
                question=f"{body.strip()} {qn.strip()}",
                rationale=f"{formula}." if formula else "",
                answer=gold,
                source="asdiv",
                split=split,
            )
        )
    return out


def load_csqa(path: str | Path, *, split: str = "") -> list[CoTExample]:
    """CommonsenseQA jsonl; choices are appended to the question as "(A) ... (B) ..."."""
    path = Path(path)
    out = []
    for n, rec in _iter_jsonl(path):
        where = f"{path}, line {n}"
        q = _field(rec, "question", where)
        if not isinstance(q, dict):
            raise KPODDataError(f"{where}: 'question' must be an object with stem and choices")
        stem = str(_field(q, "stem", where))
        choices = _field(q, "choices", where)
        labels = [str(c.get("label", "")).upper() for c in choices]
        texts = [str(c.get("text", "")) for c in choices]
        gold = normalize_gold(str(_field(rec, "answerKey", where)), "choice", where=where)
        if gold not in labels:
            raise KPODDataError(f"{where}: answerKey {gold!r} is not one of the labels {labels}")
        opts = " ".join(f"({lab}) {t}" for lab, t in zip(labels, texts, strict=True))
        out.append(
            CoTExample(
                id=str(rec.get("id", f"csqa-{n}")),
                question=f"{stem.strip()} Answer choices: {opts}",
                rationale=str(rec.get("rationale", "")).strip(),
                answer=gold,
                kind="choice",
                choices=tuple(texts),
                source="csqa",
                split=split,
            )
        )
    return out


def load_mcckd(
    path: str | Path, *, split: str = "", kind: str = "numeric", all_rationales: bool = True
) -> list[CoTExample]:
    """MCC-KD json: ``instruction`` (question), ``output`` (list of teacher rationales), ``label``."""
    path = Path(path)
    out = []
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path}, record {i}"
        if not isinstance(rec, dict):
            raise KPODDataError(f"{where}: expected a JSON object")
        q = str(_field(rec, "instruction", where))
        outs = _field(rec, "output", where)
        outs = [outs] if isinstance(outs, str) else list(outs)
        if not outs:
            raise KPODDataError(f"{where}: 'output' holds no rationale")
        gold = normalize_gold(str(_field(rec, "label", where)), kind, where=where)
        for j, r in enumerate(outs if all_rationales else outs[:1]):
            out.append(
                CoTExample(
                    id=f"{rec.get('id', i)}-{j}",
                    question=q.strip(),
                    rationale=_rationale(str(r), f"{where}, rationale {j}"),
                    answer=gold,
                    kind=kind,
                    source="mcckd",
                    split=split,
                )
            )
    return out


def load_rationales_jsonl(
    path: str | Path,
    *,
    split: str = "",
    kind: str = "numeric",
    columns: Mapping[str, str] | None = None,
) -> list[CoTExample]:
    """Generic jsonl: one object per line with id, question, rationale, answer.

    ``columns`` maps our names to yours, e.g. ``{"question": "prompt", "rationale": "cot"}``.
    """
    path = Path(path)
    col = {"id": "id", "question": "question", "rationale": "rationale", "answer": "answer"}
    col.update(columns or {})
    out, seen = [], set()
    for n, rec in _iter_jsonl(path):
        where = f"{path}, line {n}"
        ex_id = str(rec.get(col["id"], f"line-{n}"))
        if ex_id in seen:
            raise KPODDataError(f"{where}: duplicate id {ex_id!r}")
        seen.add(ex_id)
        out.append(
            CoTExample(
                id=ex_id,
                question=str(_field(rec, col["question"], where)).strip(),
                rationale=_rationale(str(_field(rec, col["rationale"], where)), where),
                answer=normalize_gold(str(_field(rec, col["answer"], where)), kind, where=where),
                kind=kind,
                source=path.stem,
                split=split,
            )
        )
    return out


def attach_teacher(
    examples: list[CoTExample], teacher_jsonl: str | Path, *, filter_wrong: bool = True
) -> tuple[list[CoTExample], dict[str, int]]:
    """Replace rationales by a teacher's (jsonl ``{"id", "rationale"}``), joined by id.

    With ``filter_wrong`` a rationale whose answer (``teacher_answer`` field, else extracted from
    the rationale) differs from the gold answer is dropped. Returns the examples and counts
    ``{"kept", "wrong", "missing"}``.
    """
    from dataclasses import replace

    path = Path(teacher_jsonl)
    by_id: dict[str, tuple[int, dict[str, Any]]] = {}
    for n, rec in _iter_jsonl(path):
        by_id[str(_field(rec, "id", f"{path}, line {n}"))] = (n, rec)
    kept, wrong, missing = [], 0, 0
    for ex in examples:
        if ex.id not in by_id:
            missing += 1
            continue
        n, rec = by_id[ex.id]
        where = f"{path}, line {n}"
        text = str(_field(rec, "rationale", where))
        pred = rec.get("teacher_answer")
        pred = extract_answer(text, ex.kind) if pred is None else str(pred)
        if filter_wrong and not is_correct(
            extract_answer(f"answer is {pred}", ex.kind), ex.answer, ex.kind
        ):
            wrong += 1
            continue
        kept.append(replace(ex, rationale=_rationale(text, where)))
    return kept, {"kept": len(kept), "wrong": wrong, "missing": missing}


LOADERS = {
    "gsm8k": load_gsm8k,
    "svamp": load_svamp,
    "asdiv": load_asdiv,
    "csqa": load_csqa,
    "mcckd": load_mcckd,
    "jsonl": load_rationales_jsonl,
}


def load_dataset(fmt: str, path: str | Path, **kwargs: Any) -> list[CoTExample]:
    """Dispatch by format name (``gsm8k``, ``svamp``, ``asdiv``, ``csqa``, ``mcckd``, ``jsonl``)."""
    if fmt not in LOADERS:
        raise KPODDataError(f"unknown data format {fmt!r}; known: {sorted(LOADERS)}")
    return LOADERS[fmt](path, **kwargs)
