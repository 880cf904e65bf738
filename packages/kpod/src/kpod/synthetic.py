"""The embedded default task: multi-step arithmetic word problems with labelled token roles.

Every rationale step reads ``<filler> <connective> <name> has <a> <op> <b> = <c> <item> .``:

* ``a op b = c`` (written ``13+4=17``: numbers, operator, "=", result) are **keypoint**
  characters;
* ``<filler>`` is 0..``max_filler_phrases`` phrases drawn at random from a large pool of
  reasoning-irrelevant words ("honestly", "it is easy to see that", ...): **filler** characters,
  and their count varies from step to step;
* connectives, names and items carry no label (neither keypoint nor filler).

Later steps use earlier results (the chain), so answer prediction from a rationale *prefix*
needs the intermediate results (the point of Eq. 5). Each step has a planted hardness:

====  ======================================================
 1    addition without a carry (``13 + 4 = 17``)
 2    addition with a carry, or subtraction without a borrow
 3    subtraction with a borrow (``23 - 7 = 16``)
 4    multiplication (``12 * 3 = 36``)
====  ======================================================

Values stay in 0..``max_value`` (default 99).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kpod.schema import CoTExample

__all__ = ["FILLER_PHRASES", "SyntheticConfig", "make_synthetic", "synthetic_corpus"]

NAMES = ("Tom", "Ana", "Raj", "Mia", "Leo", "Eva", "Sam", "Ivy", "Max", "Zoe", "Ben", "Kim")
ITEMS = ("apples", "coins", "stamps", "cards", "books", "shells", "pens", "marbles")
CONNECTIVES = ("so", "now", "then", "thus", "next")
_FILLER_WORDS = [
    "honestly",
    "basically",
    "clearly",
    "simply",
    "really",
    "quite",
    "surely",
    "certainly",
    "naturally",
    "obviously",
    "actually",
    "literally",
    "frankly",
    "indeed",
    "anyway",
    "plainly",
    "truly",
    "merely",
    "largely",
    "mostly",
    "nicely",
    "gently",
    "calmly",
    "slowly",
    "quickly",
    "carefully",
    "happily",
    "kindly",
    "boldly",
    "neatly",
    "openly",
    "rarely",
    "we",
    "can",
    "say",
    "that",
    "it",
    "is",
    "easy",
    "to",
    "see",
    "note",
    "that",
    "as",
    "you",
    "know",
    "remember",
    "that",
    "in",
    "other",
    "words",
    "of",
    "course",
    "by",
    "the",
    "way",
    "to",
    "be",
    "fair",
    "as",
    "expected",
    "without",
    "doubt",
    "in",
    "fact",
    "at",
    "this",
    "point",
    "let",
    "us",
    "just",
    "look",
    "it",
    "seems",
    "that",
    "one",
    "could",
    "argue",
    "this",
    "part",
    "is",
    "fun",
    "believe",
    "it",
    "or",
    "not",
    "as",
    "a",
    "matter",
    "of",
    "fact",
    "for",
    "what",
    "it",
    "is",
    "worth",
    "needless",
    "to",
    "say",
    "to",
    "put",
    "it",
    "simply",
    "all",
    "in",
    "all",
    "funny",
    "enough",
    "strangely",
    "interestingly",
    "luckily",
    "sadly",
    "oddly",
    "wisely",
]


def _make_phrases(n: int = 160, seed: int = 1234) -> tuple[str, ...]:
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add(" ".join(rng.sample(_FILLER_WORDS, rng.randint(1, 3))))
    return tuple(sorted(out))


FILLER_PHRASES = _make_phrases()


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the synthetic task (fields validated)."""

    n_train: int = 1200
    n_test: int = 200
    min_steps: int = 2
    max_steps: int = 4
    max_filler_phrases: int = 3
    max_value: int = 99  # every value (operand, result) stays in 0..max_value
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_test < 0:
            raise ValueError("n_train must be >= 1 and n_test >= 0")
        if not 1 <= self.min_steps <= self.max_steps <= 8:
            raise ValueError("need 1 <= min_steps <= max_steps <= 8")
        if self.max_filler_phrases < 0:
            raise ValueError("max_filler_phrases must be >= 0")
        if not 10 <= self.max_value <= 999:
            raise ValueError("max_value must be in 10..999")


