"""llmrec: LLM-Rec (Tang et al., "One Model for All: Large Language Models are Domain-Agnostic
Recommendation Systems", arXiv 2310.14304).

One pre-trained language model encodes a user (the concatenated titles of the last items, mixed
across domains in time order) and every item (its title); the score is their inner product, and
training is cross-entropy against same-domain negatives.

Modules follow the paper: :mod:`~llmrec.loaders`/:mod:`~llmrec.preprocess` (§4.1.1 data),
:mod:`~llmrec.mixing` (§4.3.1 mixing strategies), :mod:`~llmrec.negatives`,
:mod:`~llmrec.text` (Eq. 1-2 inputs), :mod:`~llmrec.backbones` (§3.2.1),
:mod:`~llmrec.model` (Eq. 3-6), :mod:`~llmrec.train`, :mod:`~llmrec.metrics`/
:mod:`~llmrec.evaluate` (§4.1.3), :mod:`~llmrec.sasrec` (baseline), :mod:`~llmrec.synthetic`.
"""

from .backbones import BACKBONES, Backbone, BackboneSpec, build_backbone, load_backbone
from .evaluate import evaluate, full_ranks, groups_for, sampled_ranks
from .loaders import load_amazon2018, load_amazon2023, load_parquet, load_recbole, write_recbole
from .metrics import metric_table, mrr, ndcg_at_k, rank_of_positive, recall_at_k
from .mixing import MIXES, Examples, build_examples, history_subsets
from .model import LLMRec, ModelConfig, pool
from .negatives import (
    load_negatives,
    sample_eval_negatives,
    sample_train_negatives,
    save_negatives,
)
from .preprocess import PrepConfig, RecData, clean_title, kcore_filter, prepare
from .sasrec import SASRec, SASRecConfig, train_sasrec
from .schema import DataError, validate_interactions, validate_items
from .synthetic import SynthConfig, generate
from .train import FitResult, TrainConfig, fit

__version__ = "0.2.0"

__all__ = [
    "BACKBONES",
    "MIXES",
    "Backbone",
    "BackboneSpec",
    "DataError",
    "Examples",
    "FitResult",
    "LLMRec",
    "ModelConfig",
    "PrepConfig",
    "RecData",
    "SASRec",
    "SASRecConfig",
    "SynthConfig",
    "TrainConfig",
    "build_backbone",
    "build_examples",
    "clean_title",
    "evaluate",
    "fit",
    "full_ranks",
    "generate",
    "groups_for",
    "history_subsets",
    "kcore_filter",
    "load_amazon2018",
    "load_amazon2023",
    "load_backbone",
    "load_negatives",
    "load_parquet",
    "load_recbole",
    "metric_table",
    "mrr",
    "ndcg_at_k",
    "pool",
    "prepare",
    "rank_of_positive",
    "recall_at_k",
    "sample_eval_negatives",
    "sample_train_negatives",
    "sampled_ranks",
    "save_negatives",
    "train_sasrec",
    "validate_interactions",
    "validate_items",
    "write_recbole",
]
