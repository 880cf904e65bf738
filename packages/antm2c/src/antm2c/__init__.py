"""antm2c: a toolkit for the AntM2C multi-scenario, multi-modal CTR dataset (Alipay).

Schema of the public release (:mod:`antm2c.schema`), a synthetic generator writing the real CSV
layout with planted signal (:mod:`antm2c.synth`), a streaming CSV -> parquet pipeline
(:mod:`antm2c.pipeline`), feature encoding and streaming batches (:mod:`antm2c.features`),
tasks and split audits (:mod:`antm2c.tasks`), single- and multi-scenario CTR models
(:mod:`antm2c.models`, :mod:`antm2c.scenario`), a trainer (:mod:`antm2c.train`), metrics
(:mod:`antm2c.metrics`) and a leaderboard (:mod:`antm2c.leaderboard`).
"""

from .features import FeatureEncoder, FeatureSpec, ParquetStream
from .leaderboard import Leaderboard
from .metrics import Predictions, auc, evaluate, gauc, logloss
from .models import DIN, DNN, LR, AutoInt, CTRModel, DCNv2, DeepFM, FieldLayout
from .pipeline import (
    COMMUNITY_CUTOFFS,
    MalformedRowError,
    PrepareConfig,
    PrepareInterrupted,
    PrepareReport,
    key64,
    prepare,
    read_manifest,
    split_files,
)
from .scenario import PLE, STAR, MMoE, MultiScenarioModel, SharedBottom
from .schema import (
    RAW_COLUMNS,
    DeepFeatureTypes,
    SchemaError,
    processed_schema,
    raw_schema,
    validate_header,
    validate_processed,
    validate_raw_table,
)
from .synth import GroundTruth, SynthConfig, generate
from .tasks import (
    LeakageError,
    Task,
    audit_splits,
    cold_start,
    multi_scenario,
    multimodal,
    single_scenario,
)
from .train import RunResult, TrainConfig, Trainer, run
from .zoo import MODELS, build_model

__version__ = "0.2.0"

__all__ = [
    "COMMUNITY_CUTOFFS",
    "DIN",
    "DNN",
    "LR",
    "MODELS",
    "PLE",
    "RAW_COLUMNS",
    "STAR",
    "AutoInt",
    "CTRModel",
    "DCNv2",
    "DeepFM",
    "DeepFeatureTypes",
    "FeatureEncoder",
    "FeatureSpec",
    "FieldLayout",
    "GroundTruth",
    "Leaderboard",
    "LeakageError",
    "MMoE",
    "MalformedRowError",
    "MultiScenarioModel",
    "ParquetStream",
    "Predictions",
    "PrepareConfig",
    "PrepareInterrupted",
    "PrepareReport",
    "RunResult",
    "SchemaError",
    "SharedBottom",
    "SynthConfig",
    "Task",
    "TrainConfig",
    "Trainer",
    "auc",
    "audit_splits",
    "build_model",
    "cold_start",
    "evaluate",
    "gauc",
    "generate",
    "key64",
    "logloss",
    "multi_scenario",
    "multimodal",
    "prepare",
    "processed_schema",
    "raw_schema",
    "read_manifest",
    "run",
    "single_scenario",
    "split_files",
    "validate_header",
    "validate_processed",
    "validate_raw_table",
]
