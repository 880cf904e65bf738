from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _kpod_workers import ddp_distill
from kpod import (
    DistillConfig,
    KPODDataError,
    Pipeline,
    RunConfig,
    ScheduleConfig,
    SyntheticConfig,
    TinyStudentConfig,
    WeightingConfig,
)
from kpod.__main__ import main
from kpod.artifacts import read_parquet

from shared import spawn


def tiny_run_config(**kw) -> RunConfig:
    base = dict(
        synthetic=SyntheticConfig(n_train=16, n_test=4, max_steps=3, seed=1),
        tiny=TinyStudentConfig(layers=1, hidden=32, heads=2, pretrain_steps=2, pretrain_batch=4),
        weighting=WeightingConfig(steps=2, predictor_warmup=1, batch_size=4, mlp_hidden=8),
        schedule=ScheduleConfig(stages=2),
        distill=DistillConfig(epochs=3, batch_size=8),
        max_new_tokens=8,
    )
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    p = Pipeline(tiny_run_config(), out)
    p.prepare()
    p.weights()
    p.difficulty()
    p.schedule()
    return out


def test_stage_artifacts(run_dir):
    for name in [
        "examples.parquet",
        "token_weights.parquet",
        "step_difficulty.parquet",
        "schedule.parquet",
        "clusters.parquet",
        "weighter.pt",
    ]:
        assert (run_dir / name).is_file(), name
    _tw, meta = read_parquet(run_dir / "token_weights.parquet")
    assert len(meta["tokenizer"]) == 64
    p = Pipeline(tiny_run_config(), run_dir)
    _, tok = p.load_student()
    train = p.examples("train")
    w = p.load_weights(tok, train)
    from kpod import encode

    for ex in train:  # stored weights align with the student's rationale tokens
        assert len(w[ex.id]) == len(encode(ex, tok).rationale_tokens)
    sched = p.load_schedule()
    assert sched.c.shape == (3, len(train))
    d, _ = read_parquet(run_dir / "step_difficulty.parquet")
    assert set(d.columns) >= {"id", "step", "difficulty", "difficulty_uniform", "hardness"}


def test_rerun_skips_finished_stages_and_refuses_changed_config(run_dir):
    before = (run_dir / "token_weights.parquet").stat().st_mtime_ns
    p = Pipeline(tiny_run_config(), run_dir)
    p.weights()
    assert (run_dir / "token_weights.parquet").stat().st_mtime_ns == before
    changed = Pipeline(
        tiny_run_config(
            weighting=WeightingConfig(steps=3, predictor_warmup=1, batch_size=4, mlp_hidden=8)
        ),
        run_dir,
    )
    with pytest.raises(KPODDataError, match="different configuration"):
        changed.weights()


