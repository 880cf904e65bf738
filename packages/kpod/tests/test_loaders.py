from __future__ import annotations

import json

import pytest
from kpod import (
    KPODDataError,
    attach_teacher,
    load_asdiv,
    load_csqa,
    load_dataset,
    load_gsm8k,
    load_mcckd,
    load_rationales_jsonl,
    load_svamp,
)

# our own rationales in GSM8K's format (no third-party text)
OWN = [
    {
        "question": "Ann has 3 red pens and 4 blue pens. How many pens?",
        "answer": "Ann has 3+4 = <<3+4=7>>7 pens.\n#### 7",
    },
    {
        "question": "A box holds 12 eggs. How many in 2 boxes?",
        "answer": "Two boxes hold 12*2 = <<12*2=24>>24 eggs. That is $2.50 each.\n#### 24",
    },
]


def _write_jsonl(path, rows, raw_lines=()):
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def test_gsm8k_format(tmp_path):
    exs = load_gsm8k(_write_jsonl(tmp_path / "g.jsonl", OWN), split="train")
    assert [e.answer for e in exs] == ["7", "24"]
    assert "<<" not in exs[0].rationale and "#### " not in exs[0].rationale
    assert exs[0].rationale == "Ann has 3+4 = 7 pens."
    kept = load_gsm8k(tmp_path / "g.jsonl", keep_calculator=True)
    assert "<<3+4=7>>" in kept[0].rationale


def test_malformed_line_is_named_by_number(tmp_path):
    p = _write_jsonl(tmp_path / "g.jsonl", OWN, ['{"question": "x", "answer": '])
    with pytest.raises(KPODDataError, match=r"line 3: malformed JSON"):
        load_gsm8k(p)


def test_empty_rationale_and_unparseable_answer(tmp_path):
    p = _write_jsonl(tmp_path / "a.jsonl", [{"question": "q?", "answer": "  \n#### 5"}])
    with pytest.raises(KPODDataError, match="line 1: empty rationale"):
        load_gsm8k(p)
    p = _write_jsonl(
        tmp_path / "b.jsonl", [OWN[0], {"question": "q?", "answer": "so 3.\n#### many"}]
    )
    with pytest.raises(KPODDataError, match="line 2: cannot parse a number"):
        load_gsm8k(p)
    p = _write_jsonl(tmp_path / "c.jsonl", [{"question": "q?", "answer": "no final line"}])
    with pytest.raises(KPODDataError, match="no '#### <number>'"):
        load_gsm8k(p)
    p = _write_jsonl(tmp_path / "d.jsonl", [{"answer": "x\n#### 1"}])
    with pytest.raises(KPODDataError, match="missing field 'question'"):
        load_gsm8k(p)
    with pytest.raises(KPODDataError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_other_formats(tmp_path):
    (tmp_path / "s.json").write_text(
        json.dumps(
            [
                {
                    "ID": "s1",
                    "Body": "Tom has 3 apples.",
                    "Question": "He eats 1. How many left?",
                    "Equation": "( 3 - 1 )",
                    "Answer": 2.0,
                }
            ]
        )
    )
    sv = load_svamp(tmp_path / "s.json")
    assert sv[0].answer == "2" and sv[0].id == "s1" and "3 - 1" in sv[0].rationale
    (tmp_path / "a.xml").write_text(
        "<Machine><ProblemSet><Problem ID='p1'><Body>Sue has 4 cats.</Body><Question>How many legs?</Question><Solution-Type>Mult</Solution-Type><Answer>16 (legs)</Answer><Formula>4*4=16</Formula></Problem></ProblemSet></Machine>"
    )
    asd = load_asdiv(tmp_path / "a.xml")
    assert asd[0].answer == "16" and asd[0].id == "p1"
    (tmp_path / "bad.xml").write_text("<Machine><Problem>")
    with pytest.raises(KPODDataError, match="cannot parse XML"):
        load_asdiv(tmp_path / "bad.xml")
    cq = {
        "id": "c1",
        "question": {
            "stem": "Where do fish live?",
            "choices": [{"label": "A", "text": "sea"}, {"label": "B", "text": "sky"}],
        },
        "answerKey": "A",
        "rationale": "Fish swim in water. The sea is water.",
    }
    c = load_csqa(_write_jsonl(tmp_path / "c.jsonl", [cq]))
    assert c[0].kind == "choice" and c[0].answer == "A" and "(B) sky" in c[0].question
    bad = dict(cq, answerKey="E")
    with pytest.raises(KPODDataError, match="not one of the labels"):
        load_csqa(_write_jsonl(tmp_path / "c2.jsonl", [bad]))
    (tmp_path / "m.json").write_text(
        json.dumps(
            [{"instruction": "2+2?", "output": ["2 and 2 make 4.", "Add them: 4."], "label": "4"}]
        )
    )
    m = load_mcckd(tmp_path / "m.json")
    assert len(m) == 2 and {e.answer for e in m} == {"4"}
    g = load_rationales_jsonl(
        _write_jsonl(
            tmp_path / "r.jsonl",
            [{"uid": "x", "q": "1+1?", "cot": "One plus one is 2.", "answer": "2"}],
        ),
        columns={"id": "uid", "question": "q", "rationale": "cot"},
    )
    assert g[0].id == "x" and g[0].rationale == "One plus one is 2."
    dup = [{"id": "x", "question": "q", "rationale": "r.", "answer": "1"}] * 2
    with pytest.raises(KPODDataError, match="line 2: duplicate id"):
        load_rationales_jsonl(_write_jsonl(tmp_path / "dup.jsonl", dup))
    with pytest.raises(KPODDataError, match="unknown data format"):
        load_dataset("parquet", tmp_path / "x")


def test_attach_teacher_filters_wrong_rationales(tmp_path):
    exs = load_gsm8k(_write_jsonl(tmp_path / "g.jsonl", OWN))
    teacher = [
        {"id": exs[0].id, "rationale": "3 and 4 make 7. The answer is 7."},
        {"id": exs[1].id, "rationale": "12 times 2 is 25.", "teacher_answer": "25"},
    ]
    kept, counts = attach_teacher(exs, _write_jsonl(tmp_path / "t.jsonl", teacher))
    assert counts == {"kept": 1, "wrong": 1, "missing": 0}
    assert kept[0].rationale == "3 and 4 make 7."
    kept, counts = attach_teacher(exs, tmp_path / "t.jsonl", filter_wrong=False)
    assert counts["kept"] == 2


def test_real_gsm8k(gsm8k):
    train = load_gsm8k(gsm8k / "train.jsonl", split="train")
    test = load_gsm8k(gsm8k / "test.jsonl", split="test")
    assert (len(train), len(test)) == (7473, 1319)
    assert all(e.answer and e.rationale for e in train)
    assert not any("<<" in e.rationale for e in train)
