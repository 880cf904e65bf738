"""The single-process pieces: model, localisation, vmap vs loop, trainer == reference (W=1)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from gmeta.embedding import RowOptimizerConfig, RowShardedEmbedding
from gmeta.equivalence import max_abs_diff, reference_run
from gmeta.maml import MAMLConfig, localize, meta_loss_and_grads
from gmeta.metaio import MetaIOLoader, read_header
from gmeta.model import DLRM, DLRMConfig
from gmeta.train import TrainConfig, build_trainer
from gmeta.trainer import MetaTrainer, row_optimizer_for


def _cfg(task_file, **maml) -> TrainConfig:
    return TrainConfig(
        tasks=task_file,
        out="unused",
        tasks_per_batch=7,
        embedding_dim=4,
        bottom=(8,),
        top=(8,),
        dtype="float64",
        maml=MAMLConfig(**maml),
    )


def _local_run(cfg: TrainConfig, steps: int) -> dict:
    tr = build_trainer(cfg, read_header(cfg.tasks))
    it = iter(MetaIOLoader(cfg.tasks, cfg.tasks_per_batch, prefetch=0, epochs=None))
    for _ in range(steps):
        tr.step(next(it))
    return {
        "dense": {k: v.detach().numpy() for k, v in tr.model.named_parameters()},
        "table": tr.table.full_weight().numpy(),
    }


@pytest.mark.parametrize(
    "first_order, adapt, opt",
    [
        (True, "dense", "sgd"),
        (False, "dense", "adagrad"),
        (True, "top", "adam"),
        (False, "top", "sgd"),
        (True, "dense+emb", "adagrad"),
        (False, "dense+emb", "adam"),
        (False, "top+emb", "adam"),
    ],
)
def test_trainer_equals_reference_single_process(task_file, first_order, adapt, opt):
    cfg = _cfg(
        task_file,
        first_order=first_order,
        adapt=adapt,
        outer_optimizer=opt,
        outer_lr=0.05,
        inner_steps=2,
        inner_lr=0.2,
    )
    ours, ref = _local_run(cfg, 3), reference_run(cfg, 3)
    d = max_abs_diff(ours, ref)
    assert d["max"] < 1e-10, d
    # the run moved the parameters (an equivalence of two no-ops would prove nothing)
    init = _local_run(cfg, 0)
    assert max_abs_diff(init, ref)["max"] > 1e-3


def test_first_and_second_order_differ(task_file):
    fo = _local_run(_cfg(task_file, first_order=True, outer_lr=0.05), 2)
    so = _local_run(_cfg(task_file, first_order=False, outer_lr=0.05), 2)
    assert max_abs_diff(fo, so)["max"] > 1e-6


def test_vmap_equals_python_loop(task_file):
    cfg = _cfg(task_file, adapt="dense+emb", inner_steps=2)
    batched = _local_run(cfg, 2)
    looped = _local_run(
        dataclasses.replace(cfg, maml=dataclasses.replace(cfg.maml, batched=False)), 2
    )
    assert max_abs_diff(batched, looped)["max"] < 1e-12


def test_localize_maps_back_to_ids(task_file):
    b = next(iter(MetaIOLoader(task_file, 9, prefetch=0))).sanitized()
    ids = b.valid_ids()
    rows, s_idx, q_idx = localize(b, ids)
    for t in range(b.num_tasks):
        assert torch.equal(ids[rows[t]][s_idx[t]], b.s_sparse[t])
        assert torch.equal(ids[rows[t]][q_idx[t]], b.q_sparse[t])
        used = torch.unique(torch.cat([s_idx[t].reshape(-1), q_idx[t].reshape(-1)]))
        # each task's local table holds each of its ids once
        assert len(torch.unique(rows[t][used])) == len(used)


def test_first_order_support_rows_get_no_gradient(task_file):
    cfg = _cfg(task_file, first_order=True, adapt="dense+emb")
    tr = build_trainer(cfg, read_header(task_file))
    b = next(iter(MetaIOLoader(task_file, 7, prefetch=0))).sanitized().to(dtype=torch.float64)
    ids, gmask = tr.grad_ids(b)
    rows = tr.table.lookup(ids, gmask)[0]
    _, _, g = meta_loss_and_grads(tr.model, cfg.maml, rows, ids, b)
    support_only = ~torch.isin(ids, b.valid_ids("query"))
    assert support_only.any()
    assert torch.equal(support_only, ~gmask)
    assert float(g[support_only].abs().max()) == 0.0
    # query rows do get gradients (almost all non-zero; a dead ReLU path can zero a few)
    assert float((g[gmask].abs().sum(1) > 0).double().mean()) > 0.9


def test_dlrm_config_validation():
    with pytest.raises(ValueError, match="num_fields"):
        DLRMConfig(num_fields=0, embedding_dim=4, num_dense=2)
    with pytest.raises(ValueError, match="bottom"):
        DLRMConfig(num_fields=2, embedding_dim=4, num_dense=2, bottom=(0,))
    m = DLRM(DLRMConfig(num_fields=3, embedding_dim=4, num_dense=2))
    out = m(torch.randn(5, 2), torch.randn(5, 3, 4))
    assert out.shape == (5,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inner_lr": 0}, "inner_lr"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"adapt": "everything"}, "adapt"),
        ({"outer_optimizer": "lamb"}, "outer_optimizer"),
        ({"adam_betas": (1.0, 0.9)}, "adam_betas"),
        ({"algorithm": "reptile"}, "algorithm"),
        ({"outer_lr": float("nan")}, "outer_lr"),
    ],
)
def test_maml_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MAMLConfig(**kwargs)


def test_trainer_rejects_mismatched_table():
    model = DLRM(DLRMConfig(num_fields=2, embedding_dim=4, num_dense=2)).double()
    cfg = MAMLConfig(outer_optimizer="adam")
    wrong_dim = RowShardedEmbedding(10, 8, optimizer=row_optimizer_for(cfg), dtype=torch.float64)
    with pytest.raises(ValueError, match="embedding dim"):
        MetaTrainer(model, wrong_dim, cfg)
    wrong_opt = RowShardedEmbedding(
        10, 4, optimizer=RowOptimizerConfig("sgd", 0.1), dtype=torch.float64
    )
    with pytest.raises(ValueError, match="row optimizer"):
        MetaTrainer(model, wrong_opt, cfg)
    wrong_dtype = RowShardedEmbedding(10, 4, optimizer=row_optimizer_for(cfg))
    with pytest.raises(ValueError, match="dtype"):
        MetaTrainer(model, wrong_dtype, cfg)


def test_batch_with_wrong_shape_is_rejected(task_file):
    cfg = _cfg(task_file)
    tr = build_trainer(dataclasses.replace(cfg, embedding_dim=4), read_header(task_file))
    b = next(iter(MetaIOLoader(task_file, 4, prefetch=0)))
    bad = dataclasses.replace(b, s_dense=b.s_dense[..., :2], q_dense=b.q_dense[..., :2])
    with pytest.raises(ValueError, match="dense features"):
        tr.step(bad)


def test_non_finite_gradient_applies_nothing(task_file):
    cfg = _cfg(task_file)
    tr = build_trainer(cfg, read_header(task_file))
    b = next(iter(MetaIOLoader(task_file, 4, prefetch=0)))
    before = [p.detach().clone() for p in tr.model.parameters()]
    table_before = tr.table.weight.clone()
    bad = dataclasses.replace(b, q_dense=b.q_dense * float("inf"))
    with pytest.raises(FloatingPointError):
        tr.step(bad)
    assert all(torch.equal(p, q) for p, q in zip(before, tr.model.parameters(), strict=True))
    assert torch.equal(table_before, tr.table.weight)
    tr.step(b)  # and the trainer still works afterwards
