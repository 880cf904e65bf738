"""Synthetic AntM2C: the real release's CSV layout with a planted, known click model.

:func:`generate` writes ``antm2c_synth_part{k}`` CSV parts with exactly the header and column
order of the public ``antm2c_10m_part{k}`` files (:data:`antm2c.schema.RAW_COLUMNS`), so the
real loader is what gets exercised. It streams in chunks (constant memory at any size) and the
bytes are a pure function of the config (same seed -> identical files).

Planted structure (all of it ours; the paper publishes no generative model):

* a low-rank (``rank``) user x category affinity ``U[u] . C[c]`` shared across all scenes, each
  scene applying its own scale (multi-scenario transfer is possible and useful);
* main effects scaled by ``main_effects``: scene bias, user bias, item bias, one numeric feature;
  with ``main_effects=0`` the signal is interaction-only (a logistic regression sees nothing);
* a pure pairwise interaction between two categorical deep features (``deep_features_2``, a user
  segment, and ``deep_features_3``, a per-impression context slot) with zero row/column means;
* text that carries the item category: titles and ``item_entity_names`` use words of the item's
  category; user bill/service/query entity sequences use words of the user's favourite categories;
* cold users and items that appear only after the validation cutoff (the test period);
* a positive rate near ``positive_rate`` (the release's is ~0.35; negatives look down-sampled).

The returned :class:`GroundTruth` holds the planted parameters and the path of ``truth.parquet``
(true click probability and logit for every row, keyed by the data-row number).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shared import atomic_write, atomic_write_text

from .schema import DEEP_FEATURES, N_SCENES, RAW_COLUMNS, DeepFeatureTypes

__all__ = ["GroundTruth", "SynthConfig", "generate", "part_paths"]

COMMUNITY_CUTOFFS = ("2023-08-03 00:00:00", "2023-08-05 00:00:00")
_SYLL = (
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "to",
    "vi",
    "da",
    "fe",
    "go",
    "hu",
    "ji",
    "be",
    "po",
    "qu",
    "ze",
    "wa",
    "yo",
    "ci",
    "mo",
    "li",
    "na",
    "te",
)
PAIR_FEATURES = (2, 3)  # deep_features_2 (user segment) x deep_features_3 (context slot)
CATEGORY_FEATURE = 0  # deep_features_0 carries the item category code
NUMERIC_SIGNAL = 19  # deep_features_19 carries a weak numeric main effect


@dataclass(frozen=True)
class SynthConfig:
    """Size and signal of a synthetic release. Validated on construction."""

    n_rows: int = 100_000
    n_users: int = 2_000
    n_items: int = 3_000
    n_categories: int = 20
    rank: int = 4
    scene_weights: tuple[float, ...] = (0.15, 0.3, 0.4, 0.13, 0.02)
    affinity: float = 1.5
    main_effects: float = 1.0
    pair_strength: float = 1.0
    positive_rate: float = 0.35
    start: str = "2023-07-10 00:00:00"
    days: int = 28
    cutoffs: tuple[str, str] = COMMUNITY_CUTOFFS
    cold_user_frac: float = 0.1
    cold_item_frac: float = 0.15
    cold_user_rate: float = 0.2
    cold_item_rate: float = 0.3
    n_parts: int = 1
    entity_sep: str = ","
    image_dim: int = 0
    chunk_rows: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig: {msg}")

        for name in (
            "n_rows",
            "n_users",
            "n_items",
            "n_categories",
            "rank",
            "days",
            "n_parts",
            "chunk_rows",
        ):
            v = getattr(self, name)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"{name} must be a positive int, got {v!r}",
            )
        need(
            len(self.scene_weights) == N_SCENES,
            f"scene_weights needs {N_SCENES} entries, got {len(self.scene_weights)}",
        )
        need(all(w > 0 for w in self.scene_weights), "scene_weights must all be > 0")
        need(0 < self.positive_rate < 1, "positive_rate must be in (0, 1)")
        for name in ("cold_user_frac", "cold_item_frac", "cold_user_rate", "cold_item_rate"):
            need(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1)")
        need(self.n_items >= 4 * N_SCENES, f"n_items must be >= {4 * N_SCENES}")
        need(self.n_users >= 10, "n_users must be >= 10")
        need(self.image_dim >= 0, "image_dim must be >= 0")
        need(
            len(self.entity_sep) == 1 and self.entity_sep not in '\n\r"',
            f"entity_sep must be one character other than quote/newline, got {self.entity_sep!r}",
        )
        need(isinstance(self.seed, int) and self.seed >= 0, "seed must be an int >= 0")
        t0 = _parse(self.start, "start")
        c1, c2 = (_parse(c, "cutoffs") for c in self.cutoffs)
        end = t0 + dt.timedelta(days=self.days)
        need(t0 < c1 < c2 < end, f"need start < cutoffs[0] < cutoffs[1] < start+days ({end})")

    @property
    def t_start(self) -> dt.datetime:
        return _parse(self.start, "start")

    @property
    def t_cutoffs(self) -> tuple[dt.datetime, dt.datetime]:
        return _parse(self.cutoffs[0], "cutoffs"), _parse(self.cutoffs[1], "cutoffs")


def _parse(s: str, what: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"SynthConfig: {what} must look like 2023-08-03 00:00:00, got {s!r}"
        ) from e


@dataclass
class GroundTruth:
    """Planted parameters of one generated data set and where the per-row truth lives."""

    config: SynthConfig
    out_dir: Path
    parts: list[Path]
    truth_path: Path
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    category_factors: np.ndarray
    item_category: np.ndarray
    item_scene: np.ndarray
    cold_users: np.ndarray
    cold_items: np.ndarray
    image_path: Path | None = None
    stats: dict = field(default_factory=dict)

    def probabilities(self) -> np.ndarray:
        """True click probability of every data row, in file order (parts concatenated)."""
        return pq.read_table(self.truth_path, columns=["p_click"]).column(0).to_numpy()


def part_paths(out_dir: str | Path, n_parts: int) -> list[Path]:
    return [Path(out_dir) / f"antm2c_synth_part{k}" for k in range(n_parts)]


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLL, size=int(rng.integers(2, 4))))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


class _World:
    """The planted parameters, drawn once from the seed."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 7])
        self.cfg = cfg
        nu, ni, nc, r = cfg.n_users, cfg.n_items, cfg.n_categories, cfg.rank
        u = rng.normal(size=(nu, r)) / r**0.25
        c = rng.normal(size=(nc, r)) / r**0.25
        self.U = u - u.mean(0)
        self.C = c - c.mean(0)
        w = np.asarray(cfg.scene_weights, float)
        counts = np.maximum(4, np.floor(ni * w / w.sum()).astype(int))
        counts[np.argmax(counts)] += ni - counts.sum()
        self.item_scene = np.repeat(np.arange(N_SCENES), counts).astype(np.int8)
        self.item_cat = rng.integers(0, nc, size=ni)
        self.scene_bias = rng.uniform(-0.5, 0.5, N_SCENES)
        self.scene_scale = rng.uniform(0.8, 1.2, N_SCENES)
        self.user_bias = rng.normal(0, 0.4, nu)
        self.item_bias = rng.normal(0, 0.4, ni)
        pw = rng.normal(size=(8, 8))
        pw = pw - pw.mean(0, keepdims=True)
        pw = pw - pw.mean(1, keepdims=True)
        self.pair = pw / pw.std()
        self.user_seg = rng.integers(0, 8, nu)
        self.cold_user = np.zeros(nu, bool)
        self.cold_user[rng.choice(nu, int(nu * cfg.cold_user_frac), replace=False)] = True
        self.cold_item = np.zeros(ni, bool)
        self.scene_items: list[np.ndarray] = []
        self.scene_warm: list[tuple[np.ndarray, np.ndarray]] = []
        self.scene_cold: list[np.ndarray] = []
        for s in range(N_SCENES):
            items = np.flatnonzero(self.item_scene == s)
            k = int(len(items) * cfg.cold_item_frac)
            cold = rng.choice(items, k, replace=False) if k else items[:0]
            self.cold_item[cold] = True
            warm = items[~self.cold_item[items]]
            pop = 1.0 / (rng.permutation(len(warm)) + 10.0) ** 0.8
            self.scene_warm.append((warm, pop / pop.sum()))
            self.scene_cold.append(items[self.cold_item[items]])
        self.warm_users = np.flatnonzero(~self.cold_user)
        self.cold_users = np.flatnonzero(self.cold_user)
        # opaque string ids (bijective scrambles of the index)
        self.user_ids = np.array([f"{(i * 7919 + 1_234_567) % 10**9:09d}" for i in range(nu)])
        self.item_ids = np.array([f"{(i * 104_729 + 98_765) % 10**10:010d}" for i in range(ni)])
        # vocabularies: category words carry the category; filler words carry nothing
        taken: set[str] = set()
        self.cat_words = [_words(rng, 12, taken) for _ in range(nc)]
        self.filler = _words(rng, 60, taken)
        sep = cfg.entity_sep
        self.titles = pa.array(
            [
                " ".join(
                    rng.permutation(
                        [
                            *rng.choice(self.cat_words[self.item_cat[i]], 3, replace=False),
                            *rng.choice(self.filler, 2, replace=False),
                        ]
                    )
                )
                for i in range(ni)
            ]
        )
        self.entity_pool = pa.array(
            [
                sep.join(rng.choice(self.cat_words[cc], int(rng.integers(2, 4)), replace=False))
                for cc in range(nc)
                for _ in range(8)
            ]
        )
        aff = self.U @ self.C.T
        top = np.argsort(-aff, axis=1)[:, :3]
        texts = {}
        for name, length in (("bill", 6), ("service", 4), ("query", 4)):
            col = []
            for uu in range(nu):
                cats = rng.choice(top[uu], length)
                toks = [
                    rng.choice(self.cat_words[cc])
                    if rng.random() < 0.7
                    else rng.choice(self.filler)
                    for cc in cats
                ]
                col.append(sep.join(toks))
            texts[name] = pa.array(col)
        self.user_text = texts
        self.image = None
        if cfg.image_dim:
            proto = rng.normal(size=(nc, cfg.image_dim))
            self.image = proto[self.item_cat] + 0.5 * rng.normal(size=(ni, cfg.image_dim))
        self.offset = 0.0
        self.offset = self._calibrate(rng)

    def logits(self, users, items, scene, ctx, num) -> np.ndarray:
        cfg = self.cfg
        cat = self.item_cat[items]
        aff = np.einsum("ij,ij->i", self.U[users], self.C[cat])
        z = cfg.affinity * self.scene_scale[scene] * aff
        z = z + cfg.main_effects * (
            self.scene_bias[scene] + self.user_bias[users] + self.item_bias[items] + 0.3 * num
        )
        z = z + cfg.pair_strength * self.pair[self.user_seg[users], ctx]
        return z + self.offset

    def _calibrate(self, rng: np.random.Generator) -> float:
        n = 20_000
        scene = rng.choice(
            N_SCENES, n, p=np.asarray(self.cfg.scene_weights) / sum(self.cfg.scene_weights)
        )
        items = np.array(
            [rng.choice(self.scene_warm[s][0], p=self.scene_warm[s][1]) for s in scene[:2000]]
        )
        scene = scene[:2000]
        users = rng.choice(self.warm_users, len(items))
        ctx = rng.integers(0, 8, len(items))
        num = rng.normal(size=len(items))
        z = self.logits(users, items, scene, ctx, num)
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (1 / (1 + np.exp(-(z + mid)))).mean() > self.cfg.positive_rate:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2


