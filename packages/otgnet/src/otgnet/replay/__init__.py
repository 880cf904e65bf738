"""Triad replay: mining, importance and diversity selection, buffer and pattern loss."""

from otgnet.replay.buffer import ReplayBuffer, pattern_loss
from otgnet.replay.selection import (
    coverage_objective,
    greedy_select,
    head_gradient_scores,
    node_importance,
)
from otgnet.replay.triads import Triads, mine_triads

__all__ = [
    "ReplayBuffer",
    "Triads",
    "coverage_objective",
    "greedy_select",
    "head_gradient_scores",
    "mine_triads",
    "node_importance",
    "pattern_loss",
]
