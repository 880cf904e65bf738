"""Per-stage timeline plot: one panel per strategy, one row per device, one bar per stage."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from rlhf_place.runtime import RunResult

__all__ = ["STAGE_COLORS", "plot_timelines"]

STAGE_COLORS = {
    "sync": "#8c564b",
    "generate": "#1f77b4",
    "exchange": "#7f7f7f",
    "infer": "#2ca02c",
    "train": "#d62728",
}


def plot_timelines(
    results: Mapping[str, RunResult], path: str | Path, *, iteration: int = -1, title: str = ""
) -> Path:
    """Draw ``results[name].timelines[iteration]`` for every strategy into ``path`` (PNG,
    written atomically). Needs matplotlib (extra ``plots``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ModuleNotFoundError(
            'the timeline plot needs matplotlib: pip install "rlhf-place[plots]"'
        ) from e
    from shared import atomic_write_bytes

    if not results:
        raise ValueError("no results to plot")
    names = list(results)
    fig, axes = plt.subplots(
        len(names),
        1,
        figsize=(9, 1.2 + 0.55 * sum(len(results[n].timelines[iteration]) for n in names)),
        squeeze=False,
        sharex=True,
    )
    for ax, name in zip(axes[:, 0], names, strict=True):
        res = results[name]
        per_rank = res.timelines[iteration]
        for rank, events in enumerate(per_rank):
            for stage, s, e in events:
                ax.barh(rank, e - s, left=s, height=0.6, color=STAGE_COLORS.get(stage, "#bcbd22"))
        ax.set_yticks(range(len(per_rank)))
        ax.set_yticklabels([f"dev {r}" for r in range(len(per_rank))])
        ax.invert_yaxis()
        t = res.iteration_times[iteration]
        ax.set_title(f"{name}: {t:.2f} s/iteration", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds since the iteration started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STAGE_COLORS.values()]
    fig.legend(handles, list(STAGE_COLORS), loc="upper right", ncol=len(STAGE_COLORS), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
