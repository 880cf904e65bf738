from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def task_file(tmp_path_factory) -> str:
    """A small synthetic task file: 60 users, K=Q=4, row groups of 16 tasks."""
    from gmeta.equivalence import task_file_for_tests

    return task_file_for_tests(tmp_path_factory.mktemp("tasks") / "tasks.parquet")


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A synthetic cold-start log (300 users) with its task spec."""
    from gmeta.metaio import FieldSpec, TaskSpec
    from gmeta.synthetic import DENSE_COLUMNS, SyntheticConfig, generate_log, synthetic_fields

    data = generate_log(SyntheticConfig(n_users=300, seed=1))
    spec = TaskSpec(
        fields=tuple(FieldSpec(c, n) for c, n in synthetic_fields(data.config)),
        dense_columns=DENSE_COLUMNS,
        k=6,
        q=5,
        min_support=3,
    )
    return data, spec