def _chunk(world: _World, n: int, row0: int, chunk_index: int) -> tuple[pa.Table, pa.Table]:
    cfg = world.cfg
    rng = np.random.default_rng([cfg.seed, 11, chunk_index])
    t0 = int(cfg.t_start.replace(tzinfo=dt.UTC).timestamp())
    span = cfg.days * 86400
    t = t0 + rng.integers(0, span, n)
    c2 = int(cfg.t_cutoffs[1].replace(tzinfo=dt.UTC).timestamp())
    test = t >= c2
    w = np.asarray(cfg.scene_weights, float)
    scene = rng.choice(N_SCENES, n, p=w / w.sum()).astype(np.int8)
    items = np.empty(n, np.int64)
    u_draw = rng.random(n)
    i_draw = rng.random(n)
    for s in range(N_SCENES):
        m = scene == s
        warm, pop = world.scene_warm[s]
        items[m] = rng.choice(warm, int(m.sum()), p=pop)
        cold = world.scene_cold[s]
        mc = m & test & (i_draw < cfg.cold_item_rate)
        if len(cold) and mc.any():
            items[mc] = rng.choice(cold, int(mc.sum()))
    users = rng.choice(world.warm_users, n)
    mu = test & (u_draw < cfg.cold_user_rate)
    if len(world.cold_users) and mu.any():
        users[mu] = rng.choice(world.cold_users, int(mu.sum()))
    ctx = rng.integers(0, 8, n)
    numeric = np.round(rng.normal(size=(n, len(DeepFeatureTypes().numeric))), 4)
    num_signal = numeric[:, DeepFeatureTypes().numeric.index(NUMERIC_SIGNAL)]
    z = world.logits(users, items, scene, ctx, num_signal)
    p = 1.0 / (1.0 + np.exp(-z))
    label = (rng.random(n) < p).astype(np.int8)

    ts = pa.array(t.astype("datetime64[s]"))
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(world.user_ids).take(pa.array(users)),
        "item_id": pa.array(world.item_ids).take(pa.array(items)),
        "log_time": pc.strftime(ts, format="%Y-%m-%d %H:%M:%S"),
        "label": pa.array(label),
        "bill_entity_seq": world.user_text["bill"].take(pa.array(users)),
        "service_entity_seq": world.user_text["service"].take(pa.array(users)),
        "query_entity_seq": world.user_text["query"].take(pa.array(users)),
        "item_entity_names": world.entity_pool.take(
            pa.array(world.item_cat[items] * 8 + rng.integers(0, 8, n))
        ),
        "item_title": world.titles.take(pa.array(items)),
        "scene": pa.array(scene),
    }
    deep = DeepFeatureTypes()
    k_num = 0
    for i, name in enumerate(DEEP_FEATURES):
        if i in deep.numeric:
            cols[name] = pa.array(numeric[:, k_num])
            k_num += 1
        elif i == CATEGORY_FEATURE:
            cols[name] = pa.array(world.item_cat[items])
        elif i == 1:
            cols[name] = pa.array(items % 13)
        elif i == PAIR_FEATURES[0]:
            cols[name] = pa.array(world.user_seg[users])
        elif i == PAIR_FEATURES[1]:
            cols[name] = pa.array(ctx)
        else:
            cols[name] = pa.array(rng.integers(0, 3 + 7 * i, n))
    table = pa.table([cols[c] for c in RAW_COLUMNS], names=list(RAW_COLUMNS))
    truth = pa.table(
        {
            "row": pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
            "p_click": pa.array(p.astype(np.float32)),
            "logit": pa.array(z.astype(np.float32)),
            "cold_user": pa.array(world.cold_user[users]),
            "cold_item": pa.array(world.cold_item[items]),
        }
    )
    return table, truth


