"""End-to-end runs shared by the demo, the benchmark and the CLI: one prepared data set, fixed
evaluation examples and negatives, and helpers that train and score a model under a mixing
strategy in the same way for every arm of a comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .backbones import BackboneSpec, build_backbone
from .evaluate import evaluate, groups_for
from .mixing import Examples, build_examples
from .model import LLMRec, ModelConfig
from .negatives import sample_eval_negatives
from .preprocess import RecData
from .train import FitResult, TrainConfig, fit

__all__ = ["Setup", "make_setup", "train_text_model"]


@dataclass
class Setup:
    """Everything fixed across the arms of a comparison."""

    data: RecData
    zero_shot: tuple[str, ...]
    history_len: int
    test: Examples  # user-mixed histories
    valid: Examples  # a sample of users, user-mixed
    test_negatives: np.ndarray
    valid_negatives: np.ndarray
    groups: dict[str, np.ndarray]

    def valid_for(self, mix: str, domain: str | None = None) -> Examples:
        ex = build_examples(
            self.data,
            "valid",
            mix=mix,
            domain=domain,
            history_len=self.history_len,
            users=self.valid.users,
        )
        return ex

    def valid_negs_for(self, ex: Examples) -> np.ndarray:
        row = {int(u): i for i, u in enumerate(self.valid.users)}
        return self.valid_negatives[[row[int(u)] for u in ex.users]]


def make_setup(
    data: RecData,
    *,
    zero_shot: Sequence[str] = (),
    history_len: int = 10,
    n_negatives: int = 1000,
    valid_fraction: float = 0.1,
    seed: int = 42,
) -> Setup:
    """Fixed test examples (all users), a validation sample (``valid_fraction`` of the users
    whose validation target is not in a zero-shot domain) and their persisted-style negatives."""
    if not 0 < valid_fraction <= 1:
        raise ValueError("valid_fraction must be in (0, 1]")
    test = build_examples(data, "test", history_len=history_len)
    valid_all = build_examples(data, "valid", history_len=history_len)
    zs = {data.domain_index(z) for z in zero_shot}
    ok = ~np.isin(data.item_domain[valid_all.targets], list(zs))
    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(ok)
    take = np.sort(rng.choice(cand, size=max(1, int(len(cand) * valid_fraction)), replace=False))
    valid = valid_all.subset(take)
    groups = groups_for(data, test)
    tdom = data.item_domain[test.targets]
    groups["zero_shot"] = np.isin(tdom, list(zs))
    groups["trained_domains"] = ~groups["zero_shot"]
    return Setup(
        data=data,
        zero_shot=tuple(zero_shot),
        history_len=history_len,
        test=test,
        valid=valid,
        test_negatives=sample_eval_negatives(
            data, test.users, test.targets, n_negatives, seed=seed
        ),
        valid_negatives=sample_eval_negatives(
            data, valid.users, valid.targets, n_negatives, seed=seed + 1
        ),
        groups=groups,
    )


def train_text_model(
    setup: Setup,
    spec: BackboneSpec,
    train_cfg: TrainConfig,
    *,
    mix: str = "user",
    domain: str | None = None,
    model_cfg: ModelConfig | None = None,
    max_train_examples: int | None = None,
    desc: str | None = None,
    min_history: int = 1,
    validate: bool = True,
) -> tuple[LLMRec, FitResult]:
    """Build a backbone, train LLM-Rec under ``mix`` with early stopping on the validation sample
    (``validate=False``: no validation, the last weights are kept). ``min_history`` is passed to
    :func:`~llmrec.mixing.build_examples` (0 also trains on empty histories)."""
    d = setup.data
    train = build_examples(
        d,
        "train",
        mix=mix,
        domain=domain,
        history_len=setup.history_len,
        exclude_domains=setup.zero_shot,
        min_history=min_history,
    )
    if max_train_examples is not None and len(train) > max_train_examples:
        idx = np.random.default_rng(train_cfg.seed).choice(
            len(train), max_train_examples, replace=False
        )
        train = train.subset(np.sort(idx))
    valid = setup.valid_for(mix, domain) if validate else None
    model = LLMRec(build_backbone(spec, d.titles), d.titles, model_cfg)
    res = fit(
        model,
        d,
        train,
        replace(train_cfg),
        valid=valid,
        valid_negatives=None if valid is None else setup.valid_negs_for(valid),
        desc=desc or f"{spec.name} ({mix} mix{'' if domain is None else ', ' + domain})",
    )
    return model, res


def test_ranks(
    model,
    setup: Setup,
    *,
    mix: str = "user",
    protocol: str = "sampled",
    scope: str = "domain",
    negatives: np.ndarray | None = None,
    ties: str = "pessimistic",
    item_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ranks of every test example (user order of ``setup.test``) under ``mix`` histories."""
    ex = setup.test
    if mix != "user":
        ex = build_examples(setup.data, "test", mix=mix, history_len=setup.history_len)
    res = evaluate(
        model,
        setup.data,
        ex,
        protocol=protocol,
        negatives=setup.test_negatives if negatives is None else negatives,
        scope=scope,
        groups={},
        ties=ties,
        item_vectors=item_vectors,
    )
    return res["ranks"]
