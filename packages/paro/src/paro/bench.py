"""The package's claims (``python -m paro bench``), measured side by side and written via
:func:`shared.write_results`.

1. Bytes each rank communicates (intra / inter / global), recorded with :func:`shared.record_comm`,
   equal the cost model for every strategy.
2. Per-rank bytes of parameters, gradients and optimizer states equal the memory model.
3. Every strategy's parameters after k steps equal DDP's (bit-equal on exact data; <= 1e-6
   relative with AdamW on an MLP).
4. HO-Ring vs flat-ring all-reduce under the two-node emulation: time ratio <= 0.75, and the bytes
   crossing the link match the prediction.
5. Under the emulation, NIG's step throughput >= 1.2x ZeRO-3 (GGG with flat collectives).
6. DeepSpeed ZeRO-1/2/3 run the same training step: parameters match NNG/NGG/GGG.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from paro.cost import allreduce_volume
from paro.emulation import EmulationConfig, availability, run_emulated
from paro.experiment import RunConfig, run_many
from paro.strategy import PAPER_STRATEGIES, SUPPORTED
from paro.topology import Topology
from shared import Claim, progress, spawn, write_results

__all__ = ["run_bench"]

ZERO_LIKE = ("NNN", "NNG", "NGG", "GGG")


def _strategy_runs(quick: bool) -> dict[str, Any]:
    """Three configurations on 4 ranks (2 groups of 2), one process start-up each."""
    steps = 2 if quick else 4
    cfgs = {
        "mlp_hier": RunConfig(model="mlp", strategies=PAPER_STRATEGIES, steps=steps, accum_steps=2),
        "mlp_flat": RunConfig(
            model="mlp", strategies=ZERO_LIKE, steps=steps, accum_steps=2, global_comm="flat"
        ),
        "dyadic_all": RunConfig(model="dyadic", strategies=SUPPORTED, steps=steps, accum_steps=2),
    }
    res = spawn(run_many, 4, args=(list(cfgs.values()),), timeout_s=900)
    return {k: [r[i] for r in res] for i, k in enumerate(cfgs)}


def _claims_from_runs(runs: dict[str, Any]) -> list[Claim]:
    byte_rows, mem_rows, rel = {}, {}, {}
    bytes_ok = mem_ok = total = 0
    for cfg_name in ("mlp_hier", "mlp_flat"):
        res = runs[cfg_name]
        for name in res[0]["strategies"]:
            key = f"{name}/{cfg_name.split('_')[1]}"
            total += 1
            b_match = all(
                r["strategies"][name]["bytes"] == r["strategies"][name]["bytes_model"] for r in res
            )
            m_match = all(
                r["strategies"][name]["memory"] == r["strategies"][name]["memory_model"]
                for r in res
            )
            bytes_ok += b_match
            mem_ok += m_match
            s0 = res[0]["strategies"][name]
            byte_rows[key] = {
                "measured": s0["bytes"],
                "model": s0["bytes_model"],
                "equal_all_ranks": b_match,
            }
            mem_rows[key] = {
                "measured": s0["memory"],
                "model": s0["memory_model"],
                "equal_all_ranks": m_match,
            }
            worst = 0.0
            for r in res:
                ref = r["ddp_params"]
                d = (r["strategies"][name]["params"] - ref).norm() / ref.norm()
                worst = max(worst, float(d))
            rel[key] = worst
    dy = runs["dyadic_all"]
    bit_equal = {
        n: all(torch.equal(r["strategies"][n]["params"], r["ddp_params"]) for r in dy)
        for n in dy[0]["strategies"]
    }
    dy_bytes = all(
        r["strategies"][n]["bytes"] == r["strategies"][n]["bytes_model"]
        for r in dy
        for n in bit_equal
    )
    return [
        Claim(
            "params_bit_equal_exact_data",
            "Strategies (all 14 supported) whose parameters after k SGD steps on exact (integer-gradient) data are bit-equal to DDP's on every rank",
            sum(bit_equal.values()),
            len(bit_equal),
            "==",
            unit="strategies",
            details={"per_strategy": bit_equal},
        ),
        Claim(
            "bytes_equal_cost_model",
            "Strategy runs (4 ranks, 2 groups) whose recorded per-rank intra/inter/global bytes equal the cost model on every rank",
            bytes_ok,
            total,
            "==",
            unit="runs",
            paper="§3.4 communication tables",
            details={"runs": byte_rows, "dyadic_all_14_equal": dy_bytes},
        ),
        Claim(
            "memory_equal_model",
            "Strategy runs whose per-rank parameter/gradient/optimizer-state bytes equal the memory model on every rank",
            mem_ok,
            total,
            "==",
            unit="runs",
            paper="§3.3 Mem(p,g,os)",
            details={"runs": mem_rows},
        ),
        Claim(
            "params_equal_ddp",
            "Max over strategies of ||θ - θ_DDP|| / ||θ_DDP|| after k AdamW steps (4 ranks, 2 groups); exact-data runs must be bit-equal",
            max(rel.values()),
            1e-6,
            "<=",
            paper="convergence of NIG/IGG/IIG matches ZeRO-3",
            details={
                "per_run": rel,
            },
        ),
    ]


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _emulation_claims(quick: bool) -> list[Claim]:
    ok, why = availability()
    # 25 Mbit/s: loopback between 8 processes on 2 shared cores moves ~30 MB/s per rank, so the
    # intra/inter bandwidth ratio is ~10, the paper's NVLink-vs-network regime (see README)
    rate = 25.0
    emu = EmulationConfig(ranks_per_node=4, rate_mbit=rate, timeout_s=500)
    topo = Topology(8, 4)
    numel = (1 if quick else 2) * 1024 * 1024
    repeats = 3 if quick else 7
    common = {"nodes": 2, "ranks_per_node": 4, "rate_mbit": rate}
    ar: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    err_ar = err_train = why
    if ok:
        try:
            spec = {"numel": numel, "repeats": repeats, "pipeline_chunks": 4}
            ar = run_emulated("allreduce", spec, emu)[0]
            err_ar = ""
        except RuntimeError as e:
            err_ar = str(e)[-800:]
        try:
            spec = {
                "width": 384 if quick else 768,
                "accum_steps": 2,
                "repeats": repeats,
                "runs": {
                    "NIG": ["NIG", "hier"],
                    "GGG_flat": ["GGG", "flat"],
                    "GGG_hier": ["GGG", "hier"],
                },
            }
            train = run_emulated("train", spec, emu)[0]
            err_train = ""
        except RuntimeError as e:
            err_train = str(e)[-800:]
    claims = []
    if ar is not None:
        t = {k: _median(v) for k, v in ar["times"].items()}
        flat = min(t["flat_ring"], t["gloo"])
        ratio = t["horing_pipelined"] / flat
        details = {
            **common,
            "bytes": 4 * numel,
            "median_s": t,
            "correct": ar["correct"],
            "repeats": repeats,
            "pipeline_chunks": 4,
            "sequential_phases_ratio": t["horing"] / flat,
        }
        claims.append(
            Claim(
                "horing_time_ratio",
                "HO-Ring all-reduce time (4 pipelined pieces: intra and inter phases overlap) / best flat ring (own P2P ring or gloo all_reduce), 2 emulated nodes x 4 ranks; the sequential-phase ratio is in details",
                ratio,
                0.75,
                "<=",
                baseline=1.0,
                unit="x",
                paper="HO-Ring +32.6% (v1) / +36.5% (v2) over Ring",
                details=details,
            )
        )
        pred = {a: allreduce_volume(4 * numel, topo, a)["boundary"] for a in ("horing", "flat")}
        meas = ar["link_tx_bytes"]
        claims.append(
            Claim(
                "horing_inter_bytes",
                "Bytes node A sent over the link during one HO-Ring all-reduce / predicted payload 2(g-1)/g·S (kernel counters include TCP/IP headers)",
                meas["horing_pipelined"] / pred["horing"],
                1.0,
                "~=",
                tolerance=0.10,
                baseline=meas["flat_ring"] / pred["flat"],
                unit="x",
                paper="inter-node bytes 2(g-1)/g·S vs 2(n-1)/n·S",
                details={**common, "measured_tx_bytes": meas, "predicted_payload": pred},
            )
        )
    else:
        for name in ("horing_time_ratio", "horing_inter_bytes"):
            claims.append(
                Claim(
                    name,
                    "HO-Ring under the two-node emulation (not run)",
                    None,
                    0.75 if name == "horing_time_ratio" else 1.0,
                    "<=" if name == "horing_time_ratio" else "~=",
                    tolerance=0.10,
                    details={"reason": err_ar or why},
                )
            )
    if train is not None:
        t = {k: _median(v) for k, v in train["times"].items()}
        claims.append(
            Claim(
                "nig_vs_zero3_throughput",
                "Step throughput of NIG / ZeRO-3 (GGG, flat collectives as in DeepSpeed), 2 emulated nodes x 4 ranks, 2 micro-steps",
                t["GGG_flat"] / t["NIG"],
                1.2,
                ">=",
                baseline=1.0,
                unit="x",
                paper="1.2-2.6x (v1), up to 266% vs ZeRO-3 (NeurIPS)",
                details={
                    **common,
                    "median_step_s": t,
                    "numel": train["numel"],
                    "link_tx_bytes_first_step": train["link_tx_bytes"],
                    "nig_vs_ggg_hier": t["GGG_hier"] / t["NIG"],
                },
            )
        )
    else:
        claims.append(
            Claim(
                "nig_vs_zero3_throughput",
                "NIG vs ZeRO-3 under the two-node emulation (not run)",
                None,
                1.2,
                ">=",
                details={"reason": err_train or why},
            )
        )
    return claims


def _deepspeed_claim(quick: bool) -> Claim:
    from paro import deepspeed_baseline as dsb

    ok, why = dsb.availability()
    if not ok:
        return Claim(
            "deepspeed_zero_match",
            "DeepSpeed ZeRO-1/2/3 vs NNG/NGG/GGG (not run)",
            None,
            1e-5,
            "<=",
            details={"reason": why},
        )
    try:
        res = dsb.compare_with_deepspeed(steps=2 if quick else 3)
    except Exception as e:  # report, never hide
        return Claim(
            "deepspeed_zero_match",
            "DeepSpeed ZeRO-1/2/3 vs NNG/NGG/GGG (failed)",
            None,
            1e-5,
            "<=",
            details={"reason": f"{type(e).__name__}: {e}"[-800:]},
        )
    return Claim(
        "deepspeed_zero_match",
        "Max ||θ_DS - θ_paro|| / ||θ_paro|| after k AdamW steps: DeepSpeed ZeRO-1/2/3 (CPU, gloo) vs this engine's NNG/NGG/GGG",
        max(res["rel_diff"].values()),
        1e-5,
        "<=",
        unit="",
        paper="ZeRO-1/2/3 = NNG/NGG/GGG",
        details=res,
    )


def run_bench(
    output: str | Path | None = None,
    *,
    quick: bool = False,
    emulation: bool = True,
    deepspeed: bool = True,
    log: Callable[[str], None] = print,
) -> list[Claim]:
    """Run every claim and write ``results/paro.json`` (or ``output``)."""
    stages = ["strategies", "emulation", "deepspeed"]
    claims: list[Claim] = []
    for stage in progress(stages, desc="paro bench"):
        if stage == "strategies":
            claims += _claims_from_runs(_strategy_runs(quick))
        elif stage == "emulation":
            if emulation:
                claims += _emulation_claims(quick)
        elif deepspeed:
            claims.append(_deepspeed_claim(quick))
        log(f"[paro bench] {stage} done")
    path = write_results("paro", claims, output, quick=quick)
    for c in claims:
        log(f"  {c.name}: measured={c.measured} target {c.comparator} {c.target} holds={c.holds}")
    log(f"wrote {path}")
    return claims
