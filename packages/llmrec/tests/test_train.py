import pickle

import numpy as np
import pytest
import torch
from llmrec import BackboneSpec, LLMRec, TrainConfig, build_backbone, build_examples, fit
from llmrec import train as train_mod
from llmrec.negatives import sample_eval_negatives

from shared import spawn


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def _setup(small_data):
    d = small_data
    tr = build_examples(d, "train", exclude_domains=["home"])
    va = build_examples(d, "valid")
    keep = d.item_domain[va.targets] != d.domain_index("home")
    va = va.subset(np.flatnonzero(keep)[:60])
    vn = sample_eval_negatives(d, va.users, va.targets, 20)
    return d, tr, va, vn


def _model(d, seed=0):
    spec = BackboneSpec("tiny-decoder", hidden=32, heads=2, seed=seed)
    return LLMRec(build_backbone(spec, d.titles), d.titles)


def test_config_validation():
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig(select_metric="auc")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)


def test_training_improves_validation_and_keeps_best(small_data):
    d, tr, va, vn = _setup(small_data)
    m = _model(d)
    before = train_mod.validate(m, va, vn, d.item_domain)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=3e-3, eval_every=20, max_steps=40)
    res = fit(m, d, tr, cfg, valid=va, valid_negatives=vn)
    after = train_mod.validate(m, va, vn, d.item_domain)
    assert len(res.history) == 2
    assert res.best_metric == max(h["recall@1"] for h in res.history)
    assert after["recall@1"] == pytest.approx(res.best_metric)  # best weights restored
    print("validation before/after", before, after)
    assert after["mrr"] > before["mrr"] + 0.05
    with pytest.raises(ValueError, match="no training examples"):
        fit(m, d, tr.subset(np.zeros(len(tr), bool)), TrainConfig())


class _Crash(RuntimeError):
    pass


def test_kill_mid_run_and_resume_matches_uninterrupted(small_data, tmp_path, monkeypatch):
    d, tr, va, vn = _setup(small_data)
    tr = tr.subset(np.arange(min(len(tr), 200)))
    cfg = TrainConfig(epochs=2, batch_size=40, eval_every=2, lr=2e-3, patience=100)
    ref = _model(d)
    fit(ref, d, tr, cfg, valid=va, valid_negatives=vn)

    ck = tmp_path / "ck"
    crashing = _model(d)
    real = train_mod.sample_train_negatives
    calls = {"n": 0}

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # dies in step 8, after the checkpoint of step 6
            raise _Crash("killed")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "sample_train_negatives", boom)
    with pytest.raises(_Crash):
        fit(
            crashing,
            d,
            tr,
            TrainConfig(**{**cfg.__dict__, "checkpoint_dir": str(ck)}),
            valid=va,
            valid_negatives=vn,
        )
    monkeypatch.setattr(train_mod, "sample_train_negatives", real)
    assert (ck / "last.pt").exists() and not list(ck.glob("*.tmp*"))
    resumed = _model(d, seed=123)  # different init: everything must come from the checkpoint
    res = fit(
        resumed,
        d,
        tr,
        TrainConfig(**{**cfg.__dict__, "checkpoint_dir": str(ck), "resume": True}),
        valid=va,
        valid_negatives=vn,
    )
    assert res.steps == 10
    torch.testing.assert_close(_params(resumed), _params(ref), atol=0, rtol=0)
    # a checkpoint from other data cannot be resumed silently
    with pytest.raises(ValueError, match="cannot resume"):
        fit(
            _model(d),
            d,
            tr.subset(np.arange(50)),
            TrainConfig(**{**cfg.__dict__, "checkpoint_dir": str(ck), "resume": True}),
        )


def _ddp_data():
    from llmrec import PrepConfig, SynthConfig, generate, prepare

    cfg = SynthConfig(
        n_users=120,
        items_per_domain_topic=5,
        n_topics=3,
        n_domains=2,
        cold_items_per_domain=1,
        zero_shot=False,
        users_per_special=3,
        seed=3,
    )
    return prepare([generate(cfg)], PrepConfig(kcore=3))


