"""bahe: Behavior Aggregated Hierarchical Encoding for LLM-based CTR prediction on long textual
user behaviours (Geng et al., SIGIR 2024, arXiv 2403.19347).

- :mod:`bahe.text`: atomic behaviours, normalisation, stable 64-bit keys, deduplication.
- :mod:`bahe.lm`: :class:`SplitLM`, a Hugging Face encoder/decoder cut into a frozen lower and a
  trainable upper stack (exact: lower then upper equals the full model).
- :mod:`bahe.store`: the versioned, memory-mapped behaviour store (parquet archive, manifest,
  atomic writes, incremental refresh, data-parallel build).
- :mod:`bahe.model`: :class:`BAHECTR`, upper layers over behaviour vectors per family + CTR head.
- :mod:`bahe.baseline`: :class:`NaiveCTR`, the token-level LLM-CTR baseline.
- :mod:`bahe.data`: synthetic planted-topic data, AntM2C-format input, a simple format.
- :mod:`bahe.train`: BCE training (DDP across processes), evaluation, checkpoints.
- :mod:`bahe.measure`: exact FLOP and saved-activation counters for a training step.
"""

from bahe.baseline import NaiveConfig, NaiveCTR
from bahe.data import (
    CTRData,
    DataError,
    SyntheticConfig,
    antm2c_data,
    make_synthetic,
    read_antm2c,
    read_simple,
    write_simple,
)
from bahe.lm import SplitLM, load_lm, pool
from bahe.measure import count_flops, saved_activation_bytes
from bahe.metrics import auc, gauc, logloss
from bahe.model import BAHECTR, BAHEConfig
from bahe.pretrain import pretrain_lm
from bahe.store import (
    BehaviorStore,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    build_store,
)
from bahe.text import BehaviorCatalog, Normalization, behavior_key, behavior_keys, normalize
from bahe.train import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    predict,
    save_checkpoint,
    train,
    train_step,
)

__version__ = "0.1.0"

__all__ = [
    "BAHECTR",
    "BAHEConfig",
    "BehaviorCatalog",
    "BehaviorStore",
    "CTRData",
    "DataError",
    "NaiveCTR",
    "NaiveConfig",
    "Normalization",
    "SplitLM",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "SyntheticConfig",
    "TrainConfig",
    "antm2c_data",
    "auc",
    "behavior_key",
    "behavior_keys",
    "build_store",
    "count_flops",
    "evaluate",
    "gauc",
    "load_checkpoint",
    "load_lm",
    "logloss",
    "make_synthetic",
    "normalize",
    "pool",
    "predict",
    "pretrain_lm",
    "read_antm2c",
    "read_simple",
    "save_checkpoint",
    "saved_activation_bytes",
    "train",
    "train_step",
    "write_simple",
]