def _op(rng: random.Random, a: int, vmax: int = 99) -> tuple[str, int, int, int, str]:
    """One operation on the running value ``a``: (symbol, b, c, hardness, question phrase)."""
    choices = ["add", "sub", "mul"]
    if a < 2:
        choices = ["add"]
    if 2 * a > vmax:
        choices = [c for c in choices if c != "mul"]
    if a >= vmax:
        choices = ["sub"]
    kind = rng.choice(choices)
    if kind == "add":
        b = rng.randint(1, min(9, vmax - a))
        c = a + b
        hard = 1 if (a % 10) + b < 10 else 2
        return "+", b, c, hard, f"gets {b} more"
    if kind == "sub":
        b = rng.randint(1, min(9, a))
        c = a - b
        hard = 2 if (a % 10) >= b else 3
        return "-", b, c, hard, f"gives away {b}"
    # b is drawn from 2..9 where the product allows it, so that the multiplier is about as
    # unpredictable as the operand of + and - (0.2.0 drew it from 2..3: a multiplication step
    # looked *easier* to a student guessing b)
    b = rng.randint(2, max(2, min(9, vmax // a)))
    c = a * b
    return "*", b, c, 4, f"gets {b} times as many"


def _example(rng: random.Random, idx: int, cfg: SyntheticConfig, split: str) -> CoTExample:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a = rng.randint(2, min(30, cfg.max_value))
    n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
    ops = []
    v = a
    for _ in range(n_steps):
        sym, b, c, hard, phrase = _op(rng, v, cfg.max_value)
        ops.append((v, sym, b, c, hard, phrase))
        v = c
    q = f"{name} has {a} {item}. " + " ".join(f"Then {name} {o[5]}." for o in ops)
    q += f" How many {item} does {name} have?"

    parts: list[str] = []
    roles: list[tuple[int, int, str]] = []
    pos = 0

    def put(text: str, role: str | None = None) -> None:
        nonlocal pos
        if parts:
            parts.append(" ")
            pos += 1
        parts.append(text)
        if role is not None:
            roles.append((pos, pos + len(text), role))
        pos += len(text)

    hardness = []
    for k, (x, sym, b, c, hard, _) in enumerate(ops):
        for _ in range(rng.randint(0, cfg.max_filler_phrases)):
            put(rng.choice(FILLER_PHRASES), "filler")
        put(rng.choice(CONNECTIVES) if k else "first")
        put(f"{name} has")
        put(f"{x}{sym}{b}={c}", "keypoint")
        put(f"{item}.")
        hardness.append(float(hard))
    return CoTExample(
        id=f"{split}-{idx}",
        question=q,
        rationale="".join(parts),
        answer=str(v),
        source="synthetic",
        split=split,
        roles=tuple(roles),
        step_hardness=tuple(hardness),
    )


def make_synthetic(cfg: SyntheticConfig | None = None) -> tuple[list[CoTExample], list[CoTExample]]:
    """(train, test) examples; deterministic in ``cfg.seed``; test questions differ from train."""
    cfg = cfg or SyntheticConfig()
    rng = random.Random(cfg.seed)
    train, test, seen = [], [], set()
    while len(train) < cfg.n_train:
        ex = _example(rng, len(train), cfg, "train")
        train.append(ex)
        seen.add(ex.question)
    tries = 0
    while len(test) < cfg.n_test:
        ex = _example(rng, len(test), cfg, "test")
        tries += 1
        if ex.question in seen and tries < 100 * cfg.n_test:
            continue
        test.append(ex)
    return train, test


def synthetic_corpus(
    n: int = 2000, seed: int = 0, max_value: int = 99, *, narratives: bool = True
) -> list[str]:
    """Text for tokenizer training and student pre-training (not the task's template).

    Stands in for a pre-trained student's prior knowledge (our notes, Sec. A9): bare
    ``a op b = c`` facts, filler sentences, and short passages that restate an earlier result
    ("7+5=12.\ntherefore, the answer is 12."), the copy-and-restate skill every pre-trained LM
    has, and arithmetic chains that carry each result into the next operation ("start with 7.
    7+5=12. 12-3=9.").

    ``narratives`` (0.3.0) adds, per item, a short story that does arithmetic in the task's own
    vocabulary ("ana has 7 coins. so ana has 7+5=12 coins. honestly then ana has 12-3=9
    coins."): names, items and filler words in running text, as any pre-trained LM has read.
    Without it the student meets those words for the first time in the task and its NLL there
    says nothing about arithmetic (0.2.0: no relation between step NLL and planted hardness).
    A narrative has no question: which operation comes next, and with which operand, is what
    distillation has to teach.
    """
    rng = random.Random(seed + 7919)
    out = []
    for _ in range(n):
        if narratives:
            name, item = rng.choice(NAMES), rng.choice(ITEMS)
            v = rng.randint(2, min(30, max_value))
            story = [f"{name} has {v} {item}."]
            for _ in range(rng.randint(1, 4)):
                sym4, u, r, _, _ = _op(rng, v, max_value)
                lead = " ".join(rng.choice(FILLER_PHRASES) for _ in range(rng.randint(0, 2)))
                story.append(
                    f"{lead} {rng.choice(CONNECTIVES)} {name} has {v}{sym4}{u}={r} {item}."
                )
                v = r
            out.append(" ".join(story).replace("  ", " "))
        a = rng.randint(0, max_value)
        sym, b, c, _, _ = _op(rng, a, max_value)
        out.append(f"{a}{sym}{b}={c}.")
        out.append(" ".join(rng.choice(FILLER_PHRASES) for _ in range(rng.randint(1, 4))) + ".")
        x = rng.randint(0, max_value)
        sym2, y, z, _, _ = _op(rng, x, max_value)
        filler = " ".join(rng.choice(FILLER_PHRASES) for _ in range(rng.randint(0, 2)))
        out.append(f"{a}{sym}{b}={c}. {filler} {x}{sym2}{y}={z}.\ntherefore, the answer is {z}.")
        v = rng.randint(
            2, min(30, max_value)
        )  # a chain that carries each result into the next operation
        chain = [f"start with {v}."]
        for _ in range(rng.randint(2, 4)):
            sym3, u, r, _, _ = _op(rng, v, max_value)
            chain.append(f"{v}{sym3}{u}={r}.")
            v = r
        out.append(" ".join(chain))
    return out