def test_distill_killed_mid_run_resumes_to_the_same_result(run_dir, monkeypatch):
    p = Pipeline(tiny_run_config(), run_dir)
    full = p.distill("full", DistillConfig(method="kpod", epochs=3, batch_size=8))
    from kpod import distill as dmod

    calls = {"n": 0}
    orig = dmod.DistillTrainer.train

    def dying(self, *a, **kw):
        cb = kw["on_epoch_end"]

        def cb2(tr):
            cb(tr)
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # killed after epoch 2's checkpoint

        kw["on_epoch_end"] = cb2
        return orig(self, *a, **kw)

    monkeypatch.setattr(dmod.DistillTrainer, "train", dying)
    cfg = DistillConfig(method="kpod", epochs=3, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        p.distill("again", cfg)
    assert (run_dir / "students" / "again.ckpt").is_dir()
    assert not (run_dir / "students" / "again").exists()
    monkeypatch.setattr(dmod.DistillTrainer, "train", orig)
    resumed = p.distill("again", cfg)
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(full).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    log = json.loads((resumed / "train_log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_eval_writes_predictions(run_dir):
    p = Pipeline(tiny_run_config(), run_dir)
    p.distill("cot", DistillConfig(method="cot", epochs=1, batch_size=8))
    res = p.evaluate("cot", "cot")
    assert res["n"] == 4 and 0.0 <= res["accuracy"] <= 1.0
    pred, _ = read_parquet(run_dir / "predictions_cot.parquet")
    assert len(pred) == 4
    with pytest.raises(KPODDataError, match="no distilled student"):
        p.evaluate("nobody")


def test_corrupt_artifact_is_reported(tmp_path):
    (tmp_path / "examples.parquet").write_bytes(b"PAR1 not really")
    p = Pipeline(tiny_run_config(), tmp_path)
    with pytest.raises(KPODDataError, match="not a readable parquet"):
        p.examples("train")
    (tmp_path / "prepare.done.json").write_text("{broken")
    with pytest.raises(KPODDataError, match="corrupt JSON"):
        p.prepare()


def test_run_config_roundtrip_and_validation():
    cfg = tiny_run_config()
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        RunConfig.from_dict({"dat": "x"})
    with pytest.raises(ValueError, match="needs train_path"):
        RunConfig(data="gsm8k")


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--out", str(tmp_path), "--n-train", "-3"])
    assert e.value.code == 2
    assert main(["prepare", "--out", str(tmp_path), "--data", "gsm8k"]) == 2
    assert "needs train_path" in capsys.readouterr().err
    assert main(["prepare", "--out", str(tmp_path / "a"), "--alpha-scale", "log"]) == 2
    assert "alpha_scale must be 'relative' or 'absolute'" in capsys.readouterr().err
    assert main(["weights", "--out", str(tmp_path / "empty")]) == 2  # nothing prepared
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{not json")
    assert main(["schedule", "--out", str(tmp_path / "c")]) == 2


def test_cli_view_and_stage_commands(run_dir, tmp_path):
    html = tmp_path / "k.html"
    assert main(["view", "--out", str(run_dir), "--n", "3", "--html", str(html)]) == 0
    text = html.read_text()
    assert text.count("<h3>") == 3 and "w=0." in text


def test_cli_prepare_subprocess(tmp_path):
    cfg = tiny_run_config()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "kpod", "prepare", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "prepared 16 train / 4 test" in r.stdout
    assert (Path(tmp_path) / "prepare.done.json").is_file()
    assert np.isfinite(len(r.stdout))


def test_distributed_distillation_equals_single_process():
    """Two gloo ranks (real processes), each on half of every batch, give the parameters of one
    process on whole batches (DDP averages the per-rank mean losses' gradients)."""
    single = torch.tensor(ddp_distill(16, 8, 2))
    multi = spawn(ddp_distill, 2, args=(16, 8, 2), timeout_s=300)
    torch.testing.assert_close(torch.tensor(multi[0]), single, rtol=1e-4, atol=1e-5)


def test_lora_student_is_saved_merged_and_evaluates(run_dir):
    pytest.importorskip("peft")
    p = Pipeline(tiny_run_config(), run_dir)
    path = p.distill("cot-lora", DistillConfig(method="cot", epochs=1, batch_size=8, lora_rank=2))
    assert not (path / "adapter_config.json").exists()
    res = p.evaluate("cot-lora", "cot")
    assert res["n"] == 4


def test_bench_writes_every_claim_and_the_ablations(tmp_path, monkeypatch):
    """The benchmark's plumbing on a tiny configuration: every claim (and, when asked, each
    ablation as an information row with per-seed deltas against CoT) lands in the JSON."""
    import json

    import kpod.bench as kb
    from kpod.distill import DistillConfig
    from kpod.pipeline import RunConfig
    from kpod.schedule import ScheduleConfig
    from kpod.student import TinyStudentConfig
    from kpod.synthetic import SyntheticConfig
    from kpod.weighting import WeightingConfig

    def tiny(quick):
        return RunConfig(
            synthetic=SyntheticConfig(n_train=24, n_test=4, max_value=20, max_steps=3),
            tiny=TinyStudentConfig(hidden=32, layers=1, heads=2, pretrain_steps=2),
            weighting=WeightingConfig(
                steps=2, predictor_warmup=2, mlp_hidden=16, calibration_examples=4
            ),
            schedule=ScheduleConfig(stages=2),
            distill=DistillConfig(epochs=2, batch_size=8),
            max_new_tokens=8,
            eval_batch_size=4,
        ), 2

    monkeypatch.setattr(kb, "bench_config", tiny)
    out = tmp_path / "kpod.json"
    kb.run_bench(True, out, ablations=True)
    got = {c["name"]: c for c in json.loads(out.read_text())["claims"]}
    assert set(got) == {"keypoint_auroc", "difficulty_spearman", "cot_vs_answer_only",
                        "kpod_vs_cot", "schedule_vs_bruteforce", "curriculum_target_tokens",
                        *kb.ABLATIONS}  # fmt: skip
    for name in kb.ABLATIONS:
        assert got[name]["comparator"] == "info" and len(got[name]["details"]["per_seed"]) == 2
        assert len(got[name]["details"]["paired_delta_points"]) == 2
    lo, hi = got["difficulty_spearman"]["details"]["gap_95ci_bootstrap_over_questions"]
    assert lo <= hi
    assert "worth_per_token" in got["keypoint_auroc"]["details"]["calibration"]
