"""kpod: Keypoint-based Progressive chain-of-thought Distillation (Feng et al., ICML 2024).

Pipeline (Alg. 1): teacher rationales -> token weighting by mask learning (Sec. 3.3) -> weighted
step difficulty (Eq. 8) -> progressive in-rationale schedule chosen by submodular maximisation
(Eqs. 9-13) -> weighted distillation (Eq. 15) -> greedy evaluation.
"""

from kpod.answers import extract_answer, is_correct, normalize_number
from kpod.clustering import embed_questions, kmeans
from kpod.difficulty import spearman, step_difficulty, token_nll
from kpod.distill import (
    METHODS,
    DistillConfig,
    DistillTrainer,
    align_weights,
    causal_targets,
    method_template,
    weighted_nll,
)
from kpod.encoding import ANSWER, PROMPT, Encoded, Template, encode, encode_all
from kpod.evaluation import EvalResult, evaluate, generate
from kpod.loaders import (
    attach_teacher,
    load_asdiv,
    load_csqa,
    load_dataset,
    load_gsm8k,
    load_mcckd,
    load_rationales_jsonl,
    load_svamp,
    strip_calculator,
)
from kpod.pipeline import Pipeline, RunConfig, auroc
from kpod.schedule import (
    DifficultyBudget,
    Schedule,
    ScheduleConfig,
    build_schedule,
    select,
    shifted_value,
    value,
)
from kpod.schema import CoTExample, KPODDataError
from kpod.steps import segment, steps_text
from kpod.student import TinyStudentConfig, build_tokenizer, pretrain_lm, tiny_student
from kpod.synthetic import SyntheticConfig, make_synthetic, synthetic_corpus
from kpod.view import keypoint_html
from kpod.weighting import (
    TokenWeighter,
    WeightingConfig,
    fit_weighting,
    gumbel_keep_mask,
    token_weights,
)

__version__ = "0.4.0"

__all__ = [
    "ANSWER",
    "METHODS",
    "PROMPT",
    "CoTExample",
    "DifficultyBudget",
    "DistillConfig",
    "DistillTrainer",
    "Encoded",
    "EvalResult",
    "KPODDataError",
    "Pipeline",
    "RunConfig",
    "Schedule",
    "ScheduleConfig",
    "SyntheticConfig",
    "Template",
    "TinyStudentConfig",
    "TokenWeighter",
    "WeightingConfig",
    "align_weights",
    "attach_teacher",
    "auroc",
    "build_schedule",
    "build_tokenizer",
    "causal_targets",
    "embed_questions",
    "encode",
    "encode_all",
    "evaluate",
    "extract_answer",
    "fit_weighting",
    "generate",
    "gumbel_keep_mask",
    "is_correct",
    "keypoint_html",
    "kmeans",
    "load_asdiv",
    "load_csqa",
    "load_dataset",
    "load_gsm8k",
    "load_mcckd",
    "load_rationales_jsonl",
    "load_svamp",
    "make_synthetic",
    "method_template",
    "normalize_number",
    "pretrain_lm",
    "segment",
    "select",
    "shifted_value",
    "spearman",
    "step_difficulty",
    "steps_text",
    "strip_calculator",
    "synthetic_corpus",
    "tiny_student",
    "token_nll",
    "token_weights",
    "value",
    "weighted_nll",
]
