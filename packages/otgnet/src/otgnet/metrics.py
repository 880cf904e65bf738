"""Continual-learning metrics (official ``train.py`` end; dossier B5).

``M[i, j]`` is the accuracy (in %) on task ``j``'s test nodes after training task ``i``
(``NaN`` for ``j > i``).

- **AP** ("average performance"; the paper's "AP" is *not* average precision): the mean of the
  last row, ``mean_j M[T-1, j]``.
- **AF** (average forgetting), as the official code computes it: for each task but the last, the
  best accuracy ever reached on it (the final one included, so each term is >= 0) minus the final
  one, averaged. ``include_final=False`` gives the usual definition (Chaudhry et al. 2018), best
  over ``i < T-1`` only, which can be negative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["average_accuracy", "average_forgetting", "plot_accuracy_matrices"]


def _check(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T), got shape {m.shape}")
    low = np.tril(np.ones(m.shape, bool))
    if np.isnan(m[low]).any():
        raise ValueError("accuracy matrix has NaN on or below the diagonal")
    return m


def average_accuracy(m) -> float:
    """AP: mean final accuracy over all tasks."""
    m = _check(m)
    return float(m[-1].mean())


def average_forgetting(m, include_final: bool = True) -> float:
    """AF: mean over tasks ``j < T-1`` of ``max_i M[i, j] - M[T-1, j]`` (see module docstring)."""
    m = _check(m)
    t = m.shape[0]
    if t < 2:
        return 0.0
    terms = []
    for j in range(t - 1):
        hist = m[j:t, j] if include_final else m[j : t - 1, j]
        terms.append(hist.max() - m[t - 1, j])
    return float(np.mean(terms))


def plot_accuracy_matrices(
    matrices: dict[str, np.ndarray], path: str | Path, title: str = ""
) -> Path:
    """One heatmap per system (tasks trained x task evaluated), written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared import atomic_write_bytes

    k = len(matrices)
    if k == 0:
        raise ValueError("no matrices to plot")
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
    for a, (ax, (name, m)) in enumerate(zip(axes[0], matrices.items(), strict=True)):
        m = np.asarray(m, float)
        im = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=100, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="w" if m[i, j] < 60 else "k",
                    )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("evaluated task")
        if a == 0:
            ax.set_ylabel("after training task")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
