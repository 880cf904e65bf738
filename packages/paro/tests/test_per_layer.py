"""Per-layer gathering with prefetch and release, and per-layer gradient reduction overlapping
backward (issue 16), under real gloo processes (4 ranks = 2 groups of 2, in the session's engine
spawn): bit-equal to whole-model gathering, memory bounded by two layers, the schedule, misuse,
clipping, unused parameters, checkpoints across modes and mixed precision."""

from __future__ import annotations

import pytest
import torch
from _paro_layer_workers import EQUAL_STRATEGIES, equality
from paro.strategy import SUPPORTED

from shared import spawn


@pytest.fixture
def layers(engine_results):
    return [r["layers"] for r in engine_results]


@pytest.mark.parametrize("strategy", EQUAL_STRATEGIES)
def test_per_layer_bit_equal_to_whole_model(layers, strategy):
    for r in layers:
        row = r["equality"][strategy]
        assert row["whole"]["units"] == ["<root>"]
        assert row["layers"]["units"] == ["<root>"] + [f"layers.{i}" for i in range(4)]
        labels = ["layers"]
        if strategy in ("NIG", "IIG"):
            labels += ["layers_plain", "whole_backend_rs"]
        for label in labels:
            assert torch.equal(row[label]["params"], row["whole"]["params"]), (strategy, label)
            assert row[label]["current"] == 0  # nothing left gathered between steps
        assert row["whole"]["current"] == 0


def test_memory_peak_two_layers(layers):
    for r in layers:
        for strategy, row in r["memory"].items():
            sizes = row["layers"]["sizes"]
            root = sizes.pop("<root>")
            assert len(sizes) == 8
            whole = row["whole"]["peak"]
            per_layer = row["layers"]["peak"]
            # whole-model: every layer gathered (and its gradient buffer) at once
            assert whole == sum(row["whole"]["sizes"].values()), strategy
            # per-layer: the root plus at most two layers (parameters + gradient buffer)
            assert per_layer <= root + 2 * max(sizes.values()), (strategy, per_layer)
            assert per_layer < whole / 2, (strategy, per_layer, whole)
            # persistent state is the same in both modes
            assert row["layers"]["state"] == row["whole"]["state"], strategy


def test_reduction_queued_while_backward_runs(layers):
    for r in layers:
        s = r["schedule"]
        assert s["order"] == [f"layers.{i}" for i in range(4)]
        queued = [e for e in s["events"] if e[0] == "queued"]
        runs = [e for e in s["events"] if e[0] == "run"]
        assert len(queued) == len(runs) == 4
        # in reverse layer order, each queued while other gradients were still to come
        assert [e[2] for e in queued] == [f"layers.{i}" for i in (3, 2, 1, 0)]
        assert all(e[1] < s["n_params"] for e in queued), queued
        assert all(e[2].startswith("paro-comm") for e in runs), runs


@pytest.mark.parametrize("strategy", ["NIG", "IIG"])
def test_per_layer_misuse_clip_unused(layers, strategy):
    for r in layers:
        m = r["misuse"][strategy]
        assert m["units"] == ["<root>"] + [f"layers.{i}" for i in range(4)]
        kind, msg = m["direct_backward"]
        assert kind == "RuntimeError" and "engine.backward(loss)" in msg, m["direct_backward"]
        assert m["after_direct_current"] == 0  # the aborted forward left nothing gathered
        kind, msg = m["grad_read"]
        assert kind == "sharded" and "clip_grad_norm_" in msg
        assert m["gathered_grad_diff"] <= 1e-12
        for a, b in m["norms"]:
            assert abs(a - b) <= 1e-12 * a
        assert m["param_diff"] <= 1e-12  # clipped AdamW steps equal DDP's
        assert m["spare_unchanged"]
        if strategy == "NIG":
            assert m["param_read"][0] == "ok" and m["layer_call"][0] == "ok"
        else:
            assert m["param_read"][0] == "sharded" and "gathered_parameters" in m["param_read"][1]
            assert m["layer_call"][0] == "sharded"
        assert m["no_grad_forward"] <= 1e-12
        assert m["no_grad_current"] == 0
        assert m["failing_backward"] == ("ValueError", "boom")
        assert m["failed_current"] == 0  # gathered layers and gradient buffers all freed
        kind, msg = m["after_fail"]
        assert kind == "RuntimeError" and "zero_grad" in msg
        assert m["after_zero_grad_current"] == 0
        assert m["resumed"][0] == "ok"
        kind, msg = m["strict"]
        assert kind == "RuntimeError" and "layers.2.spare.weight" in msg


def test_wrap_forms_and_errors(layers):
    m = layers[0]["misuse"]
    blocks = [f"layers.{i}" for i in range(4)]
    assert m["wrap_class"] == ["<root>", *blocks]
    assert m["wrap_list"] == ["<root>", "layers.0", "layers.2"]
    assert m["wrap_none"] == ["<root>"]
    assert m["wrap_nested"][0] == "ValueError" and "nested" in m["wrap_nested"][1]
    assert m["wrap_foreign"][0] == "ValueError" and "not a submodule" in m["wrap_foreign"][1]
    assert m["wrap_absent"][0] == "ValueError" and "no submodule" in m["wrap_absent"][1]
    assert m["wrap_bad"][0] == "ValueError" and "'auto'" in m["wrap_bad"][1]
    assert m["rs_bad"][0] == "ValueError" and "'ring'" in m["rs_bad"][1]
    assert m["rs_default"] == "ring"  # gloo


def test_per_layer_checkpoints_and_mixed_precision(layers):
    for r in layers:
        c = r["ckpt"]
        assert c["resumed"]["layers_NIG"] == ("sharded", 0.0)
        # other units or strategy: the ranks' files are consolidated, the run continues equal
        assert c["resumed"]["whole_NIG"] == ("consolidated", 0.0)
        how, diff = c["resumed"]["layers_IIG"]
        assert how == "consolidated" and diff == 0.0
        assert c["bf16_equal"] and c["bf16_losses_equal"]
        whole, per_layer = c["bf16_bytes"]
        assert whole == per_layer
        assert c["bf16_dtype"] == "torch.bfloat16"


@pytest.mark.slow
def test_all_fourteen_strategies_per_layer_bit_equal():
    res = spawn(equality, 4, args=(SUPPORTED, 3, SUPPORTED), timeout_s=900)
    for r in res:
        for strategy in SUPPORTED:
            row = r[strategy]
            for label in ("layers", "layers_plain", "whole_backend_rs"):
                assert torch.equal(row[label]["params"], row["whole"]["params"]), (strategy, label)
