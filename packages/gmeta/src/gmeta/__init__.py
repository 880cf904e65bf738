"""gmeta: G-Meta (Xiao et al., CIKM 2023), distributed meta-learning for recommendation models.

- :mod:`gmeta.embedding`: row-sharded embedding tables, all-to-all lookup and gradient return.
- :mod:`gmeta.model`: a DLRM written for ``torch.func`` (dense part; embedding rows as input).
- :mod:`gmeta.maml`: first/second-order MAML inner loop, vmap-batched tasks.
- :mod:`gmeta.trainer`: the hybrid-parallel outer step (local inner loop, one all-reduce, one
  all-to-all of row gradients) with communication accounting.
- :mod:`gmeta.reference`: single-process reference MAML (the equivalence oracle).
- :mod:`gmeta.metaio`: Meta-IO task-major parquet, builder, prefetching per-rank loader, the
  naive pandas baseline.
- :mod:`gmeta.synthetic`, :mod:`gmeta.antm2c_io`: cold-start synthetic logs; AntM2C-format logs.
- :mod:`gmeta.train`, :mod:`gmeta.checkpoint`: torchrun entry point, atomic sharded checkpoints.
"""

from gmeta.antm2c_io import antm2c_spec, read_antm2c
from gmeta.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from gmeta.embedding import RowOptimizerConfig, RowShardedEmbedding, init_rows
from gmeta.maml import MAMLConfig
from gmeta.metaio import (
    FieldSpec,
    MetaIOError,
    MetaIOLoader,
    NaiveTaskLoader,
    TaskSpec,
    build_tasks,
    read_header,
)
from gmeta.metrics import auc, logloss
from gmeta.model import DLRM, DLRMConfig
from gmeta.reference import ReferenceMAML
from gmeta.synthetic import ColdStartData, SyntheticConfig, generate_log
from gmeta.tasks import TaskBatch, split_counts
from gmeta.train import TrainConfig, build_trainer, evaluate, init_from_env, train
from gmeta.trainer import MetaTrainer, StepStats, comm_bytes_formula, row_optimizer_for

__version__ = "0.1.0"

__all__ = [
    "DLRM",
    "CheckpointError",
    "ColdStartData",
    "DLRMConfig",
    "FieldSpec",
    "MAMLConfig",
    "MetaIOError",
    "MetaIOLoader",
    "MetaTrainer",
    "NaiveTaskLoader",
    "ReferenceMAML",
    "RowOptimizerConfig",
    "RowShardedEmbedding",
    "StepStats",
    "SyntheticConfig",
    "TaskBatch",
    "TaskSpec",
    "TrainConfig",
    "antm2c_spec",
    "auc",
    "build_tasks",
    "build_trainer",
    "comm_bytes_formula",
    "evaluate",
    "generate_log",
    "init_from_env",
    "init_rows",
    "latest_checkpoint",
    "load_checkpoint",
    "logloss",
    "read_antm2c",
    "read_header",
    "row_optimizer_for",
    "save_checkpoint",
    "split_counts",
    "train",
]