def generate(
    out_dir: str | Path, config: SynthConfig | None = None, *, progress_bar: bool = True
) -> GroundTruth:
    """Write a synthetic release into ``out_dir`` and return its :class:`GroundTruth`.

    Files: ``antm2c_synth_part{k}`` (CSV, header row, real column order), ``truth.parquet``,
    ``synth_manifest.json`` and, with ``image_dim > 0``, ``item_image_embeddings.parquet``
    (item id -> vector tied to its category, standing in for the release's item images).
    All writes are atomic. Memory is bounded by ``chunk_rows`` regardless of ``n_rows``.
    """
    from shared import progress

    cfg = config or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    parts = part_paths(out, cfg.n_parts)
    base, extra = divmod(cfg.n_rows, cfg.n_parts)
    sizes = [base + (1 if k < extra else 0) for k in range(cfg.n_parts)]
    wopts = pcsv.WriteOptions(include_header=True, quoting_style="needed", batch_size=8192)
    row0 = 0
    chunk_index = 0
    truth_path = out / "truth.parquet"
    bar = progress(total=cfg.n_rows, desc="generate", disable=not progress_bar or None)
    with atomic_write(truth_path, "wb") as tf:
        twriter = None
        for path, size in zip(parts, sizes, strict=True):
            with atomic_write(path, "wb") as f:
                writer = None
                done = 0
                while done < size or writer is None:
                    n = min(cfg.chunk_rows, size - done)
                    table, truth = _chunk(world, n, row0, chunk_index)
                    if writer is None:
                        writer = pcsv.CSVWriter(f, table.schema, write_options=wopts)
                    if n:
                        writer.write_table(table)
                    if twriter is None:
                        twriter = pq.ParquetWriter(tf, truth.schema)
                    if n:
                        twriter.write_table(truth)
                    done += n
                    row0 += n
                    chunk_index += 1
                    bar.update(n)
                writer.close()
        if twriter is not None:
            twriter.close()
    bar.close()
    image_path = None
    if cfg.image_dim:
        image_path = out / "item_image_embeddings.parquet"
        emb = world.image.astype(np.float32)
        tab = pa.table(
            {
                "item_id": pa.array(world.item_ids),
                "embedding": pa.array(list(emb), type=pa.list_(pa.float32())),
            }
        )
        with atomic_write(image_path, "wb") as f:
            pq.write_table(tab, f)
    manifest = {
        "generator": "antm2c.synth",
        "config": asdict(cfg),
        "parts": [p.name for p in parts],
        "rows": cfg.n_rows,
        "cutoffs": list(cfg.cutoffs),
        "category_feature": DEEP_FEATURES[CATEGORY_FEATURE],
        "pair_features": [DEEP_FEATURES[i] for i in PAIR_FEATURES],
        "offset": world.offset,
    }
    atomic_write_text(out / "synth_manifest.json", json.dumps(manifest, indent=2) + "\n")
    return GroundTruth(
        config=cfg,
        out_dir=out,
        parts=parts,
        truth_path=truth_path,
        user_ids=world.user_ids,
        item_ids=world.item_ids,
        user_factors=world.U,
        category_factors=world.C,
        item_category=world.item_cat,
        item_scene=world.item_scene,
        cold_users=world.cold_user,
        cold_items=world.cold_item,
        image_path=image_path,
        stats={"offset": world.offset},
    )
