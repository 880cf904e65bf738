"""Timeline plot: per-rank compute-only step times over wall time, and the controller's actions."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_timeline"]


def plot_timeline(status: dict[str, Any], out: str) -> None:
    """``status``: a master status dict with a ``timeline`` list of step statistics
    (``rank, step, samples, compute_s, step_s, t``) and ``actions``. Writes a PNG atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover
        raise SystemExit("the timeline plot needs matplotlib: pip install 'antdt[plots]'") from e
    from shared import atomic_write

    rows = status.get("timeline") or []
    if not rows:
        raise ValueError("status has no timeline rows (take it from the bench or a running master)")
    ranks = sorted({r["rank"] for r in rows})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for rank in ranks:
        rs = sorted((r for r in rows if r["rank"] == rank), key=lambda r: r["step"])
        steps = [r["step"] for r in rs]
        ax1.plot(steps, [r["compute_s"] for r in rs], marker=".", label=f"rank {rank}")
        ax2.plot(steps, [r["samples"] for r in rs], marker=".", label=f"rank {rank}")
    for a in status.get("actions", []):
        if "effective_step" in a:
            for ax in (ax1, ax2):
                ax.axvline(a["effective_step"], color="k", ls="--", lw=0.8)
            ax1.annotate(a["kind"], (a["effective_step"], ax1.get_ylim()[1]), fontsize=8, va="top")
    ax1.set_ylabel("compute-only step time (s)")
    ax2.set_ylabel("batch size")
    ax2.set_xlabel("step")
    ax1.legend(fontsize=8)
    ax1.set_title(
        "AntDT timeline: per-rank compute time and batch size; dashed = controller action"
    )
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
