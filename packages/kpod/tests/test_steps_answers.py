from __future__ import annotations

import pytest
from kpod import extract_answer, is_correct, normalize_number, segment, steps_text
from kpod.loaders import load_gsm8k


def _covers_all(text: str, spans) -> bool:
    covered = [False] * len(text)
    for s, e in spans:
        for i in range(s, e):
            if covered[i]:
                return False  # overlap
            covered[i] = True
    return all(covered[i] for i, c in enumerate(text) if c.isalnum())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He walks 0.83 hours. Then he rests.", ["He walks 0.83 hours.", "Then he rests."]),
        ("It costs $9.96 in total. So he pays.", ["It costs $9.96 in total.", "So he pays."]),
        ("Mr. Smith has 3 cats. Dr. Who has 2.", ["Mr. Smith has 3 cats.", "Dr. Who has 2."]),
        (
            "Step 1: Add 2 and 3.\nStep 2: Double it.",
            ["Step 1: Add 2 and 3.", "Step 2: Double it."],
        ),
        (
            "Step 1:\nAdd 2 and 3.\nStep 2:\nDouble it.",
            ["Step 1:\nAdd 2 and 3.", "Step 2:\nDouble it."],
        ),
        ("1. First add. 2. Then double.", ["1. First add.", "2. Then double."]),
        (
            "She has 48/2 = <<48/2=24>>24 clips. Then 0.5 more.",
            ["She has 48/2 = <<48/2=24>>24 clips.", "Then 0.5 more."],
        ),
        (
            "Speed is <<12/60=0.2>>0.2 per min.\nTotal 10.",
            ["Speed is <<12/60=0.2>>0.2 per min.", "Total 10."],
        ),
        ("He has 2. Then 3. Therefore, the answer is 5.", ["He has 2.", "Then 3."]),
        ("Half is 5.\n#### 5", ["Half is 5."]),
        ("No period at the end", ["No period at the end"]),
    ],
)
def test_segment_edge_cases(text, expected):
    assert steps_text(text) == expected
    spans = segment(text, drop_answer=False)
    assert _covers_all(text, spans)


def test_segment_period_mode_is_the_papers_literal_rule():
    assert steps_text("It costs $9.96 now. Ok.", mode="period") == [
        "It costs $9.",
        "96 now.",
        "Ok.",
    ]


def test_segment_empty_and_bad_mode():
    assert segment("   \n ") == []
    with pytest.raises(ValueError, match="mode"):
        segment("a.", mode="words")


def test_segment_real_gsm8k_rationales(gsm8k):
    exs = load_gsm8k(gsm8k / "train.jsonl", limit=500, keep_calculator=True)
    multi = 0
    for ex in exs:
        spans = segment(ex.rationale, drop_answer=False)
        assert spans, ex.id
        assert _covers_all(ex.rationale, spans), ex.id
        for s, e in spans:  # never cut inside a calculator annotation or a decimal
            piece = ex.rationale[s:e]
            assert piece.count("<<") == piece.count(">>"), (ex.id, piece)
            assert not piece[0].isdigit() or ex.rationale[s - 1 : s] != ".", (ex.id, piece)
        lines = [ln for ln in ex.rationale.split("\n") if ln.strip()]
        assert len(spans) >= len(lines)
        multi += len(spans) > len(lines)
    assert multi > 0  # some lines hold several sentences


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("72", "72"),
        ("$1,000.50", "1000.5"),
        ("9 (apples)", "9"),
        ("3/4", "0.75"),
        ("-3", "-3"),
        ("5.0", "5"),
        ("none", None),
        ("1/0", None),
    ],
)
def test_normalize_number(text, want):
    assert normalize_number(text) == want


def test_extract_answer():
    assert extract_answer("so 3 + 4 = 7. Therefore, the answer is 7.") == "7"
    assert extract_answer("blah 12 then 18") == "18"
    assert extract_answer("the answer is 1 2 apples") == "12"  # digit-split decoders
    assert extract_answer("#### 1,234") == "1234"
    assert extract_answer("no number here") is None
    assert extract_answer("The answer is (b).", "choice") == "B"
    assert extract_answer("maybe A or C", "choice") == "C"
    with pytest.raises(ValueError):
        extract_answer("x", "bool")


def test_is_correct():
    assert is_correct("18", "18.0")
    assert not is_correct(None, "1")
    assert not is_correct("17", "18")
    assert is_correct("b", "B", "choice")
