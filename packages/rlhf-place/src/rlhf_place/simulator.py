"""A simulator of the paper's GPU-cluster settings, from the cost model. **Modelled, not measured.**

The paper reports "up to 11x" over DeepSpeed-Chat for LLaMA-family models of several sizes on
A100 clusters (dossier §2.7; the per-setting tables were not available to us, so the settings
below are our reconstruction of "models of varying sizes and devices of different scales").

Assumptions (all in :data:`A100_CLUSTER` and :data:`PAPER_SETTINGS`):

- A100-80GB, 8 per node; effective 40 % of 312 TFLOP/s bf16 for dense math; 1.6 TB/s effective
  HBM; NVLink 250 GB/s per GPU inside a node; 25 GB/s per GPU across nodes (200 Gb/s HDR per GPU).
- A decoding step of a training-framework model (HF ``generate``, DeepSpeed Hybrid Engine) costs
  at least 20 ms of fixed overhead (launches, Python); an inference-optimised engine
  (vLLM-like, Separation's ``tp``) 4 ms.
- PPO: 1 epoch, 1 mini-batch per iteration, prompts and responses of 256 tokens, bf16 + fp32 Adam.
- Baseline "DeepSpeed-Chat": Flattening with the best ZeRO stage / micro-batch that fits and either
  Hybrid-Engine generation (gather once) or ZeRO-3 per-token gathering, whichever the model
  ranks faster; "DeepSpeed-Chat ZeRO-3" is Flattening with ZeRO-3 per-token generation only.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_place.cost import Hardware, ModelSpec, StageCost, Workload
from rlhf_place.planner import plan

__all__ = ["A100_CLUSTER", "LLAMA", "PAPER_SETTINGS", "SimRow", "format_table", "simulate"]

A100_CLUSTER = Hardware(
    name="A100-80GB x8/node (modelled)",
    flops=0.40 * 312e12,
    hbm_bw=1.6e12,
    memory=80e9,
    bw_intra=250e9,
    bw_inter=25e9,
    devices_per_node=8,
    alpha=20e-6,
    call_overhead_s=5e-3,
    decode_overhead_s=20e-3,
    engine_decode_overhead_s=4e-3,
)

#: LLaMA sizes (parameters, layers, hidden); OPT-350M as DeepSpeed-Chat's small critic.
LLAMA = {
    "350m": ModelSpec("OPT-350M", 0.33e9, 24, 1024),
    "7b": ModelSpec("LLaMA-7B", 6.74e9, 32, 4096),
    "13b": ModelSpec("LLaMA-13B", 13.0e9, 40, 5120),
    "33b": ModelSpec("LLaMA-33B", 32.5e9, 60, 6656),
    "65b": ModelSpec("LLaMA-65B", 65.2e9, 80, 8192),
}

#: (label, actor, critic/reward, GPUs, prompts per iteration)
PAPER_SETTINGS = (
    ("7B/350M, 8 GPUs", "7b", "350m", 8, 256),
    ("7B/7B, 16 GPUs", "7b", "7b", 16, 256),
    ("13B/350M, 16 GPUs", "13b", "350m", 16, 256),
    ("13B/13B, 32 GPUs", "13b", "13b", 32, 512),
    ("33B/7B, 64 GPUs", "33b", "7b", 64, 512),
    ("65B/7B, 128 GPUs", "65b", "7b", 128, 1024),
)


@dataclass(frozen=True)
class SimRow:
    label: str
    devices: int
    best: StageCost
    baseline: StageCost
    zero3_baseline: StageCost | None

    @property
    def speedup(self) -> float:
        return self.baseline.total / self.best.total

    @property
    def speedup_vs_zero3(self) -> float | None:
        return None if self.zero3_baseline is None else self.zero3_baseline.total / self.best.total

    def as_dict(self) -> dict:
        return {
            "setting": self.label,
            "devices": self.devices,
            "best": self.best.as_dict(),
            "baseline": self.baseline.as_dict(),
            "speedup_vs_flatten": self.speedup,
            "speedup_vs_flatten_zero3": self.speedup_vs_zero3,
        }


def simulate(
    settings=PAPER_SETTINGS, hw: Hardware = A100_CLUSTER, gen_len: int = 256
) -> list[SimRow]:
    """Best modelled plan vs the Flattening baseline, per setting."""
    rows = []
    for label, a, c, n, batch in settings:
        w = Workload(actor=LLAMA[a], critic=LLAMA[c], batch=batch, prompt_len=256, gen_len=gen_len)
        ranked = [x for x in plan(w, hw, n) if x.fits]
        if not ranked:
            raise ValueError(f"{label}: nothing fits")
        flat = [x for x in ranked if x.plan.strategy == "flatten"]
        z3 = [x for x in flat if x.plan.gen == "zero3"]
        rows.append(SimRow(label, n, ranked[0], flat[0], z3[0] if z3 else None))
    return rows


def format_table(rows: list[SimRow]) -> str:
    lines = [
        "| setting (modelled) | best plan | best s/iter | DeepSpeed-Chat-style flatten | flatten s/iter | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.best.plan.label()} | {r.best.total:.1f} | {r.baseline.plan.label()} "
            f"| {r.baseline.total:.1f} | {r.speedup:.2f}x |"
        )
    return "\n".join(lines)
