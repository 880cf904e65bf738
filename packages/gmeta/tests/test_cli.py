"""The CLI: build-tasks / train / eval in-process, bad input (exit 2), and a real torchrun job
with a rank killed mid-run, restarted, resumed from its checkpoint, equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gmeta.__main__ import main
from gmeta.checkpoint import latest_checkpoint, load_checkpoint
from gmeta.metaio import MetaIOLoader, read_header
from gmeta.train import TrainConfig, build_trainer

from shared import find_free_port


def test_build_train_eval_in_process(tmp_path, capsys):
    w, c = tmp_path / "w.parquet", tmp_path / "c.parquet"
    assert (
        main(
            [
                "build-tasks",
                "--source",
                "synthetic",
                "--users",
                "120",
                "--out",
                str(w),
                "--cold-out",
                str(c),
                "--k",
                "4",
                "--q",
                "4",
            ]
        )
        == 0
    )
    built = json.loads(capsys.readouterr().out)
    assert built["tasks"] == read_header(w)["n_tasks"] and built["cold_tasks"] > 0
    run = tmp_path / "run"
    args = [
        "train",
        "--tasks",
        str(w),
        "--out",
        str(run),
        "--steps",
        "3",
        "--tasks-per-batch",
        "16",
        "--checkpoint-every",
        "1",
        "--keep",
        "2",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["resumed_from"] is None
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [
        "step-00000002",
        "step-00000003",
    ]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    # a second call resumes from the finished run instead of starting over
    assert main([*args[:5], "--steps", "4", *args[7:]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 3
    assert main(["eval", "--run", str(run), "--tasks", str(c)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert 0.0 <= ev["auc"] <= 1.0 and ev["checkpoint"].endswith("step-00000004")


def test_parquet_source_and_bad_input(tmp_path, capsys):
    import pyarrow.parquet as pq
    from gmeta.synthetic import SyntheticConfig, generate_log

    log = tmp_path / "log.parquet"
    pq.write_table(generate_log(SyntheticConfig(n_users=50)).log, log)
    out = tmp_path / "t.parquet"
    assert (
        main(
            [
                "build-tasks",
                "--source",
                "parquet",
                "--input",
                str(log),
                "--out",
                str(out),
                "--fields",
                "item_id:64:hash,category:8,ctx:6",
                "--dense",
                "dense_0,dense_1",
                "--k",
                "3",
                "--q",
                "3",
            ]
        )
        == 0
    )
    assert read_header(out)["num_rows"] == 78
    capsys.readouterr()
    # a field whose ids do not fit: exit 2 with the reason
    assert (
        main(
            [
                "build-tasks",
                "--source",
                "parquet",
                "--input",
                str(log),
                "--out",
                str(out),
                "--fields",
                "item_id:5",
                "--dense",
                "dense_0",
            ]
        )
        == 2
    )
    assert "outside [0, 5)" in capsys.readouterr().err
    assert main(["build-tasks", "--source", "antm2c", "--out", str(out)]) == 2
    assert "--input" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--tasks", str(out)]) == 2
    assert "not a gmeta run" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet")
    assert main(["train", "--tasks", str(tmp_path / "junk.parquet"), "--out", str(tmp_path)]) == 2
    assert "not a readable parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(
            [
                "build-tasks",
                "--source",
                "parquet",
                "--input",
                str(log),
                "--out",
                str(out),
                "--fields",
                "item_id",
                "--dense",
                "dense_0",
            ]
        )
    assert e.value.code == 2


def test_torchrun_kill_restart_resume_equals_uninterrupted(task_file, tmp_path):
    run = tmp_path / "run"
    steps, b = 5, 6
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{find_free_port()}",
        "--monitor-interval",
        "0.5",
        "-m",
        "gmeta",
        "train",
        "--tasks",
        task_file,
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--tasks-per-batch",
        str(b),
        "--checkpoint-every",
        "2",
        "--dtype",
        "float64",
        "--embedding-dim",
        "4",
        "--bottom",
        "8",
        "--top",
        "8",
        "--adapt",
        "dense+emb",
        "--outer-lr",
        "0.05",
        "--fail-at-step",
        "3",
        "--fail-rank",
        "1",
        "--prefetch",
        "1",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    # the first attempt died after step 3 (checkpoint at 2): the restart resumed from step 2
    assert summary["world"] == 2 and summary["resumed_from"] == 2 and summary["steps"] == steps
    cfg = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    header = read_header(task_file)
    got = build_trainer(cfg, header)
    load_checkpoint(latest_checkpoint(run / "checkpoints"), got)
    want = build_trainer(cfg, header)
    it = iter(MetaIOLoader(task_file, b, prefetch=0, epochs=None))
    for _ in range(steps):
        want.step(next(it))
    for (k, x), y in zip(got.model.named_parameters(), want.model.parameters(), strict=True):
        assert float((x - y).detach().abs().max()) < 1e-10, k
    assert np.abs(got.table.full_weight().numpy() - want.table.full_weight().numpy()).max() < 1e-10