_DDP_CFG = {"epochs": 1, "batch_size": 8, "max_steps": 2, "lr": 2e-3, "n_negatives": 4}


def _ddp_worker(d, model_bytes):
    import torch.distributed as dist

    torch.set_num_threads(1)
    m = pickle.loads(model_bytes)
    tr = build_examples(d, "train")
    va = build_examples(d, "valid")
    vn = sample_eval_negatives(d, va.users, va.targets, 10)
    init = _params(m).clone()
    res = fit(m, d, tr, TrainConfig(**_DDP_CFG), valid=va, valid_negatives=vn)
    metrics = train_mod.validate(m, va, vn, d.item_domain)
    return {
        "rank": dist.get_rank(),
        "params": _params(m).numpy(),
        "init": init.numpy(),
        "steps": res.steps,
        "valid": metrics,
        "state": {k: v.numpy() for k, v in m.state_dict().items()},
    }


def _single_process_global_batch(d, world):
    """Independent reference: one process, one model, the union of the ranks' batches (and
    their negatives) as one global batch per step, the same AdamW groups and schedule."""
    from llmrec.negatives import sample_train_negatives

    cfg = TrainConfig(**_DDP_CFG)
    tr = build_examples(d, "train")
    m = _model(d)
    decay = [p for n, p in m.named_parameters() if p.ndim > 1 and "norm" not in n.lower()]
    rest = [p for n, p in m.named_parameters() if not (p.ndim > 1 and "norm" not in n.lower())]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
    )
    perm = np.random.default_rng([cfg.seed, 0]).permutation(len(tr))
    per_rank = len(perm) // world
    shards = [perm[r::world][:per_rank] for r in range(world)]
    m.train()
    for step in range(cfg.max_steps):  # lr factor is 1 for both steps (warm-up 1, total 2)
        sl = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        bs = [shards[r][sl] for r in range(world)]
        negs = [
            sample_train_negatives(
                np.random.default_rng([cfg.seed, 0, r, step]),
                tr.targets[bs[r]],
                d.item_domain,
                d.domain_items(),
                cfg.n_negatives,
            )
            for r in range(world)
        ]
        b = np.concatenate(bs)
        loss = m(tr.hist[b], tr.targets[b], np.concatenate(negs))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
        opt.step()
    return m


def test_ddp_two_processes_equal_single_process_on_the_global_batch():
    """2 gloo ranks with batch B each == 1 process with the 2B-example global batch (gradients
    averaged by DDP, clipped after the all-reduce); validation sums hits over the ranks."""
    d = _ddp_data()
    # the model travels as plain pickle bytes (its tokenizer trained once, here): a module passed
    # directly would go through torch's shared-memory reducer, and both ranks would step the
    # same storage
    a, b = spawn(_ddp_worker, 2, args=(d, pickle.dumps(_model(d))), timeout_s=240)
    assert a["steps"] == b["steps"] == 2
    np.testing.assert_array_equal(a["params"], b["params"])  # replicas stay identical
    assert not np.allclose(a["params"], a["init"])
    ref = _single_process_global_batch(d, 2)
    # Adam moves each weight by ~lr = 2e-3 per step: a wrong batch or gradient shows at once
    np.testing.assert_allclose(a["params"], _params(ref).numpy(), rtol=0, atol=2e-5)
    assert a["valid"] == b["valid"]
    va = build_examples(d, "valid")
    vn = sample_eval_negatives(d, va.users, va.targets, 10)
    m = _model(d)
    m.load_state_dict({k: torch.as_tensor(v) for k, v in a["state"].items()})
    single = train_mod.validate(m, va, vn, d.item_domain)
    for k in ("recall@1", "recall@10", "mrr", "n"):
        assert single[k] == pytest.approx(a["valid"][k], abs=1e-9)
