"""Synthetic multi-domain logs where titles carry cross-domain semantics by construction.

The embedded default data set of the package (dossier B9). Ground truth:

* ``topics`` latent interests, each with English topic words used in training-domain titles and
  **synonyms** used only by the zero-shot domain (``war/battle/army`` vs ``military/combat/troops``);
* several training domains, each with its own nouns (``novel``, ``film``, ``puzzle``, ``mug``);
  a title is ``"<brand> <topic word> <adjective> <noun>"`` with a random brand as noise;
* users with Dirichlet topic preferences, active in 2-3 domains in sessions (a domain persists
  with ``p_stay``), buying items of their topics by within-topic popularity;
* a **co-purchase** signal only item IDs can see: every item has a partner of another domain and
  topic that follows it with probability ``p_copurchase``;
* **cold items**: never in any training position, only test targets (``users_per_special``
  users each, so they survive a k-core filter with k <= that number);
* a **zero-shot domain** (``home``) whose titles use the synonyms and other nouns; its items are
  only test targets of users whose histories are in the training domains;
* a share ``p_new_domain`` of users whose test target lies in a domain they never used (the
  paper's "Diff" subset, where per-user mixing matters most).

Output: the canonical ``(interactions, items)`` tables, fed through the real pipeline. Timestamps
span 1995-2020 in unix seconds, so 9- and 10-digit values mix (numeric ordering is exercised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TOPICS", "SynthConfig", "generate", "scaled_config"]

# topic -> (training words, zero-shot synonyms)
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "war": (("war", "battle", "army", "soldier"), ("military", "combat", "troops", "warrior")),
    "cooking": (("chef", "recipe", "bake", "dinner"), ("cuisine", "culinary", "meal", "cook")),
    "space": (
        ("rocket", "planet", "astronaut", "galaxy"),
        ("spacecraft", "cosmic", "orbit", "moon"),
    ),
    "ocean": (("ocean", "sea", "whale", "sailor"), ("marine", "maritime", "dolphin", "shark")),
    "garden": (("garden", "flower", "plant", "seed"), ("botanical", "floral", "blossom", "tulip")),
    "music": (("guitar", "song", "melody", "band"), ("musical", "rhythm", "piano", "concert")),
    "sports": (
        ("football", "soccer", "athlete", "team"),
        ("basketball", "tennis", "stadium", "coach"),
    ),
    "horror": (("ghost", "monster", "zombie", "vampire"), ("haunted", "spooky", "creepy", "demon")),
}
DOMAINS: dict[str, tuple[str, ...]] = {
    "books": ("book", "novel", "story", "guide"),
    "movies": ("dvd", "film", "movie", "documentary"),
    "games": ("game", "puzzle", "toy", "kit"),
    "apparel": ("shirt", "poster", "mug", "sticker"),
    "office": ("notebook", "planner", "pen", "calendar"),
}
ZERO_SHOT_DOMAIN = "home"
ZERO_SHOT_NOUNS = ("lamp", "pillow", "blanket", "rug")
ADJECTIVES = (
    "classic",
    "deluxe",
    "new",
    "mini",
    "ultimate",
    "complete",
    "great",
    "little",
    "modern",
    "vintage",
    "special",
    "original",
)
_CONS, _VOW = "bdfgklmnprstvz", "aeiou"


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and signal strengths of :func:`generate` (defaults: the quick benchmark's data)."""

    n_users: int = 2500
    n_domains: int = 4
    n_topics: int = 8
    items_per_domain_topic: int = 40
    min_events: int = 6
    max_events: int = 14
    topic_alpha: float = 0.1
    p_stay: float = 0.7
    p_copurchase: float = 0.15
    p_new_domain: float = 0.2
    popularity_exponent: float = 0.5
    cold_items_per_domain: int = 12
    zero_shot_items_per_topic: int = 6
    users_per_special: int = 5
    zero_shot: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.n_domains <= len(DOMAINS):
            raise ValueError(f"n_domains must be in 2..{len(DOMAINS)}, got {self.n_domains}")
        if not 2 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"n_topics must be in 2..{len(TOPICS)}, got {self.n_topics}")
        if self.n_users < 10 or self.items_per_domain_topic < 2:
            raise ValueError("n_users must be >= 10 and items_per_domain_topic >= 2")
        if not 3 <= self.min_events <= self.max_events:
            raise ValueError("need 3 <= min_events <= max_events")
        for name in ("p_stay", "p_copurchase", "p_new_domain"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.topic_alpha <= 0:
            raise ValueError("topic_alpha must be > 0")
        special = (
            self.cold_items_per_domain * self.n_domains
            + self.zero_shot * self.zero_shot_items_per_topic * self.n_topics
        ) * self.users_per_special
        if special > self.n_users // 2:
            raise ValueError(
                f"cold and zero-shot items need {special} users, more than half of n_users"
            )


def scaled_config(n_users: int, seed: int = 0, **overrides) -> SynthConfig:
    """A :class:`SynthConfig` whose catalogue, cold and zero-shot sizes grow with ``n_users``
    (about 9 interactions per warm item, 5 users per cold or zero-shot item)."""
    n_users = max(60, int(n_users))
    kw = {
        "n_users": n_users,
        "items_per_domain_topic": max(4, n_users // 45),
        "cold_items_per_domain": max(1, n_users // 150),
        "zero_shot_items_per_topic": max(1, n_users // 300),
        "seed": seed,
    }
    kw.update(overrides)
    return SynthConfig(**kw)


def _brand(rng: np.random.Generator) -> str:
    n = int(rng.integers(2, 4))
    return "".join(rng.choice(list(_CONS)) + rng.choice(list(_VOW)) for _ in range(n))


def generate(config: SynthConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(interactions, items)`` canonical tables (see module docstring)."""
    c = config or SynthConfig()
    rng = np.random.default_rng(c.seed)
    topics = list(TOPICS)[: c.n_topics]
    domains = list(DOMAINS)[: c.n_domains]
    rows_items = []  # (item, domain, title, topic, kind)

    def title(words: tuple[str, ...], nouns: tuple[str, ...]) -> str:
        return f"{_brand(rng)} {rng.choice(words)} {rng.choice(ADJECTIVES)} {rng.choice(nouns)}"

    for d in domains:
        for zi, z in enumerate(topics):
            for k in range(c.items_per_domain_topic):
                rows_items.append((f"{d}-{z}-{k}", d, title(TOPICS[z][0], DOMAINS[d]), zi, "warm"))
        for k in range(c.cold_items_per_domain):
            zi = k % len(topics)
            z = topics[zi]
            rows_items.append((f"{d}-{z}-cold{k}", d, title(TOPICS[z][0], DOMAINS[d]), zi, "cold"))
    if c.zero_shot:
        for zi, z in enumerate(topics):
            for k in range(c.zero_shot_items_per_topic):
                rows_items.append(
                    (
                        f"{ZERO_SHOT_DOMAIN}-{z}-{k}",
                        ZERO_SHOT_DOMAIN,
                        title(TOPICS[z][1], ZERO_SHOT_NOUNS),
                        zi,
                        "zero_shot",
                    )
                )
    items = pd.DataFrame(rows_items, columns=["item", "domain", "title", "topic", "kind"])
    warm = items[items["kind"] == "warm"].reset_index(drop=True)
    # popularity inside each (domain, topic) pool
    pools: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for di, d in enumerate(domains):
        for zi in range(len(topics)):
            idx = np.flatnonzero(
                (warm["domain"] == d).to_numpy() & (warm["topic"] == zi).to_numpy()
            )
            w = 1.0 / np.arange(1, len(idx) + 1) ** c.popularity_exponent
            pools[(di, zi)] = (idx, w / w.sum())
    dom_of = warm["domain"].map({d: i for i, d in enumerate(domains)}).to_numpy()
    top_of = warm["topic"].to_numpy()
    # co-purchase partner: another domain and another topic (invisible in the text)
    partner = np.empty(len(warm), dtype=np.int64)
    for i in range(len(warm)):
        cand = np.flatnonzero((dom_of != dom_of[i]) & (top_of != top_of[i]))
        partner[i] = rng.choice(cand)

    prefs = rng.dirichlet([c.topic_alpha] * len(topics), size=c.n_users)
    user_domains = [
        rng.choice(len(domains), size=int(rng.integers(2, min(3, len(domains)) + 1)), replace=False)
        for _ in range(c.n_users)
    ]
    seqs: list[list[int]] = []  # warm-item positions
    for u in range(c.n_users):
        L = int(rng.integers(c.min_events, c.max_events + 1))
        doms = user_domains[u]
        cur = int(rng.choice(doms))
        s: list[int] = []
        for t in range(L):
            if t and rng.random() < c.p_copurchase:
                s.append(int(partner[s[-1]]))
                continue
            if t and rng.random() >= c.p_stay:
                cur = int(rng.choice(doms))
            z = int(rng.choice(len(topics), p=prefs[u]))
            idx, w = pools[(cur, z)]
            s.append(int(idx[rng.choice(len(idx), p=w)]))
        seqs.append(s)
    final: dict[int, str] = {}  # user -> item id of a special (cold / zero-shot) test target
    free = np.ones(c.n_users, dtype=bool)

    def assign(item_id: str, zi: int, dom: int | None) -> None:
        ok = free.copy()
        if dom is not None:
            ok &= np.array([dom in ud for ud in user_domains])
        cand = np.flatnonzero(ok)
        w = prefs[cand, zi] + 1e-6
        chosen = rng.choice(cand, size=c.users_per_special, replace=False, p=w / w.sum())
        for u in chosen:
            final[int(u)] = item_id
            free[u] = False

    special = items[items["kind"] != "warm"]
    for it, d, _t, zi, kind in special.itertuples(index=False):
        assign(it, int(zi), domains.index(d) if kind == "cold" else None)
    # users whose test target is in a domain they never used (warm item, same interests)
    new_dom = np.flatnonzero(free & (rng.random(c.n_users) < c.p_new_domain))
    for u in new_dom:
        unused = [i for i in range(len(domains)) if i not in user_domains[u]]
        if not unused:
            continue
        z = int(rng.choice(len(topics), p=prefs[u]))
        idx, w = pools[(int(rng.choice(unused)), z)]
        seqs[u][-1] = int(idx[rng.choice(len(idx), p=w)])
    rows = []
    warm_ids = warm["item"].to_numpy()
    for u, s in enumerate(seqs):
        ids = [str(warm_ids[i]) for i in s]
        if u in final:
            ids[-1] = final[u]
        t = int(rng.integers(8.0e8, 1.55e9))  # 1995..2019: 9- and 10-digit epochs
        for it in ids:
            rows.append((f"u{u}", it, t, ""))
            t += int(rng.integers(3600, 90 * 86400))
    inter = pd.DataFrame(rows, columns=["user", "item", "ts", "domain"])
    inter["domain"] = inter["item"].map(dict(zip(items["item"], items["domain"], strict=True)))
    # shuffle rows so ordering comes from the timestamps, not the file order
    inter = inter.sample(frac=1.0, random_state=c.seed).reset_index(drop=True)
    return inter, items[["item", "domain", "title", "topic", "kind"]]
