import re

import pytest
from kpod.synthetic import SyntheticConfig, make_synthetic, synthetic_corpus

EQ = re.compile(r"(\d+)([+*-])(\d+)=(\d+)")


@pytest.mark.parametrize("max_value", [20, 40, 99])
def test_rationales_are_correct_chains_with_planted_hardness(max_value):
    train, test = make_synthetic(SyntheticConfig(n_train=150, n_test=30, max_value=max_value))
    assert not {e.question for e in test} & {e.question for e in train}
    for ex in train + test:
        eqs = [tuple(int(x) if x.isdigit() else x for x in m) for m in EQ.findall(ex.rationale)]
        assert len(eqs) == len(ex.step_hardness)
        prev = None
        for (a, op, b, c), hard in zip(eqs, ex.step_hardness, strict=True):
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
            assert max(a, b, c) <= max_value and min(a, b, c) >= 0
            assert prev is None or a == prev  # each step carries the previous result
            if op == "+":
                assert hard == (1 if a % 10 + b < 10 else 2)
            elif op == "-":
                assert hard == (2 if a % 10 >= b else 3)
            else:
                assert hard == 4
            prev = c
        assert ex.answer == str(prev)
        # keypoint spans are exactly the equations
        keys = [ex.rationale[s:e] for s, e, r in ex.roles if r == "keypoint"]
        assert keys == [f"{a}{op}{b}={c}" for a, op, b, c in eqs]


def test_corpus_respects_max_value_and_bad_config_is_refused():
    for line in synthetic_corpus(200, seed=1, max_value=20):
        for a, _, b, c in EQ.findall(line):
            assert max(int(a), int(b), int(c)) <= 20
    with pytest.raises(ValueError, match="max_value"):
        SyntheticConfig(max_value=5)
